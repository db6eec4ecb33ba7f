//! The `refunds` queue: makes a refund ops asked for, then records it, revokes what the payment
//! bought and tells the user, in one transaction.
//!
//! The Stripe call carries the key `paygate:refund:<id>`, so a retried attempt (after a crash
//! between Stripe's answer and our commit, say) gets the same refund back, not a second one. The
//! `charge.refunded` event Stripe sends afterwards finds the payment already marked refunded and
//! changes nothing. Telegram's `refundStarPayment` has no key, but refunds a charge only once and
//! says so (`CHARGE_ALREADY_REFUNDED`) when asked again, which a retried attempt takes as done;
//! the `refunded_payment` update that follows changes nothing either.

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::billing::counters;
use jobs::billing::refunds::{self, MakeRefund, Provider, Refund, RefundStatus};
use jobs::billing::stars;
use jobs::billing::stripe::{self as billing_stripe, Reversal};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};
use jobs::stripe::client::{PaymentRef, RefundParams, StripeError};
use jobs::telegram::client::{SendError, StarRefund};

use super::{Billing, apply_once, entitlements};

/// Runs one attempt of a refund.
pub async fn handle(job: Job<MakeRefund>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let billing = &*billing;
    run_attempt(&billing.pool, &billing.stats, job, |job| refund(billing, job)).await?;
    Ok(())
}

async fn refund(billing: &Billing, job: Job<MakeRefund>) -> Result<Completed, JobError> {
    let refund = {
        let mut conn = billing.pool.acquire().await?;
        refunds::get(&mut conn, job.payload.refund_id).await?
    };
    let Some(refund) = refund else {
        return Err(JobError::Terminal(format!(
            "refund {} does not exist",
            job.payload.refund_id
        )));
    };
    if refund.status != RefundStatus::Pending {
        return apply_once(&billing.pool, &job, async |_| Ok::<(), sqlx::Error>(())).await;
    }
    if refund.provider == Provider::TelegramStars {
        return stars_refund(billing, &job, &refund).await;
    }
    let made = match PaymentRef::parse(&refund.payment) {
        None => Err(StripeError::Permanent {
            reason: format!("{:?} is neither a payment intent nor a charge", refund.payment),
        }),
        Some(payment) => {
            let params = RefundParams {
                payment,
                amount: refund.amount,
                reason: refund.reason.as_deref(),
                refund_request_id: refund.id,
            };
            billing
                .stripe
                .create_refund(&params, &format!("paygate:refund:{}", refund.id))
                .await
        }
    };
    match made {
        Ok(made) => {
            let cause = format!("refund:{}", refund.id);
            apply_once(&billing.pool, &job, async |tx| {
                refunds::settle(tx.conn(), refund.id, Ok(&made.id)).await?;
                counters::add(tx.conn(), "billing_refunds_total", "outcome=\"succeeded\"").await?;
                // A partial refund is a gesture: access stays, as it does for a partial
                // charge.refunded event.
                if refund.amount.is_none() {
                    let payments = [
                        Some(refund.payment.as_str()),
                        made.charge.as_deref(),
                        made.payment_intent.as_deref(),
                    ];
                    billing_stripe::reverse(tx.conn(), &billing.plans, &payments, Reversal::Refund, &cause).await?;
                }
                Ok::<(), sqlx::Error>(())
            })
            .await
        }
        Err(StripeError::Permanent { reason }) => {
            tracing::warn!(refund = refund.id, reason, "Stripe refused the refund");
            apply_once(&billing.pool, &job, async |tx| {
                refunds::settle(tx.conn(), refund.id, Err(&reason)).await?;
                counters::add(tx.conn(), "billing_refunds_total", "outcome=\"failed\"").await
            })
            .await
        }
        Err(StripeError::Retryable { reason, .. }) => Err(JobError::Retryable(reason)),
    }
}

/// Refunds a Telegram Stars payment (always whole), then marks it refunded, revokes what it
/// bought and tells the user, in one transaction.
async fn stars_refund(billing: &Billing, job: &Job<MakeRefund>, refund: &Refund) -> Result<Completed, JobError> {
    let payer = {
        let mut conn = billing.pool.acquire().await?;
        stars::payer(&mut conn, &refund.payment).await?
    };
    let made = match payer {
        // The web process checked the payment; it cannot have gone since.
        None => Err(SendError::Permanent(format!("no Stars payment {:?}", refund.payment))),
        Some(user_id) => billing.telegram.refund_star_payment(user_id, &refund.payment).await,
    };
    match made {
        Ok(result) => {
            if result == StarRefund::AlreadyRefunded {
                tracing::info!(refund = refund.id, "the Stars payment was already refunded");
            }
            let cause = format!("refund:{}", refund.id);
            apply_once(&billing.pool, job, async |tx| {
                refunds::settle(tx.conn(), refund.id, Ok(&refund.payment)).await?;
                counters::add(tx.conn(), "billing_refunds_total", "outcome=\"succeeded\"").await?;
                let applied =
                    stars::mark_refunded(tx.conn(), &billing.plans, &refund.payment, chrono::Utc::now(), &cause)
                        .await?;
                if applied == stars::Applied::PlanNotConfigured {
                    // The Stars are back with the user, but what they bought cannot be derived:
                    // dead, for ops to restore the plan and retry (Telegram then answers that
                    // the charge is refunded already).
                    return Err(entitlements::plan_not_configured(&refund.payment));
                }
                Ok(())
            })
            .await
        }
        Err(SendError::Permanent(reason) | SendError::Unreachable(reason)) => {
            tracing::warn!(refund = refund.id, reason, "Telegram refused the refund");
            apply_once(&billing.pool, job, async |tx| {
                refunds::settle(tx.conn(), refund.id, Err(&reason)).await?;
                counters::add(tx.conn(), "billing_refunds_total", "outcome=\"failed\"").await
            })
            .await
        }
        Err(SendError::Transient(reason)) => Err(JobError::Retryable(reason)),
        Err(SendError::RetryAfter(delay)) => Err(JobError::RetryAfter {
            delay,
            reason: Some("Telegram rate limit".into()),
        }),
    }
}
