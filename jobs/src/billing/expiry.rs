//! Time: entitlements end on time, and users are reminded before one that will not renew.
//!
//! Every worker process runs both passes ([`enqueue_due`], [`remind_due`]) on a timer; each is
//! safe to run in many processes at once. The expiry pass only queues an `entitlements` job per
//! entitlement due, keyed by its source and paid end, so two passes queue one job, and a job that
//! ran is not queued again (its ledger row). The job ([`expire`]) records the end through
//! [`entitlements::set`], the path of every other change: the history row, the message, and the
//! rule that keeps it ended until a new period is paid ([`rule::after_expiry`]). The reminder
//! pass writes the reminder it sends (`entitlement_reminders`) with its `notifications` job in one
//! statement and transaction, so each goes out once whoever runs the pass.
//!
//! [`rule::after_expiry`]: super::entitlements::rule::after_expiry

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::entitlements::{self, Entitlement, Provider, State, Status};
use super::plans::Plans;
use crate::bot::{Bot, Choice, Text};
use crate::metrics::{self, counters};
use crate::queue::{NewJob, enqueue};
use crate::telegram::{Button, SendMessage};

/// How long an entitlement stays active after its paid end when no renewal has come, unless
/// configured (`EXPIRY_GRACE_HOURS`): Stripe charges a renewal about an hour after the period
/// ends, and retries a failed one for days.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(6 * 3600);
/// When reminders go out before an entitlement that will not renew ends, unless configured
/// (`REMINDER_HOURS`): three days and one day before.
pub const DEFAULT_REMINDER_HOURS: [u32; 2] = [72, 24];
/// The most entitlements one pass takes; the rest wait for the next pass.
const PASS_LIMIT: i64 = 1000;

/// ExpireEntitlement is the `entitlements` job that ends the entitlement of `source` whose paid
/// period ended at `expires_at`, if it has not been renewed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireEntitlement {
    pub source: String,
    pub expires_at: DateTime<Utc>,
}

/// Queues an [`ExpireEntitlement`] job for every active entitlement whose paid end is more than
/// `grace` ago by the database's clock; returns how many were new. A Stripe subscription that
/// renews is left to Stripe: past its end it is being charged or retried (`past_due`), and
/// Stripe's own events end it (`customer.subscription.deleted`, `unpaid`); ending it here would
/// let the purchase guard sell the plan again while Stripe may still collect.
///
/// A job is keyed by the source, its end and when the row last changed, so that every pass and
/// process queues the same one, and an entitlement recorded active again with the same end (a
/// refund of a later period) gets a job of its own.
pub async fn enqueue_due(pool: &PgPool, grace: Duration) -> Result<u64, sqlx::Error> {
    let due: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT source, expires_at, updated_at FROM entitlements
         WHERE status = 'active' AND expires_at < now() - make_interval(secs => $1)
           AND NOT (renews AND source LIKE 'stripe:%')
         ORDER BY expires_at, id LIMIT $2",
    )
    .bind(grace.as_secs_f64())
    .bind(PASS_LIMIT)
    .fetch_all(pool)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let mut new = 0;
    for (source, expires_at, updated_at) in due {
        let key = format!(
            "expire:{source}:{}:{}",
            expires_at.timestamp_micros(),
            updated_at.timestamp_micros()
        );
        let job = super::EntitlementsJob::Expire(ExpireEntitlement { source, expires_at });
        if let crate::queue::Enqueued::New(_) = enqueue(&mut tx, &NewJob::new(&job, key)).await? {
            new += 1;
        }
    }
    tx.commit().await?;
    Ok(new)
}

/// Ends the entitlement `job` names, in the job's effect transaction, if it is still active with
/// the same paid end (the pass found it past its grace; a renewal recorded since moved the end):
/// recorded with `cause`, counted, and told to the user with a button to renew. Returns whether
/// it ended it.
pub async fn expire(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    job: &ExpireEntitlement,
    cause: &str,
) -> Result<bool, sqlx::Error> {
    // Locked before it is read, so that a renewal recorded meanwhile is seen here, and one
    // recorded after waits for this and then re-derives past the end recorded here.
    sqlx::query("SELECT 1 FROM entitlements WHERE source = $1 FOR NO KEY UPDATE")
        .bind(&job.source)
        .execute(&mut *conn)
        .await?;
    let Some(current) = entitlements::of_source(&mut *conn, &job.source).await? else {
        return Ok(false);
    };
    if current.status != Status::Active || current.expires_at != Some(job.expires_at) {
        return Ok(false);
    }
    let ended = State {
        user_id: current.user_id,
        plan: current.plan.clone(),
        entitlement: current.entitlement.clone(),
        status: Status::Expired,
        expires_at: current.expires_at,
        renews: false,
    };
    let Some(change) = entitlements::set(&mut *conn, &job.source, &ended, cause).await? else {
        return Ok(false);
    };
    if change.entitlement.status != Status::Expired {
        return Ok(false);
    }
    counters::add(&mut *conn, metrics::ENTITLEMENT_EXPIRIES, &plan_label(&current.plan)).await?;
    crate::access::follow(&mut *conn, bot.plans, &change).await?;
    let plan_name = plan_name(bot.plans, &current.plan);
    let message = with_renew_button(bot, &current, bot.texts.render(Text::Expired, &[("plan", plan_name)]));
    enqueue(
        conn,
        &NewJob::new(&message, format!("entitlement_change:{}", change.change_id)),
    )
    .await?;
    Ok(true)
}

/// Queues the reminders due now: for each offset of `hours`, every active entitlement that will
/// not renew and ends within that offset but not within the next smaller one, whose end was set
/// before the offset began (a one-day pass is not reminded the moment it is bought), and which
/// was not reminded at that offset for that end. Returns how many were queued.
pub async fn remind_due(pool: &PgPool, bot: Bot<'_>, hours: &[u32], now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut offsets = hours.to_vec();
    offsets.sort_unstable();
    offsets.dedup();
    let mut queued = 0;
    let mut tx = pool.begin().await?;
    let mut nearer = 0;
    for offset in offsets {
        type Due = (i64, i64, String, DateTime<Utc>);
        let due: Vec<Due> = sqlx::query_as(
            "WITH due AS (
                 SELECT e.id, e.user_id, e.plan, e.expires_at FROM entitlements e
                 WHERE e.status = 'active' AND NOT e.renews
                   AND e.expires_at > $4 + make_interval(hours => $1)
                   AND e.expires_at <= $4 + make_interval(hours => $2)
                   AND e.expires_at - e.updated_at > make_interval(hours => $2)
                   AND NOT EXISTS (SELECT 1 FROM entitlement_reminders r
                                   WHERE r.entitlement_id = e.id AND r.expires_at = e.expires_at AND r.hours = $2)
                 ORDER BY e.expires_at, e.id LIMIT $3),
             reminded AS (
                 INSERT INTO entitlement_reminders (entitlement_id, expires_at, hours)
                 SELECT id, expires_at, $2 FROM due
                 ON CONFLICT DO NOTHING RETURNING entitlement_id)
             SELECT due.id, due.user_id, due.plan, due.expires_at
             FROM due JOIN reminded ON reminded.entitlement_id = due.id",
        )
        .bind(nearer as i32)
        .bind(offset as i32)
        .bind(PASS_LIMIT)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, user_id, plan, expires_at) in due {
            let source: String = sqlx::query_scalar("SELECT source FROM entitlements WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let held = Entitlement {
                id,
                user_id,
                source,
                plan,
                entitlement: String::new(),
                status: Status::Active,
                expires_at: Some(expires_at),
                renews: false,
                updated_at: expires_at,
            };
            let until = expires_at.format("%Y-%m-%d").to_string();
            let text = bot.texts.render(
                Text::Reminder,
                &[("plan", plan_name(bot.plans, &held.plan)), ("until", &until)],
            );
            let message = with_renew_button(bot, &held, text);
            let key = format!("reminder:{id}:{}:{offset}", expires_at.timestamp_micros());
            enqueue(&mut tx, &NewJob::new(&message, key)).await?;
            counters::add(&mut tx, metrics::ENTITLEMENT_REMINDERS, &plan_label(&held.plan)).await?;
            queued += 1;
        }
        nearer = offset;
    }
    tx.commit().await?;
    Ok(queued)
}

/// `text` to the entitlement's user, with a button to keep the access: for a Stripe
/// subscription the Billing Portal (where a cancelled one is renewed without a second
/// subscription), else the plan, when it is still sold.
fn with_renew_button(bot: Bot<'_>, held: &Entitlement, text: String) -> SendMessage {
    let plan = bot.plans.get(&held.plan);
    let sold = plan.is_some_and(|p| p.stars_price.is_some() || p.stripe_price.is_some());
    let buttons = match plan {
        _ if held.provider() == Provider::Stripe => vec![vec![Button::callback(
            bot.texts.get(Text::PortalButton),
            Choice::Billing.data(),
        )]],
        Some(plan) if sold => vec![vec![Button::callback(
            bot.texts.render(Text::RenewButton, &[("plan", &plan.name)]),
            Choice::Plan(&held.plan).data(),
        )]],
        _ => Vec::new(),
    };
    SendMessage {
        chat_id: held.user_id,
        text,
        parse_mode: None,
        buttons,
        invoice: None,
        broadcast_id: None,
    }
}

fn plan_name<'a>(plans: &'a Plans, code: &'a str) -> &'a str {
    plans.get(code).map_or(code, |p| p.name.as_str())
}

fn plan_label(code: &str) -> String {
    format!("plan=\"{}\"", code.escape_default())
}
