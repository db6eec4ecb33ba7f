//! The `refunds` job: makes a refund ops asked for, then records it, revokes what the payment
//! bought and tells the user, in one transaction.
//!
//! The Stripe call carries the key `paygate:refund:<id>`, so a retried attempt (after a crash
//! between Stripe's answer and our commit, say) gets the same refund back, not a second one. The
//! `charge.refunded` event Stripe sends afterwards finds the payment already marked refunded and
//! changes nothing. Telegram's `refundStarPayment` has no key, but refunds a charge only once and
//! says so (`CHARGE_ALREADY_REFUNDED`) when asked again, which a retried attempt takes as done;
//! the `refunded_payment` update that follows changes nothing either.
//!
//! Stripe forgets keys after 24 hours, and ops may retry a dead refund job later than that (with
//! `past_key_memory`): such an attempt first looks for a refund carrying our request's id in its
//! metadata, and takes it as made.

use super::{MakeRefund, Provider, Refund, RefundStatus, get, settle};
use crate::billing::stripe::{Reversal, reverse};
use crate::billing::{Billing, plan_not_configured, stars};
use crate::metrics::{self, counters};
use crate::queue::ops::KEY_MEMORY;
use crate::queue::{Completed, EffectTx, Job, JobError, apply_once, complete_unchanged};
use crate::stripe::{
    self,
    client::{CreatedRefund, PaymentRef, RefundParams, StripeError},
};
use crate::telegram::{
    self,
    client::{SendError, StarRefund},
};

/// Runs one attempt of a `refunds` job.
pub async fn make(billing: &Billing, job: Job<MakeRefund>) -> Result<Completed, JobError> {
    let refund = get(&mut *billing.pool.acquire().await?, job.payload.refund_id).await?;
    let Some(refund) = refund else {
        return Err(JobError::Terminal(format!(
            "refund {} does not exist",
            job.payload.refund_id
        )));
    };
    if refund.status != RefundStatus::Pending {
        return complete_unchanged(&billing.pool, &job).await;
    }
    match refund.provider {
        Provider::Stripe => stripe_refund(billing, &job, &refund).await,
        Provider::TelegramStars => stars_refund(billing, &job, &refund).await,
    }
}

/// Refunds a Stripe payment (whole or in part); a whole refund revokes what it bought.
async fn stripe_refund(billing: &Billing, job: &Job<MakeRefund>, refund: &Refund) -> Result<Completed, JobError> {
    let made = match PaymentRef::parse(&refund.payment) {
        None => Err(StripeError::Permanent {
            reason: format!("{:?} is neither a payment intent nor a charge", refund.payment),
        }),
        Some(payment) => match made_before(billing, job, refund, payment).await {
            Ok(Some(made)) => Ok(made),
            Err(e) => return refused(billing, job, refund, e).await,
            Ok(None) => {
                billing.hold(job, stripe::client::TIMEOUT).await?;
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
        },
    };
    let made = match made {
        Ok(made) => made,
        Err(e) => return refused(billing, job, refund, e.into()).await,
    };
    apply_once(&billing.pool, job, async |tx| {
        succeeded(tx, refund, &made.id).await?;
        // A partial refund is a gesture: access stays, as it does for a partial charge.refunded
        // event.
        if refund.amount.is_none() {
            let payments = [
                Some(refund.payment.as_str()),
                made.charge.as_deref(),
                made.payment_intent.as_deref(),
            ];
            reverse(tx.conn(), billing.bot(), &payments, Reversal::Refund, &cause(refund)).await?;
        }
        Ok::<(), sqlx::Error>(())
    })
    .await
}

/// The refund an earlier attempt made, when Stripe may have forgotten its key: a refund request
/// older than [`KEY_MEMORY`] (one ops retried past it) is looked up by its metadata first, so
/// that a retry does not refund twice. Younger ones rely on the key, and ask nothing.
async fn made_before(
    billing: &Billing,
    job: &Job<MakeRefund>,
    refund: &Refund,
    payment: PaymentRef<'_>,
) -> Result<Option<CreatedRefund>, JobError> {
    let age = (chrono::Utc::now() - refund.created_at).to_std().unwrap_or_default();
    if age < KEY_MEMORY {
        return Ok(None);
    }
    billing.hold(job, stripe::client::TIMEOUT).await?;
    // Not knowing is no refusal: the refund stays pending and the job is retried (then dead, for
    // ops), rather than settled failed without asking Stripe for it.
    let found = billing
        .stripe
        .find_refund(payment, refund.id)
        .await
        .map_err(|e| JobError::Retryable(format!("looking for an earlier attempt's refund: {e}")))?;
    if let Some(made) = &found {
        tracing::info!(
            refund = refund.id,
            stripe_refund = made.id,
            "an earlier attempt made the refund"
        );
    }
    Ok(found)
}

/// Refunds a Telegram Stars payment (always whole), then marks it refunded, revokes what it
/// bought and tells the user, in one transaction.
async fn stars_refund(billing: &Billing, job: &Job<MakeRefund>, refund: &Refund) -> Result<Completed, JobError> {
    let payer = stars::payer(&mut *billing.pool.acquire().await?, &refund.payment).await?;
    let made = match payer {
        // The web process checked the payment; it cannot have gone since.
        None => Err(SendError::Permanent(format!("no Stars payment {:?}", refund.payment))),
        Some(user_id) => {
            billing.hold(job, telegram::client::TIMEOUT).await?;
            billing.telegram.refund_star_payment(user_id, &refund.payment).await
        }
    };
    match made {
        Ok(StarRefund::AlreadyRefunded) => tracing::info!(refund = refund.id, "the Stars payment was already refunded"),
        Ok(StarRefund::Refunded) => {}
        Err(e) => return refused(billing, job, refund, e.into()).await,
    }
    apply_once(&billing.pool, job, async |tx| {
        succeeded(tx, refund, &refund.payment).await?;
        let applied = stars::mark_refunded(
            tx.conn(),
            billing.bot(),
            &refund.payment,
            chrono::Utc::now(),
            &cause(refund),
        )
        .await?;
        if applied == stars::Applied::PlanNotConfigured {
            // The Stars are back with the user, but what they bought cannot be derived: dead,
            // for ops to restore the plan and retry (Telegram then answers that the charge is
            // refunded already).
            return Err(plan_not_configured(&refund.payment));
        }
        Ok(())
    })
    .await
}

/// The cause the entitlement history records for what a refund revoked.
fn cause(refund: &Refund) -> String {
    format!("refund:{}", refund.id)
}

/// Settles the refund as made by the provider (`provider_refund_id`), and counts it.
async fn succeeded(tx: &mut EffectTx, refund: &Refund, provider_refund_id: &str) -> Result<(), sqlx::Error> {
    settle(tx.conn(), refund.id, Ok(provider_refund_id)).await?;
    counters::add(tx.conn(), metrics::BILLING_REFUNDS, "outcome=\"succeeded\"").await
}

/// A failed provider call: a refusal settles the refund failed, and is counted; anything else
/// is the attempt's failure, for the queue to retry.
async fn refused(
    billing: &Billing,
    job: &Job<MakeRefund>,
    refund: &Refund,
    error: JobError,
) -> Result<Completed, JobError> {
    let JobError::Terminal(reason) = error else {
        return Err(error);
    };
    tracing::warn!(refund = refund.id, reason, "the provider refused the refund");
    apply_once(&billing.pool, job, async |tx| {
        settle(tx.conn(), refund.id, Err(&reason)).await?;
        counters::add(tx.conn(), metrics::BILLING_REFUNDS, "outcome=\"failed\"").await
    })
    .await
}
