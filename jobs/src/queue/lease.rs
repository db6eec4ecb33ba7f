//! A worker process's lease on the jobs it runs: how it proves it is alive, and how it stops
//! doing what it can no longer prove it owns.
//!
//! Liveness is one heartbeat statement for all of a process's workers, every [`HEARTBEAT`], on a
//! connection of its own ([`keep_alive`]): a pool saturated by work (a lock held by a migration,
//! a failover, a slow provider) cannot delay it. Other processes hand out the running jobs of a
//! worker silent for [`WORKER_TIMEOUT`] ([`super::maintenance::rescue_orphans`], by the
//! database's clock).
//!
//! The process holds its lease for [`TERM`] after it *sent* its last successful heartbeat. The
//! database stamped that heartbeat later than it was sent, so no rescue can come before the
//! lease ends; [`TERM`] is shorter than [`WORKER_TIMEOUT`] by a margin for the two clocks' rates.
//! Before any external call a job checks, last thing, that its row is still its worker's and that
//! the lease outlasts the call's timeout ([`hold_for`]): a call that starts will have finished
//! (or timed out) before anyone else can take the job. A worker whose lease lapsed also fetches
//! nothing until a heartbeat succeeds again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool};

use super::{Job, JobError, maintenance};

/// How often a worker process records that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a silent worker is presumed alive; its running jobs are handed to others after this.
/// A dead worker's jobs are rescued within this plus one [`HEARTBEAT`] (the rescue's pace).
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after sending a successful heartbeat a process counts itself as owning its jobs.
/// Six heartbeats, so that a missed one or two do not stop the work; the 2 s under
/// [`WORKER_TIMEOUT`] cover any difference in the rate of the worker's and the database's clocks.
pub const TERM: Duration = Duration::from_secs(28);

/// Lease is a process's proof that its running jobs are still its own. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    until: Arc<Mutex<Option<Instant>>>,
}

impl Lease {
    /// A lease not yet held: nothing may be fetched or called on it until [`Lease::renew`].
    pub fn new() -> Lease {
        Lease::default()
    }

    /// A lease held from now for [`TERM`], for code that runs jobs without a heartbeat of its own
    /// (tests, the benchmark).
    pub fn renewed_now() -> Lease {
        let lease = Lease::new();
        lease.renew(Instant::now());
        lease
    }

    /// Extends the lease to [`TERM`] after `sent_at`, when a heartbeat sent then succeeded.
    pub fn renew(&self, sent_at: Instant) {
        let mut until = self.until.lock().expect("lease lock");
        let renewed = sent_at + TERM;
        if until.is_none_or(|u| u < renewed) {
            *until = Some(renewed);
        }
    }

    /// How long the lease still runs; zero once it lapsed (or was never held).
    pub fn remaining(&self) -> Duration {
        let until = *self.until.lock().expect("lease lock");
        until.map_or(Duration::ZERO, |u| u.saturating_duration_since(Instant::now()))
    }

    /// Whether the lease runs at all.
    pub fn is_held(&self) -> bool {
        !self.remaining().is_zero()
    }
}

/// Checks, just before an external call that may take up to `call`, that `job` is still its
/// worker's and that the lease outlasts the call. When either fails, the attempt stops with its
/// attempt given back: the job is another worker's now, or soon may be, and its record (if it is
/// still ours) puts it back in the queue.
pub async fn hold_for<T>(pool: &PgPool, lease: &Lease, job: &Job<T>, call: Duration) -> Result<(), JobError> {
    let ours: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state = 'running' AND locked_by = $2)")
            .bind(job.id)
            .bind(&job.worker)
            .fetch_one(pool)
            .await?;
    let reason = if !ours {
        "the job is no longer this worker's"
    } else if lease.remaining() < call {
        "the worker's lease would lapse during the call"
    } else {
        return Ok(());
    };
    tracing::warn!(job = job.id, worker = job.worker, reason, "external call not made");
    Err(JobError::RetryAfter {
        delay: HEARTBEAT,
        reason: Some(reason.to_string()),
    })
}

/// Heartbeats `workers` every [`HEARTBEAT`] on a connection of its own (opened with `options`,
/// opened again after any failure) and renews `lease` after each success, until aborted.
pub async fn keep_alive(options: PgConnectOptions, lease: Lease, workers: Vec<String>) {
    let mut conn: Option<PgConnection> = None;
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent_at = Instant::now();
        // Bounded, so that a heartbeat stuck on a lock or a dead connection cannot stall the next.
        let beat = tokio::time::timeout(HEARTBEAT, async {
            if conn.is_none() {
                conn = Some(options.connect().await?);
            }
            maintenance::heartbeat(conn.as_mut().expect("connected above"), &workers).await
        });
        match beat.await {
            Ok(Ok(())) => lease.renew(sent_at),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, lease_left = ?lease.remaining(), "heartbeat failed");
                conn = None;
            }
            Err(_) => {
                tracing::warn!(lease_left = ?lease.remaining(), "heartbeat timed out");
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_for_its_term_from_the_heartbeat_sent() {
        let lease = Lease::new();
        assert!(!lease.is_held(), "not held before a heartbeat");
        let sent = Instant::now();
        lease.renew(sent);
        assert!(lease.remaining() <= TERM && lease.remaining() > TERM - Duration::from_secs(1));
        lease.renew(sent - Duration::from_secs(10));
        assert!(
            lease.remaining() > TERM - Duration::from_secs(1),
            "an older heartbeat does not shorten it"
        );
        let lapsed = Lease::new();
        lapsed.renew(Instant::now() - TERM - Duration::from_millis(1));
        assert!(!lapsed.is_held());
        assert!(TERM < WORKER_TIMEOUT, "the lease ends before anyone may rescue");
    }
}
