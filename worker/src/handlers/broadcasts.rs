//! The `broadcasts` queue: one page of a broadcast's fan-out into `notifications` jobs.

use std::sync::Arc;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::marketing::broadcasts::{self, FanOut};
use jobs::metrics::JobStats;
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};
use sqlx::PgPool;

use super::apply_once;

/// Broadcaster is what the fan-out handler needs.
#[derive(Debug, Clone)]
pub struct Broadcaster {
    pub pool: PgPool,
    pub stats: Arc<JobStats>,
    /// Recipients per fan-out job.
    pub page_size: i64,
    /// The send rate the messages are spread at.
    pub per_second: f64,
}

/// Runs one attempt of a fan-out page.
pub async fn handle(job: Job<FanOut>, broadcaster: Data<Broadcaster>) -> Result<(), BoxDynError> {
    let broadcaster = &*broadcaster;
    run_attempt(&broadcaster.pool, &broadcaster.stats, job, |job| {
        fan_out(broadcaster, job)
    })
    .await?;
    Ok(())
}

async fn fan_out(broadcaster: &Broadcaster, job: Job<FanOut>) -> Result<Completed, JobError> {
    apply_once(&broadcaster.pool, &job, async |tx| {
        let page = broadcasts::fan_out(tx.conn(), &job.payload, broadcaster.page_size, broadcaster.per_second).await?;
        tracing::info!(
            broadcast_id = job.payload.broadcast_id,
            recipients = page.recipients,
            queued = page.queued,
            last = page.last,
            "broadcast page fanned out"
        );
        Ok::<(), sqlx::Error>(())
    })
    .await
}
