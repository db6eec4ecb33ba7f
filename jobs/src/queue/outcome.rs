//! What happens after a handler returns: success is already committed; a failure moves the job
//! to a later `run_at` or to `dead`, durably, with its error appended to the job's history.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;
use sqlx::PgPool;

use super::{Completed, Job, RetryPolicy};
use crate::metrics::JobStats;

/// How long one attempt may run before it counts as failed. Maintenance treats a job running for
/// longer than this (plus a margin) as stuck, so this bounds how long a job can be lost.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// JobError is how a handler says its attempt failed, and so what should happen next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt, on the queue's backoff schedule.
    #[error("{0}")]
    Retryable(String),
    /// Try again after `delay` without counting this attempt: a rate limit or a provider's
    /// `retry_after`. `reason`, when given, is kept in the job's error history.
    #[error("retry after {delay:?}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    RetryAfter { delay: Duration, reason: Option<String> },
    /// Can never succeed (a provider's permanent 4xx, an undecodable payload): dead at once.
    #[error("{0}")]
    Terminal(String),
}

impl JobError {
    /// Whether this failure of attempt `attempt` of `max_attempts` leaves the job dead.
    pub fn is_final(&self, attempt: i32, max_attempts: i32) -> bool {
        let policy = RetryPolicy::DEFAULT;
        matches!(
            Transition::after(attempt, max_attempts, &policy, self, 0.0),
            Transition::Dead { .. }
        )
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> JobError {
        JobError::Retryable(format!("database: {e}"))
    }
}

/// Transition is where a failed job goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Back to `pending`, due after `delay`; `refund` gives the attempt back.
    Retry {
        delay: Duration,
        refund: bool,
        error: Option<String>,
    },
    /// To `dead`, kept for ops with its history.
    Dead { error: String },
}

impl Transition {
    /// The transition for a job that failed attempt `attempt` of `max_attempts` with `error`;
    /// `jitter` is a uniform draw in [0, 1).
    pub fn after(attempt: i32, max_attempts: i32, policy: &RetryPolicy, error: &JobError, jitter: f64) -> Transition {
        match error {
            JobError::Terminal(e) => Transition::Dead { error: e.clone() },
            JobError::RetryAfter { delay, reason } => Transition::Retry {
                delay: *delay,
                refund: true,
                error: reason.clone(),
            },
            JobError::Retryable(e) if attempt >= max_attempts => Transition::Dead { error: e.clone() },
            JobError::Retryable(e) => Transition::Retry {
                delay: policy.delay(attempt, jitter),
                refund: false,
                error: Some(e.clone()),
            },
        }
    }
}

/// Runs one attempt of `job` through `handler` and records a failure. Panics and attempts over
/// [`ATTEMPT_TIMEOUT`] are retryable failures. Recording the failure is retried for about 45 s;
/// errors only if it still fails, in which case the job stays `running` until maintenance
/// rescues it as stuck.
pub async fn run_attempt<T, F, Fut>(pool: &PgPool, stats: &JobStats, job: Job<T>, handler: F) -> Result<(), sqlx::Error>
where
    F: FnOnce(Job<T>) -> Fut,
    Fut: Future<Output = Result<Completed, JobError>>,
{
    let (id, queue, attempt, max_attempts) = (job.id, job.queue, job.attempt, job.max_attempts);
    let worker = job.worker.clone();
    let started = Instant::now();
    let result = AssertUnwindSafe(tokio::time::timeout(ATTEMPT_TIMEOUT, handler(job)))
        .catch_unwind()
        .await;
    let result = match result {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(JobError::Retryable(format!(
            "attempt timed out after {ATTEMPT_TIMEOUT:?}"
        ))),
        Err(panic) => Err(JobError::Retryable(format!(
            "handler panicked: {}",
            panic_message(&panic)
        ))),
    };
    stats.observe_duration(queue, started.elapsed());
    let error = match result {
        Ok(_completed) => {
            stats.processed(queue);
            return Ok(());
        }
        Err(e) => e,
    };
    let transition = Transition::after(attempt, max_attempts, &queue.retry_policy(), &error, rand::random());
    match &transition {
        Transition::Retry { refund: true, .. } => tracing::info!(job = id, %queue, %error, "job deferred"),
        Transition::Retry { .. } => tracing::warn!(job = id, %queue, attempt, %error, "job failed, will retry"),
        Transition::Dead { .. } => tracing::error!(job = id, %queue, attempt, %error, "job dead"),
    }
    // Retried, since the database that failed the attempt may be failing this too (a saturated
    // pool, a failover): unrecorded, the job would sit `running` under a live worker until
    // maintenance takes it as stuck, minutes later.
    (|| record(pool, id, &worker, &error, &transition))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(12),
        )
        .notify(|e, wait| tracing::warn!(job = id, error = %e, ?wait, "recording a failed attempt failed"))
        .await?;
    match transition {
        Transition::Retry { refund: true, .. } => stats.deferred(queue),
        Transition::Retry { .. } => stats.retried(queue),
        Transition::Dead { .. } => stats.dead(queue),
    }
    Ok(())
}

/// Writes `transition` for job `id` if `worker` is still running it.
async fn record(
    pool: &PgPool,
    id: i64,
    worker: &str,
    error: &JobError,
    transition: &Transition,
) -> Result<(), sqlx::Error> {
    let kind = match error {
        JobError::Retryable(_) => "retryable",
        JobError::RetryAfter { .. } => "retry_after",
        JobError::Terminal(_) => "terminal",
    };
    let (state, delay, refund, message) = match transition {
        Transition::Retry { delay, refund, error } => ("pending", *delay, *refund, error.as_deref()),
        Transition::Dead { error } => ("dead", Duration::ZERO, false, Some(error.as_str())),
    };
    sqlx::query(
        "UPDATE jobs SET
             state = $2,
             run_at = now() + make_interval(secs => $3),
             attempt = attempt - $4::int,
             locked_by = NULL,
             locked_at = NULL,
             finished_at = CASE WHEN $2 = 'dead' THEN now() END,
             -- The history keeps the last 50 entries: a job deferred many times stays small.
             errors = CASE WHEN $5::text IS NULL THEN errors ELSE jsonb_path_query_array(
                 errors || jsonb_build_array(jsonb_build_object(
                     'attempt', attempt, 'at', now(), 'kind', $6::text, 'error', $5::text)),
                 '$[last - 49 to last]') END
         WHERE id = $1 AND state = 'running' AND locked_by = $7",
    )
    .bind(id)
    .bind(state)
    .bind(delay.as_secs_f64())
    .bind(i32::from(refund))
    .bind(message)
    .bind(kind)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy::DEFAULT;

    #[test]
    fn a_retryable_failure_with_attempts_left_is_retried_on_the_schedule() {
        let t = Transition::after(3, 15, &P, &JobError::Retryable("boom".into()), 0.5);
        assert_eq!(
            t,
            Transition::Retry {
                delay: Duration::from_secs(20),
                refund: false,
                error: Some("boom".into())
            }
        );
    }

    #[test]
    fn the_last_attempt_goes_dead() {
        let t = Transition::after(15, 15, &P, &JobError::Retryable("boom".into()), 0.5);
        assert_eq!(t, Transition::Dead { error: "boom".into() });
    }

    #[test]
    fn a_terminal_failure_skips_the_retries() {
        let t = Transition::after(1, 15, &P, &JobError::Terminal("400 bad".into()), 0.5);
        assert_eq!(
            t,
            Transition::Dead {
                error: "400 bad".into()
            }
        );
    }

    #[test]
    fn retry_after_burns_no_attempt_even_on_the_last_one() {
        let e = JobError::RetryAfter {
            delay: Duration::from_secs(7),
            reason: Some("429".into()),
        };
        let t = Transition::after(15, 15, &P, &e, 0.5);
        assert_eq!(
            t,
            Transition::Retry {
                delay: Duration::from_secs(7),
                refund: true,
                error: Some("429".into())
            }
        );
    }
}
