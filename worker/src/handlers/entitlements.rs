//! The `entitlements` queue: Stripe webhook events from the inbox, Telegram Stars payments and
//! refunds, and Mini App users' profiles.
//!
//! Each job's facts, the entitlements they change, their history rows, the user's notifications
//! and the job's completion commit in one transaction (see `jobs::billing::stripe` and
//! `jobs::billing::stars`).

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::billing::EntitlementsJob;
use jobs::billing::stars::{self, Applied};
use jobs::billing::stripe::{self, EventError};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};
use jobs::telegram::users;

use super::{Billing, apply_once};

/// Runs one attempt of an entitlements job.
pub async fn handle(job: Job<EntitlementsJob>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let billing = &*billing;
    run_attempt(&billing.pool, &billing.stats, job, |job| apply(billing, job)).await?;
    Ok(())
}

async fn apply(billing: &Billing, job: Job<EntitlementsJob>) -> Result<Completed, JobError> {
    let cause = job.logical_key.clone();
    match &job.payload {
        EntitlementsJob::StripeEvent(event) => {
            let event_id = &event.event_id;
            apply_once(&billing.pool, &job, async |tx| {
                let outcome = stripe::apply_event(tx.conn(), &billing.plans, &billing.links, event_id).await?;
                tracing::info!(
                    job = job.id,
                    event = event_id,
                    outcome = outcome.name(),
                    "stripe event applied"
                );
                Ok::<(), EventError>(())
            })
            .await
        }
        EntitlementsJob::StarsPayment(payment) => {
            apply_once(&billing.pool, &job, async |tx| {
                let applied = stars::apply_payment(tx.conn(), &billing.plans, &payment.charge_id, &cause).await?;
                if applied == Applied::UnknownPayment {
                    // The webhook stores the payment with this job: it cannot be missing.
                    return Err(JobError::Terminal(format!("no Stars payment {}", payment.charge_id)));
                }
                tracing::info!(
                    job = job.id,
                    charge = payment.charge_id,
                    ?applied,
                    "stars payment applied"
                );
                Ok(())
            })
            .await
        }
        EntitlementsJob::StarsRefund(refund) => {
            apply_once(&billing.pool, &job, async |tx| {
                let applied =
                    stars::mark_refunded(tx.conn(), &billing.plans, &refund.charge_id, refund.refunded_at, &cause)
                        .await?;
                // A refund of a payment we never saw (made before this system took payments)
                // has nothing to revoke.
                tracing::info!(
                    job = job.id,
                    charge = refund.charge_id,
                    ?applied,
                    "stars refund applied"
                );
                Ok::<(), sqlx::Error>(())
            })
            .await
        }
        EntitlementsJob::ProvisionUser(user) => {
            apply_once(&billing.pool, &job, async |tx| users::upsert(tx.conn(), user).await).await
        }
    }
}
