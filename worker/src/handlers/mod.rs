//! One handler per queue: the apalis-facing function that runs an attempt of a job.

pub mod broadcasts;
pub mod checkout;
pub mod entitlements;
pub mod notifications;
pub mod refunds;
pub mod tracking;

use std::sync::Arc;

use jobs::billing::Plans;
use jobs::billing::stripe::Links;
use jobs::metrics::JobStats;
use jobs::queue::effect::Begun;
use jobs::queue::{Completed, EffectTx, Job, JobError};
use jobs::stripe::client::StripeClient;
use jobs::telegram::client::TelegramClient;
use sqlx::PgPool;

use crate::config::StripeConfig;

/// Billing is what the billing and tracking handlers (entitlements, checkout, refunds, tracking)
/// need.
#[derive(Debug, Clone)]
pub struct Billing {
    pub pool: PgPool,
    pub stats: Arc<JobStats>,
    pub plans: Arc<Plans>,
    pub links: Links,
    pub stripe: StripeClient,
    /// For Stars invoice links and Stars refunds.
    pub telegram: TelegramClient,
    /// Where Stripe sends users back to; its secret key is already in `stripe`.
    pub urls: Arc<StripeConfig>,
    /// How long after a promo click a payment is still attributed to it.
    pub attribution_window: std::time::Duration,
}

/// Applies `effect` through the job's effect transaction, once: a job whose logical key the
/// ledger already holds completes without running it.
pub async fn apply_once<T, E, F>(pool: &PgPool, job: &Job<T>, effect: F) -> Result<Completed, JobError>
where
    F: AsyncFnOnce(&mut EffectTx) -> Result<(), E>,
    JobError: From<E>,
{
    match EffectTx::begin(pool, job).await? {
        Begun::AlreadyApplied(done) => Ok(done),
        Begun::Fresh(mut tx) => {
            effect(&mut tx).await?;
            Ok(tx.commit().await?)
        }
    }
}
