//! The `tracking` queue: stores promo clicks the webhook saw.

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};
use jobs::tracking::{self, RecordClick};

use super::{Billing, apply_once};

/// Runs one attempt of a click's recording.
pub async fn handle(job: Job<RecordClick>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let billing = &*billing;
    run_attempt(&billing.pool, &billing.stats, job, |job| record(billing, job)).await?;
    Ok(())
}

async fn record(billing: &Billing, job: Job<RecordClick>) -> Result<Completed, JobError> {
    apply_once(&billing.pool, &job, async |tx| {
        tracking::record(tx.conn(), &job.payload).await
    })
    .await
}
