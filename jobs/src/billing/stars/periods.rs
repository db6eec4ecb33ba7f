//! The periods a source's Stars payments paid for, and the entitlement the shared rule derives
//! from them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Applied;
use crate::billing::entitlements::{self, Facts, PaidPeriod, derive};
use crate::bot::Bot;
use crate::queue::enqueue;

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
pub(super) async fn rederive(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    source: &str,
    cause: &str,
) -> Result<Applied, sqlx::Error> {
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
    let Some(plan) = bot.plans.get(&plan_code) else {
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
    let Some((state, why)) = derive(&facts, &periods, bot.plans) else {
        return Ok(Applied::Unchanged);
    };
    let Some(change) = entitlements::set(conn, source, &state, cause).await? else {
        return Ok(Applied::Unchanged);
    };
    if let Some(job) = entitlements::notification(&change, plan, why, bot.texts) {
        enqueue(conn, &job).await?;
    }
    crate::access::follow(conn, bot.plans, &change).await?;
    Ok(Applied::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
