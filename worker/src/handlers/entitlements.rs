//! The `entitlements` queue: applies one Stripe webhook event from the inbox.
//!
//! The event's facts, the entitlements they change, their history rows, the user's notifications
//! and the job's completion commit in one transaction (see `jobs::billing::stripe`).

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::billing::stripe::{self, EventError, ProcessStripeEvent};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};

use super::{Billing, apply_once};

/// Runs one attempt of an event's processing.
pub async fn handle(job: Job<ProcessStripeEvent>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let billing = &*billing;
    run_attempt(&billing.pool, &billing.stats, job, |job| apply(billing, job)).await?;
    Ok(())
}

async fn apply(billing: &Billing, job: Job<ProcessStripeEvent>) -> Result<Completed, JobError> {
    let event_id = &job.payload.event_id;
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
