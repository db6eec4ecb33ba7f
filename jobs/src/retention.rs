//! Retention of the records that only guard against repeats: once nothing can repeat, they go.
//!
//! Each of these tables would otherwise grow with every job, event and request for ever. Every
//! row is kept for `retention` (`RECORD_RETENTION_DAYS`, [`DEFAULT_RECORD_RETENTION`] by default,
//! at least [`MIN_RECORD_RETENTION`]) and, past that, for as long as a job that could still need
//! it exists:
//!
//! - `effect_ledger`: a committed effect's key. It refuses a second run and a late duplicate
//!   enqueue of the same logical job. It goes once its job row is gone too (the job row's own
//!   unique key refuses duplicates while it exists) and `retention` has passed. Every producer of
//!   a key dedups by a record of its own that lives at least as long (a Stripe event by
//!   `stripe_events`, a Stars payment by `telegram_payments`, a refund or billing request by its
//!   row id, an entitlement change by its id) and every provider stops redelivering long before
//!   `retention` (Stripe after 3 days, Telegram after about one), so no key can come back after.
//!   The one key a client makes is an ops notification's `Idempotency-Key`: it is honoured for
//!   `retention`, as Stripe honours one for 24 hours.
//! - `telegram_deliveries` of jobs that are gone: the record that a message went out, which a
//!   re-run consults before sending. Broadcasts' go with their broadcast (`BROADCAST_RETENTION_DAYS`).
//! - `stripe_events` that were processed and whose job is gone: the inbox that makes a
//!   redelivery a duplicate. Stripe redelivers for 3 days by itself, but keeps events for 30 days,
//!   in which anyone may resend one (from the Dashboard, or by listing undelivered events), so
//!   these stay at least [`STRIPE_EVENT_RETENTION`] whatever `retention` says.
//! - `billing_requests` whose `checkout` job is gone: the per-user limit looks back 10 minutes
//!   and a client polls for 25 seconds.
//! - `telegram_pre_checkout_queries`: Telegram waits 10 seconds for the answer.
//! - dead jobs, dead for longer than `retention`: by then ops have had a month; a dead
//!   `checkout` or `refunds` job is far past Stripe's key memory and could not be retried blindly
//!   anyway. Its request row says `pending` for as long as it is kept.
//!
//! Each table is pruned in batches ([`crate::db::delete_in_batches`]) by every worker process,
//! which is safe to run at once.

use std::time::Duration;

use sqlx::PgPool;

use crate::db::delete_in_batches;

/// The least `RECORD_RETENTION_DAYS` may be: past every provider's redelivery window (Stripe's is
/// 3 days) with room to spare.
pub const MIN_RECORD_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The least a processed Stripe event is kept: Stripe keeps events, and lets them be resent, for
/// 30 days; a day more covers clocks.
pub const STRIPE_EVENT_RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);

/// How long the records are kept by default.
pub const DEFAULT_RECORD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Pruned counts what one pass deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub effect_ledger: u64,
    pub telegram_deliveries: u64,
    pub stripe_events: u64,
    pub billing_requests: u64,
    pub pre_checkout_queries: u64,
    pub dead_jobs: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.effect_ledger
            + self.telegram_deliveries
            + self.stripe_events
            + self.billing_requests
            + self.pre_checkout_queries
            + self.dead_jobs
    }
}

/// Deletes the records older than `retention` (at least [`MIN_RECORD_RETENTION`]) that nothing
/// can need any more, as the module says.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<Pruned, sqlx::Error> {
    let age = retention.max(MIN_RECORD_RETENTION);
    // Dead jobs first: their ledger-less keys and their requests' rows may then go in this pass.
    let dead_jobs = delete_in_batches(
        pool,
        "DELETE FROM jobs WHERE id IN (
             SELECT id FROM jobs WHERE state = 'dead' AND finished_at < now() - make_interval(secs => $1)
             LIMIT $2)",
        age,
    )
    .await?;
    let effect_ledger = delete_in_batches(
        pool,
        "DELETE FROM effect_ledger WHERE (queue, logical_key) IN (
             SELECT l.queue, l.logical_key FROM effect_ledger l
             WHERE l.applied_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = l.queue AND j.logical_key = l.logical_key)
             LIMIT $2)",
        age,
    )
    .await?;
    let telegram_deliveries = delete_in_batches(
        pool,
        "DELETE FROM telegram_deliveries WHERE logical_key IN (
             SELECT d.logical_key FROM telegram_deliveries d
             WHERE d.created_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM jobs j
                               WHERE j.queue = 'notifications' AND j.logical_key = d.logical_key)
             LIMIT $2)",
        age,
    )
    .await?;
    let stripe_events = delete_in_batches(
        pool,
        "DELETE FROM stripe_events WHERE id IN (
             SELECT e.id FROM stripe_events e
             WHERE e.received_at < now() - make_interval(secs => $1) AND e.outcome IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM jobs j
                               WHERE j.queue = 'entitlements' AND j.logical_key = 'stripe_event:' || e.id)
             LIMIT $2)",
        age.max(STRIPE_EVENT_RETENTION),
    )
    .await?;
    let billing_requests = delete_in_batches(
        pool,
        "DELETE FROM billing_requests WHERE id IN (
             SELECT r.id FROM billing_requests r
             WHERE r.created_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM jobs j
                               WHERE j.queue = 'checkout' AND j.logical_key = 'billing_request:' || r.id)
             LIMIT $2)",
        age,
    )
    .await?;
    let pre_checkout_queries = delete_in_batches(
        pool,
        "DELETE FROM telegram_pre_checkout_queries WHERE id IN (
             SELECT id FROM telegram_pre_checkout_queries
             WHERE answered_at < now() - make_interval(secs => $1)
             LIMIT $2)",
        age,
    )
    .await?;
    Ok(Pruned {
        effect_ledger,
        telegram_deliveries,
        stripe_events,
        billing_requests,
        pre_checkout_queries,
        dead_jobs,
    })
}
