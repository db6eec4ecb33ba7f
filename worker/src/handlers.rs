//! One handler per queue: the apalis-facing function that runs an attempt of a job. Each is the
//! same three steps: apalis decodes the job, [`run_attempt`] records what became of it, and one
//! call into `jobs` does the work.

use std::sync::Arc;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::billing::refunds::{self, MakeRefund};
use jobs::billing::requests::{self, CreateSession};
use jobs::billing::{self, Billing, EntitlementsJob};
use jobs::marketing::broadcasts::{self, FanOut};
use jobs::metrics::JobStats;
use jobs::notifications::{self, Notifier};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError, apply_once};
use jobs::telegram::SendMessage;
use jobs::tracking::{self, TrackingJob};
use sqlx::PgPool;

pub async fn notification(job: Job<SendMessage>, notifier: Data<Notifier>) -> Result<(), BoxDynError> {
    run_attempt(&notifier.pool, &notifier.stats, job, |job| {
        notifications::send(&notifier, job)
    })
    .await?;
    Ok(())
}

pub async fn entitlements(job: Job<EntitlementsJob>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    run_attempt(&billing.pool, &billing.stats, job, |job| billing::apply(&billing, job)).await?;
    Ok(())
}

pub async fn checkout(job: Job<CreateSession>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    run_attempt(&billing.pool, &billing.stats, job, |job| {
        requests::create_session(&billing, job)
    })
    .await?;
    Ok(())
}

pub async fn refund(job: Job<MakeRefund>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    run_attempt(&billing.pool, &billing.stats, job, |job| refunds::make(&billing, job)).await?;
    Ok(())
}

pub async fn tracking(job: Job<TrackingJob>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let window = billing.attribution_window;
    run_attempt(&billing.pool, &billing.stats, job, |job| {
        tracking::run(&billing.pool, window, job)
    })
    .await?;
    Ok(())
}

pub async fn fan_out(job: Job<FanOut>, broadcaster: Data<Broadcaster>) -> Result<(), BoxDynError> {
    run_attempt(&broadcaster.pool, &broadcaster.stats, job, |job| {
        run_fan_out(&broadcaster, job)
    })
    .await?;
    Ok(())
}

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

async fn run_fan_out(broadcaster: &Broadcaster, job: Job<FanOut>) -> Result<Completed, JobError> {
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
