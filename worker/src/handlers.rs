//! One handler per queue: the apalis-facing function that runs an attempt of a job. Each is the
//! same three steps: apalis decodes the job, [`run_attempt`] records what became of it, and one
//! call into `jobs` does the work.

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::billing::refunds::{self, MakeRefund};
use jobs::billing::requests::{self, CreateSession};
use jobs::billing::{self, Billing, EntitlementsJob};
use jobs::marketing::broadcasts::{self, Broadcaster, FanOut};
use jobs::notifications::{self, Notifier};
use jobs::queue::Job;
use jobs::queue::outcome::run_attempt;
use jobs::telegram::SendMessage;
use jobs::tracking::{self, TrackingJob};

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
        broadcasts::fan_out::run(&broadcaster, job)
    })
    .await?;
    Ok(())
}
