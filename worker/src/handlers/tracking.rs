//! The `tracking` queue: stores promo clicks the webhook saw, and attributes payments to them.

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};
use jobs::tracking::{self, TrackingJob};

use super::{Billing, apply_once};

/// Runs one attempt of a tracking job.
pub async fn handle(job: Job<TrackingJob>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let billing = &*billing;
    run_attempt(&billing.pool, &billing.stats, job, |job| track(billing, job)).await?;
    Ok(())
}

async fn track(billing: &Billing, job: Job<TrackingJob>) -> Result<Completed, JobError> {
    apply_once(&billing.pool, &job, async |tx| match &job.payload {
        TrackingJob::Click(click) => tracking::record(tx.conn(), click).await,
        TrackingJob::Conversion(payment) => {
            let campaign = tracking::attribute(tx.conn(), payment, billing.attribution_window).await?;
            tracing::info!(payment = payment.payment, ?campaign, "payment attributed");
            Ok(())
        }
    })
    .await
}
