//! Entitlements: what a user may use, one row per source of payment, with its full history.
//!
//! A provider module (Stripe here, Telegram Stars next) derives the state a source should be in
//! from everything it knows about that source, and hands it to [`set`]. `set` writes it only if it
//! differs from what is stored, and records every change with its cause in `entitlement_changes`.
//! Because the derived state is a function of accumulated facts, not of arrival order, replaying
//! or reordering provider events ends in the same row.

pub mod rule;

pub use rule::{Facts, PaidPeriod, Why, derive};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::billing::plans::Plan;
use crate::bot::{Text, Texts};
use crate::queue::NewJob;
use crate::telegram::SendMessage;

/// Status is where an entitlement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Usable until `expires_at`.
    Active,
    /// Paused by a dispute or an unpaid subscription; may come back.
    Suspended,
    /// Ended early: cancelled, refunded.
    Revoked,
    /// Ended at the end of its paid period (and the grace after it), without a renewal.
    Expired,
}

impl Status {
    pub const fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }

    fn parse(name: &str) -> Status {
        match name {
            "active" => Status::Active,
            "suspended" => Status::Suspended,
            "expired" => Status::Expired,
            _ => Status::Revoked,
        }
    }
}

/// State is what an entitlement should be, as a provider derives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub user_id: i64,
    pub plan: String,
    pub entitlement: String,
    pub status: Status,
    pub expires_at: Option<DateTime<Utc>>,
    pub renews: bool,
}

/// Entitlement is a stored entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlement {
    pub id: i64,
    pub user_id: i64,
    pub source: String,
    pub plan: String,
    pub entitlement: String,
    pub status: Status,
    pub expires_at: Option<DateTime<Utc>>,
    pub renews: bool,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    bool,
    DateTime<Utc>,
);

macro_rules! columns {
    () => {
        "id, user_id, source, plan, entitlement, status, expires_at, renews, updated_at"
    };
}

impl From<Row> for Entitlement {
    fn from(r: Row) -> Entitlement {
        Entitlement {
            id: r.0,
            user_id: r.1,
            source: r.2,
            plan: r.3,
            entitlement: r.4,
            status: Status::parse(&r.5),
            expires_at: r.6,
            renews: r.7,
            updated_at: r.8,
        }
    }
}

impl Entitlement {
    fn state(&self) -> State {
        State {
            user_id: self.user_id,
            plan: self.plan.clone(),
            entitlement: self.entitlement.clone(),
            status: self.status,
            expires_at: self.expires_at,
            renews: self.renews,
        }
    }
}

/// Changed is a change [`set`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub entitlement: Entitlement,
    /// What it was before; `None` when the entitlement was created.
    pub before: Option<State>,
    /// The id of the `entitlement_changes` row recording it.
    pub change_id: i64,
}

/// Makes the entitlement of `source` be `state`, recording the change and its `cause`. Returns
/// `None` when it already was. Call it inside the effect transaction of the job that learnt the
/// state, which serialises writers of one source through the row lock.
pub async fn set(
    conn: &mut PgConnection,
    source: &str,
    state: &State,
    cause: &str,
) -> Result<Option<Changed>, sqlx::Error> {
    let current: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM entitlements WHERE source = $1 FOR NO KEY UPDATE"
    ))
    .bind(source)
    .fetch_optional(&mut *conn)
    .await?;
    let before = current.map(|row| Entitlement::from(row).state());
    let state = &rule::after_expiry(before.as_ref(), state.clone(), chrono::Utc::now());
    if before.as_ref() == Some(state) {
        return Ok(None);
    }
    let row: Row = sqlx::query_as(concat!(
        "INSERT INTO entitlements (user_id, source, plan, entitlement, status, expires_at, renews)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (source) DO UPDATE SET
             user_id = excluded.user_id, plan = excluded.plan, entitlement = excluded.entitlement,
             status = excluded.status, expires_at = excluded.expires_at, renews = excluded.renews,
             updated_at = now()
         RETURNING ",
        columns!()
    ))
    .bind(state.user_id)
    .bind(source)
    .bind(&state.plan)
    .bind(&state.entitlement)
    .bind(state.status.name())
    .bind(state.expires_at)
    .bind(state.renews)
    .fetch_one(&mut *conn)
    .await?;
    let entitlement = Entitlement::from(row);
    let change_id: i64 = sqlx::query_scalar(
        "INSERT INTO entitlement_changes (entitlement_id, status, expires_at, renews, cause)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(entitlement.id)
    .bind(state.status.name())
    .bind(state.expires_at)
    .bind(state.renews)
    .bind(cause)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(Changed {
        entitlement,
        before,
        change_id,
    }))
}

/// The entitlements of `user_id` that are usable now.
pub async fn active_for(conn: &mut PgConnection, user_id: i64) -> Result<Vec<Entitlement>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM entitlements
         WHERE user_id = $1 AND status = 'active' AND expires_at > now()
         ORDER BY expires_at DESC, id"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Entitlement::from).collect())
}

/// The purchase guard: the entitlements of `user_id` to `plan` that a provider will charge for
/// again (active subscriptions not cancelled), latest end first. While there is one the plan is
/// not sold to the user again, by either provider: a second subscription would charge twice for
/// the same access. A cancelled one that runs out, or a one-off Stars period (those queue up),
/// does not count.
///
/// A Stripe subscription counts for as long as it is active and renews, past its paid end too:
/// between the end of a period and the renewal invoice's payment, and while Stripe retries a
/// failed renewal (`past_due`), it is about to charge again; its end reaches us as
/// `customer.subscription.deleted` (revoked) or `unpaid` (suspended). Telegram says nothing of a
/// Stars subscription that stops renewing, so one counts only until its paid end.
pub async fn renewing(conn: &mut PgConnection, user_id: i64, plan: &str) -> Result<Vec<Entitlement>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM entitlements
         WHERE user_id = $1 AND plan = $2 AND status = 'active' AND renews
           AND (source LIKE 'stripe:%' OR expires_at > now())
         ORDER BY expires_at DESC, id"
    ))
    .bind(user_id)
    .bind(plan)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Entitlement::from).collect())
}

/// Provider is who charges for an entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Stripe,
    TelegramStars,
}

impl Provider {
    /// The provider's name, as a user reads it.
    pub const fn name(self) -> &'static str {
        match self {
            Provider::Stripe => "Stripe",
            Provider::TelegramStars => "Telegram Stars",
        }
    }
}

impl Entitlement {
    /// Who charges for this entitlement, read from its source's name (`stripe:<subscription>` or
    /// `telegram_stars:<charge>`).
    pub fn provider(&self) -> Provider {
        if self.source.starts_with("stripe:") {
            Provider::Stripe
        } else {
            Provider::TelegramStars
        }
    }

    /// Why the plan `plan_name` of this renewing entitlement is not sold again, for the user.
    pub fn already_subscribed(&self, plan_name: &str) -> String {
        let on = match self.expires_at {
            Some(at) if at > chrono::Utc::now() => format!(", renewing on {}", at.format("%Y-%m-%d")),
            // A Stripe renewal being charged, or retried after a failed payment.
            _ => ", renewal in progress".to_string(),
        };
        let then = match self.provider() {
            // Cancelling at period end reaches us as a webhook, and the plan is for sale again.
            Provider::Stripe => "Cancel it in the billing portal first to pay another way.",
            // Telegram does not tell a bot of a cancelled Stars subscription.
            Provider::TelegramStars => "You can pay another way once its current month ends.",
        };
        format!(
            "You already subscribe to {plan_name} through {}{on}. {then}",
            self.provider().name()
        )
    }
}

/// The entitlement of `source`.
pub async fn of_source(conn: &mut PgConnection, source: &str) -> Result<Option<Entitlement>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(concat!("SELECT ", columns!(), " FROM entitlements WHERE source = $1"))
        .bind(source)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Entitlement::from))
}

/// ChangeRecord is one row of an entitlement's history.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangeRecord {
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub renews: bool,
    pub cause: String,
}

/// The history of the entitlement of `source`, oldest first.
pub async fn history(conn: &mut PgConnection, source: &str) -> Result<Vec<ChangeRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.status, c.expires_at, c.renews, c.cause
         FROM entitlement_changes c JOIN entitlements e ON e.id = c.entitlement_id
         WHERE e.source = $1 ORDER BY c.id",
    )
    .bind(source)
    .fetch_all(conn)
    .await
}

/// The message telling the user about `change` to an entitlement of `plan`, as a `notifications`
/// job keyed by the change, so that each change is told once. `None` when the change is not worth
/// a message (nothing a user would notice changed).
///
/// A renewal is an access extended by at least half of the plan's period: a paid period of its
/// own. A smaller move of the end is the provider correcting a period already told, such as a
/// Stripe invoice's exact period end (a calendar month) replacing the provisional one
/// (`period_days`) its checkout gave, and is not told again.
pub fn notification(change: &Changed, plan: &Plan, why: Option<Why>, texts: &Texts) -> Option<NewJob> {
    let e = &change.entitlement;
    let until = e
        .expires_at
        .map(|at| at.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let before = change.before.as_ref();
    let told = match (before.map(|b| b.status), e.status) {
        (None | Some(Status::Revoked | Status::Expired), Status::Active) => Text::Activated,
        (Some(Status::Suspended), Status::Active) => Text::Restored,
        (Some(Status::Active), Status::Active) => {
            let b = before?;
            let renewed = match (b.expires_at, e.expires_at) {
                (Some(old), Some(new)) => new - old >= plan.period() / 2,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if renewed {
                Text::Renewed
            } else if b.renews && !e.renews {
                Text::WillNotRenew
            } else if !b.renews && e.renews {
                Text::WillRenew
            } else {
                return None;
            }
        }
        (_, Status::Suspended) if before.map(|b| b.status) != Some(Status::Suspended) => Text::Suspended,
        (Some(Status::Active | Status::Suspended), Status::Revoked) => Text::Revoked,
        _ => return None,
    };
    let why = why.map_or(String::new(), |why| texts.get(why_text(why)));
    let text = texts.render(told, &[("plan", &plan.name), ("until", &until), ("why", &why)]);
    let message = SendMessage {
        chat_id: e.user_id,
        text,
        parse_mode: None,
        buttons: Vec::new(),
        invoice: None,
        broadcast_id: None,
    };
    Some(NewJob::new(
        &message,
        format!("entitlement_change:{}", change.change_id),
    ))
}

/// The text that tells `why`.
fn why_text(why: Why) -> Text {
    match why {
        Why::Cancelled => Text::WhyCancelled,
        Why::Refunded => Text::WhyRefunded,
        Why::Disputed => Text::WhyDisputed,
        Why::Unpaid => Text::WhyUnpaid,
        Why::Paused => Text::WhyPaused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(before: Option<Status>, now: Status) -> Changed {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let state = |status| State {
            user_id: 7,
            plan: "pro".into(),
            entitlement: "pro".into(),
            status,
            expires_at: Some(at),
            renews: false,
        };
        Changed {
            entitlement: Entitlement {
                id: 1,
                user_id: 7,
                source: "telegram_stars:x".into(),
                plan: "pro".into(),
                entitlement: "pro".into(),
                status: now,
                expires_at: Some(at),
                renews: false,
                updated_at: at,
            },
            before: before.map(state),
            change_id: 9,
        }
    }

    fn told(change: &Changed, why: Option<Why>, texts: &Texts) -> String {
        let plans = crate::billing::Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stars_price": 5}}"#,
        )
        .unwrap();
        let job = notification(change, plans.get("pro").unwrap(), why, texts).expect("a message");
        job.payload["text"].as_str().unwrap().to_string()
    }

    #[test]
    fn changes_are_told_in_the_configured_texts_with_their_reason() {
        let defaults = Texts::default();
        assert_eq!(
            told(&changed(None, Status::Active), None, &defaults),
            "✅ Your Pro access is active until 2027-01-15. Thank you!"
        );
        assert_eq!(
            told(
                &changed(Some(Status::Active), Status::Revoked),
                Some(Why::Refunded),
                &defaults
            ),
            "Your Pro access has ended: the payment was refunded."
        );
        let texts = Texts::parse(r#"{"revoked": "{plan} ist beendet ({why}).", "why_refunded": "erstattet"}"#).unwrap();
        assert_eq!(
            told(
                &changed(Some(Status::Active), Status::Revoked),
                Some(Why::Refunded),
                &texts
            ),
            "Pro ist beendet (erstattet)."
        );
        assert_eq!(
            told(&changed(Some(Status::Suspended), Status::Active), None, &texts),
            "✅ Your Pro access is restored until 2027-01-15."
        );
    }
}
