//! Stars payments and refunds: recorded by the webhook (once per charge id, with the job that
//! applies them), applied by `entitlements` jobs in their effect transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::periods::rederive;
use super::{Applied, ApplyStarsPayment, ApplyStarsRefund};
use crate::billing::EntitlementsJob;
use crate::bot::Bot;
use crate::metrics::{self, counters};
use crate::queue::{NewJob, enqueue};
use crate::telegram::updates::{RefundedPayment, SuccessfulPayment};
use crate::tracking::AttributePayment;

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

/// Grants or extends what the payment `charge_id` buys, and counts it. Call it in the effect
/// transaction of the job, whose ledger makes both happen once.
pub async fn apply_payment(
    conn: &mut PgConnection,
    bot: Bot<'_>,
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
    counters::add(conn, metrics::TELEGRAM_PAYMENTS, "result=\"paid\"").await?;
    counters::add_value(
        conn,
        metrics::TELEGRAM_PAYMENT_VALUE,
        &format!("currency=\"{}\"", currency.escape_default()),
        amount as f64,
    )
    .await?;
    rederive(conn, bot, &source, cause).await
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
    bot: Bot<'_>,
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
            counters::add(conn, metrics::TELEGRAM_PAYMENTS, "result=\"refunded\"").await?;
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
    rederive(conn, bot, &source, cause).await
}
