//! Telegram Stars payments as entitlements: the pre-checkout decision, the payment and refund
//! facts the webhook records, and the entitlement derived from them.
//!
//! As with Stripe, no update *sets* an entitlement. A payment adds a paid period to its source:
//! its own, `telegram_stars:<charge id>`; for a renewal of a Stars subscription the source its
//! first payment started; for a one-off payment the source of the user's first one-off payment
//! of the plan, whose periods queue up ([`paid_periods`]). A refund marks a payment refunded,
//! once. The entitlement is then derived from the periods by the same rule as a Stripe
//! subscription's ([`super::stripe::derive`]), so the ops refund and the `refunded_payment`
//! update that follows it agree and only the first changes anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::EntitlementsJob;
use super::counters;
use super::entitlements;
use super::plans::Plans;
use super::stripe::{Facts, PaidPeriod, derive};
use crate::queue::{NewJob, enqueue};
use crate::telegram::client::StarsInvoice;
use crate::telegram::updates::{PreCheckoutQuery, RefundedPayment, SuccessfulPayment};
use crate::telegram::users;
use crate::tracking::AttributePayment;

/// Telegram Stars' currency code.
pub const CURRENCY: &str = "XTR";
/// The one period Telegram offers for Stars subscriptions.
pub const SUBSCRIPTION_PERIOD_DAYS: u32 = 30;

/// The source name of the entitlement a Stars payment starts.
pub fn source(charge_id: &str) -> String {
    format!("telegram_stars:{charge_id}")
}

/// The Stars invoice for `plan_code`, or `None` when the plan is not sold for Stars. Plans of
/// exactly 30 days are sold as Stars subscriptions (Telegram renews them monthly); others as
/// one-off payments for one period.
pub fn invoice(plans: &Plans, plan_code: &str) -> Option<StarsInvoice> {
    let plan = plans.get(plan_code)?;
    let amount_stars = plan.stars_price?;
    Some(StarsInvoice {
        title: plan.name.clone(),
        description: format!("{} access for {} days", plan.name, plan.period_days),
        payload: plan_code.to_string(),
        amount_stars,
        subscription_period: (plan.period_days == SUBSCRIPTION_PERIOD_DAYS)
            .then(|| std::time::Duration::from_secs(u64::from(SUBSCRIPTION_PERIOD_DAYS) * 86_400)),
    })
}

/// Answer is what a pre-checkout query was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    /// Shown to the user by Telegram when `ok` is false.
    pub error_message: Option<String>,
}

/// Whether the payment a pre-checkout query asks about may go ahead: our invoice for a plan on
/// sale, in Stars, at the plan's price, from a user who is not banned. The error is shown to the
/// user.
pub fn check_pre_checkout(plans: &Plans, query: &PreCheckoutQuery, banned: bool) -> Result<(), String> {
    if query.currency != CURRENCY {
        return Err("Only Telegram Stars are accepted.".into());
    }
    let Some(price) = plans.get(&query.invoice_payload).and_then(|p| p.stars_price) else {
        return Err("This plan is no longer for sale.".into());
    };
    if query.total_amount != i64::from(price) {
        return Err("The price of this plan has changed. Please open the invoice again.".into());
    }
    if banned {
        return Err("This account cannot make purchases.".into());
    }
    Ok(())
}

/// Decides a pre-checkout query and records the answer; a query answered before gets the same
/// answer again (Telegram redelivers an update whose response it did not get).
pub async fn answer_pre_checkout(
    conn: &mut PgConnection,
    plans: &Plans,
    query: &PreCheckoutQuery,
) -> Result<Answer, sqlx::Error> {
    let earlier: Option<(bool, Option<String>)> =
        sqlx::query_as("SELECT ok, error_message FROM telegram_pre_checkout_queries WHERE id = $1")
            .bind(&query.id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((ok, error_message)) = earlier {
        return Ok(Answer { ok, error_message });
    }
    let banned = users::is_banned(conn, query.from.id).await?;
    let answer = match check_pre_checkout(plans, query, banned) {
        Ok(()) => Answer {
            ok: true,
            error_message: None,
        },
        Err(message) => Answer {
            ok: false,
            error_message: Some(message),
        },
    };
    // A concurrent delivery of the same query (in another update) may have answered first: the
    // stored answer is the one given, and the one counted.
    let (ok, error_message, inserted): (bool, Option<String>, bool) = sqlx::query_as(
        "INSERT INTO telegram_pre_checkout_queries
             (id, user_id, invoice_payload, currency, total_amount, ok, error_message)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET id = excluded.id
         RETURNING ok, error_message, xmax = 0",
    )
    .bind(&query.id)
    .bind(query.from.id)
    .bind(&query.invoice_payload)
    .bind(&query.currency)
    .bind(query.total_amount)
    .bind(answer.ok)
    .bind(&answer.error_message)
    .fetch_one(&mut *conn)
    .await?;
    let answer = Answer { ok, error_message };
    if inserted && !answer.ok {
        counters::add(conn, "telegram_payments_total", "result=\"refused\"").await?;
    }
    Ok(answer)
}

/// ApplyStarsPayment is the `entitlements` job that grants or extends what a Stars payment buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStarsPayment {
    pub charge_id: String,
}

/// ApplyStarsRefund is the `entitlements` job that records a refund Telegram told us of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStarsRefund {
    pub charge_id: String,
    pub refunded_at: DateTime<Utc>,
}

/// Records a Stars payment and enqueues its grant, unless its charge id is known: returns whether
/// it was new. Call it in the webhook's transaction.
pub async fn record_payment(
    conn: &mut PgConnection,
    user_id: i64,
    paid_at: DateTime<Utc>,
    payment: &SuccessfulPayment,
) -> Result<bool, sqlx::Error> {
    let renewal = payment.is_recurring && !payment.is_first_recurring;
    // A renewal counts toward the subscription its latest first payment (same user, same plan)
    // started; a one-off payment toward the source of the user's first one-off payment for the
    // plan, so that buying it again extends it; a first subscription payment starts its own.
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO telegram_payments (charge_id, user_id, invoice_payload, currency, total_amount,
                                        is_recurring, is_first_recurring, subscription_expiration_date,
                                        paid_at, source, refunded_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,
                COALESCE((SELECT s.source FROM telegram_payments s
                          WHERE $10 AND s.is_first_recurring AND s.user_id = $2
                            AND s.invoice_payload = $3 AND s.paid_at <= $9
                          ORDER BY s.paid_at DESC LIMIT 1),
                         (SELECT s.source FROM telegram_payments s
                          WHERE NOT $6 AND NOT s.is_recurring AND s.user_id = $2
                            AND s.invoice_payload = $3
                          ORDER BY s.paid_at LIMIT 1),
                         'telegram_stars:' || $1),
                (SELECT n.refunded_at FROM telegram_refund_notices n WHERE n.charge_id = $1)
         ON CONFLICT (charge_id) DO NOTHING
         RETURNING charge_id",
    )
    .bind(&payment.telegram_payment_charge_id)
    .bind(user_id)
    .bind(&payment.invoice_payload)
    .bind(&payment.currency)
    .bind(payment.total_amount)
    .bind(payment.is_recurring)
    .bind(payment.is_first_recurring)
    .bind(
        payment
            .subscription_expiration_date
            .and_then(|t| DateTime::from_timestamp(t, 0)),
    )
    .bind(paid_at)
    .bind(renewal)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        return Ok(false);
    }
    let key = format!("telegram_payment:{}", payment.telegram_payment_charge_id);
    let job = EntitlementsJob::StarsPayment(ApplyStarsPayment {
        charge_id: payment.telegram_payment_charge_id.clone(),
    });
    enqueue(conn, &NewJob::new(&job, key)).await?;
    Ok(true)
}

/// Records a refund Telegram told us of and enqueues its application: once per charge, however
/// often the update comes. Returns whether a job was written. The notice also marks the payment
/// refunded if its own update is recorded only later.
pub async fn record_refund_notice(
    conn: &mut PgConnection,
    refunded_at: DateTime<Utc>,
    refund: &RefundedPayment,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO telegram_refund_notices (charge_id, refunded_at) VALUES ($1, $2)
         ON CONFLICT (charge_id) DO NOTHING",
    )
    .bind(&refund.telegram_payment_charge_id)
    .bind(refunded_at)
    .execute(&mut *conn)
    .await?;
    let key = format!("telegram_refund:{}", refund.telegram_payment_charge_id);
    let job = EntitlementsJob::StarsRefund(ApplyStarsRefund {
        charge_id: refund.telegram_payment_charge_id.clone(),
        refunded_at,
    });
    let enqueued = enqueue(conn, &NewJob::new(&job, key)).await?;
    Ok(matches!(enqueued, crate::queue::Enqueued::New(_)))
}

/// What applying a payment or a refund did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The entitlement changed (and its message was enqueued).
    Changed,
    /// The entitlement already was what the payments call for.
    Unchanged,
    /// No such payment is recorded.
    UnknownPayment,
    /// The payment's plan is no longer in the catalogue, so what it buys cannot be derived;
    /// nothing was changed. The job should go to ops (dead) rather than complete.
    PlanNotConfigured,
}

/// Grants or extends what the payment `charge_id` buys, and counts it. Call it in the effect
/// transaction of the job, whose ledger makes both happen once.
pub async fn apply_payment(
    conn: &mut PgConnection,
    plans: &Plans,
    charge_id: &str,
    cause: &str,
) -> Result<Applied, sqlx::Error> {
    let row: Option<(String, String, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT source, currency, total_amount, user_id, paid_at FROM telegram_payments WHERE charge_id = $1",
    )
    .bind(charge_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((source, currency, amount, user_id, paid_at)) = row else {
        return Ok(Applied::UnknownPayment);
    };
    let attribution = AttributePayment {
        payment: format!("telegram_stars:{charge_id}"),
        user_id,
        amount,
        currency: currency.clone(),
        paid_at,
    };
    enqueue(conn, &attribution.job()).await?;
    counters::add(conn, "telegram_payments_total", "result=\"paid\"").await?;
    counters::add_value(
        conn,
        "telegram_payment_value_total",
        &format!("currency=\"{}\"", currency.escape_default()),
        amount as f64,
    )
    .await?;
    rederive(conn, plans, &source, cause).await
}

/// The user who paid `charge_id`, when the payment is recorded.
pub async fn payer(conn: &mut PgConnection, charge_id: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM telegram_payments WHERE charge_id = $1")
        .bind(charge_id)
        .fetch_optional(conn)
        .await
}

/// Whether the payment `charge_id` is refunded; `None` when no such payment is recorded.
pub async fn refunded(conn: &mut PgConnection, charge_id: &str) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT refunded_at IS NOT NULL FROM telegram_payments WHERE charge_id = $1")
        .bind(charge_id)
        .fetch_optional(conn)
        .await
}

/// Marks the payment `charge_id` refunded (once: the first time counts) and revokes what it
/// bought if it was the latest payment of its source. Call it in the effect transaction of the
/// job that learnt of the refund: the ops refund, or the `refunded_payment` update.
pub async fn mark_refunded(
    conn: &mut PgConnection,
    plans: &Plans,
    charge_id: &str,
    refunded_at: DateTime<Utc>,
    cause: &str,
) -> Result<Applied, sqlx::Error> {
    let newly: Option<String> = sqlx::query_scalar(
        "UPDATE telegram_payments SET refunded_at = $2
         WHERE charge_id = $1 AND refunded_at IS NULL RETURNING source",
    )
    .bind(charge_id)
    .bind(refunded_at)
    .fetch_optional(&mut *conn)
    .await?;
    let source = match newly {
        Some(source) => {
            counters::add(conn, "telegram_payments_total", "result=\"refunded\"").await?;
            source
        }
        None => {
            let known: Option<String> = sqlx::query_scalar("SELECT source FROM telegram_payments WHERE charge_id = $1")
                .bind(charge_id)
                .fetch_optional(&mut *conn)
                .await?;
            match known {
                Some(source) => source,
                None => return Ok(Applied::UnknownPayment),
            }
        }
    };
    rederive(conn, plans, &source, cause).await
}

/// Payment is one Stars payment of a source, as [`paid_periods`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub paid_at: DateTime<Utc>,
    pub subscription_expiration_date: Option<DateTime<Utc>>,
    pub recurring: bool,
    pub refunded: bool,
}

/// The periods the payments of one source paid for. A subscription's payments each end where
/// Telegram says. One-off payments (the same user buying the same plan again) queue up: each
/// unrefunded one starts when the previous one ends, or when it was paid if that is later, so
/// buying a week twice gives two weeks. A refunded one-off payment pays for nothing; while none
/// is left unrefunded, the refunded ones are returned, so that the entitlement reads refunded.
pub fn paid_periods(payments: &[Payment], period: chrono::Duration) -> Vec<PaidPeriod> {
    let mut subscription: Vec<PaidPeriod> = Vec::new();
    let mut one_off: Vec<&Payment> = Vec::new();
    for p in payments {
        match (p.recurring, p.subscription_expiration_date) {
            (true, end) => subscription.push(PaidPeriod {
                end: end.unwrap_or(p.paid_at + period),
                refunded: p.refunded,
                disputed: false,
            }),
            (false, _) => one_off.push(p),
        }
    }
    one_off.sort_by_key(|p| p.paid_at);
    let mut queued: Vec<PaidPeriod> = Vec::new();
    let mut cursor: Option<DateTime<Utc>> = None;
    for p in one_off.iter().filter(|p| !p.refunded) {
        let start = cursor.map_or(p.paid_at, |c| c.max(p.paid_at));
        let end = start + period;
        cursor = Some(end);
        queued.push(PaidPeriod {
            end,
            refunded: false,
            disputed: false,
        });
    }
    if queued.is_empty() {
        queued = one_off
            .iter()
            .map(|p| PaidPeriod {
                end: p.paid_at + period,
                refunded: true,
                disputed: false,
            })
            .collect();
    }
    subscription.extend(queued);
    subscription
}

/// Derives the entitlement of `source` from all its payments and records it if it changed, with
/// its message. Serialised per source, so a refund and a renewal of one subscription see each
/// other.
async fn rederive(conn: &mut PgConnection, plans: &Plans, source: &str, cause: &str) -> Result<Applied, sqlx::Error> {
    // The two-key form (class 0x53544152, "STAR" in ASCII), whose keyspace no single-key lock
    // (Stripe's, sqlx's migrations) shares.
    // Reads after it see every earlier holder's commit because statements read committed data
    // as of their start (READ COMMITTED, PostgreSQL's default, which the pool keeps).
    sqlx::query("SELECT pg_advisory_xact_lock(1398030674, hashtext($1))")
        .bind(source)
        .execute(&mut *conn)
        .await?;
    type PaymentRow = (i64, String, DateTime<Utc>, Option<DateTime<Utc>>, bool, bool);
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT user_id, invoice_payload, paid_at, subscription_expiration_date, is_recurring,
                refunded_at IS NOT NULL
         FROM telegram_payments WHERE source = $1",
    )
    .bind(source)
    .fetch_all(&mut *conn)
    .await?;
    let Some((user_id, plan_code, ..)) = payments.first().cloned() else {
        return Ok(Applied::UnknownPayment);
    };
    let Some(plan) = plans.get(&plan_code) else {
        tracing::warn!(
            source,
            plan = plan_code,
            "a Stars payment for a plan no longer configured"
        );
        return Ok(Applied::PlanNotConfigured);
    };
    let payments: Vec<Payment> = payments
        .into_iter()
        .map(|(_, _, paid_at, expires, recurring, refunded)| Payment {
            paid_at,
            subscription_expiration_date: expires,
            recurring,
            refunded,
        })
        .collect();
    // A Stars subscription renews until the user cancels, which Telegram does not tell the bot;
    // a one-off payment does not renew.
    let renews = payments
        .iter()
        .filter(|p| !p.refunded)
        .max_by_key(|p| p.paid_at)
        .is_some_and(|p| p.recurring);
    let facts = Facts {
        user_id: Some(user_id),
        plan: Some(plan_code.clone()),
        status: None,
        cancel_at_period_end: !renews,
        ended_at: None,
    };
    let periods = paid_periods(&payments, plan.period());
    let Some((state, why)) = derive(&facts, &periods, plans) else {
        return Ok(Applied::Unchanged);
    };
    let Some(change) = entitlements::set(conn, source, &state, cause).await? else {
        return Ok(Applied::Unchanged);
    };
    if let Some(job) = entitlements::notification(&change, &plan.name, why) {
        enqueue(conn, &job).await?;
    }
    Ok(Applied::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telegram::updates::User;

    fn day(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000 + n * 86_400, 0).unwrap()
    }

    fn one_off(paid: i64, refunded: bool) -> Payment {
        Payment {
            paid_at: day(paid),
            subscription_expiration_date: None,
            recurring: false,
            refunded,
        }
    }

    fn ends(periods: &[PaidPeriod]) -> Vec<(DateTime<Utc>, bool)> {
        periods.iter().map(|p| (p.end, p.refunded)).collect()
    }

    #[test]
    fn one_off_purchases_queue_up_and_a_refund_takes_back_only_its_own_period() {
        let week = chrono::Duration::days(7);
        // Bought on day 0 and again on day 1: two weeks, to day 14.
        let both = paid_periods(&[one_off(1, false), one_off(0, false)], week);
        assert_eq!(ends(&both), vec![(day(7), false), (day(14), false)]);
        // The second refunded: back to day 7; the first refunded instead: the second runs 1..8.
        assert_eq!(
            ends(&paid_periods(&[one_off(0, false), one_off(1, true)], week)),
            vec![(day(7), false)]
        );
        assert_eq!(
            ends(&paid_periods(&[one_off(0, true), one_off(1, false)], week)),
            vec![(day(8), false)]
        );
        // A purchase after a gap starts when paid.
        let gap = paid_periods(&[one_off(0, false), one_off(30, false)], week);
        assert_eq!(ends(&gap), vec![(day(7), false), (day(37), false)]);
        // Everything refunded: the periods read refunded.
        assert_eq!(
            ends(&paid_periods(&[one_off(0, true), one_off(1, true)], week)),
            vec![(day(7), true), (day(8), true)]
        );
    }

    fn plans() -> Plans {
        Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stars_price": 250},
                "week": {"name": "Week", "entitlement": "pro", "period_days": 7, "stars_price": 90},
                "card": {"name": "Card", "entitlement": "pro", "period_days": 30, "stripe_price": "price_1"}}"#,
        )
        .unwrap()
    }

    fn query(payload: &str, currency: &str, amount: i64) -> PreCheckoutQuery {
        PreCheckoutQuery {
            id: "q1".into(),
            from: User { id: 5 },
            currency: currency.into(),
            total_amount: amount,
            invoice_payload: payload.into(),
        }
    }

    #[test]
    fn a_pre_checkout_goes_ahead_only_for_our_plan_in_stars_at_its_price() {
        let plans = plans();
        assert_eq!(check_pre_checkout(&plans, &query("pro", "XTR", 250), false), Ok(()));
        for (q, banned) in [
            (query("pro", "USD", 250), false),
            (query("pro", "XTR", 249), false),
            (query("card", "XTR", 250), false),
            (query("gold", "XTR", 250), false),
            (query("pro", "XTR", 250), true),
        ] {
            assert!(check_pre_checkout(&plans, &q, banned).is_err(), "{q:?} banned={banned}");
        }
    }

    #[test]
    fn thirty_day_plans_are_sold_as_stars_subscriptions() {
        let plans = plans();
        let monthly = invoice(&plans, "pro").unwrap();
        assert_eq!((monthly.amount_stars, monthly.payload.as_str()), (250, "pro"));
        assert_eq!(
            monthly.subscription_period,
            Some(std::time::Duration::from_secs(2_592_000))
        );
        assert_eq!(invoice(&plans, "week").unwrap().subscription_period, None);
        assert_eq!(invoice(&plans, "card"), None);
        assert_eq!(invoice(&plans, "gold"), None);
    }
}
