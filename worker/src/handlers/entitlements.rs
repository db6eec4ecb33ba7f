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

/// The error for a Stars payment whose plan left the catalogue: dead at once, for ops to put the
/// plan back in `PLANS` and retry the job.
pub fn plan_not_configured(charge_id: &str) -> JobError {
    JobError::Terminal(format!(
        "the plan of Stars payment {charge_id} is not in PLANS; restore it and retry this job"
    ))
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
                match applied {
                    // The webhook stores the payment with this job: it cannot be missing.
                    Applied::UnknownPayment => {
                        return Err(JobError::Terminal(format!("no Stars payment {}", payment.charge_id)));
                    }
                    Applied::PlanNotConfigured => return Err(plan_not_configured(&payment.charge_id)),
                    Applied::Changed | Applied::Unchanged => {}
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
                if applied == Applied::PlanNotConfigured {
                    return Err(plan_not_configured(&refund.charge_id));
                }
                // A refund of a payment not recorded (yet) has nothing to revoke now; the notice
                // the webhook stored marks the payment refunded if it comes later.
                tracing::info!(
                    job = job.id,
                    charge = refund.charge_id,
                    ?applied,
                    "stars refund applied"
                );
                Ok(())
            })
            .await
        }
        EntitlementsJob::ProvisionUser(user) => {
            apply_once(&billing.pool, &job, async |tx| users::upsert(tx.conn(), user).await).await
        }
    }
}
