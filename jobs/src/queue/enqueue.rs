//! Writing jobs: the one way into the queue, inside the caller's transaction.
//!
//! The producer's business row and its jobs commit together or not at all. A job whose logical
//! key is already queued, or whose effect the ledger already records, is not written again.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{JobPayload, Queue};

/// NewJob is a job about to be enqueued.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: Queue,
    pub logical_key: String,
    pub payload: serde_json::Value,
    /// When it may first run; `None` is now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
}

impl NewJob {
    /// A job carrying `payload` on its queue, identified by `logical_key`, with the queue's
    /// retry policy.
    pub fn new<P: JobPayload>(payload: &P, logical_key: impl Into<String>) -> NewJob {
        NewJob {
            queue: P::QUEUE,
            logical_key: logical_key.into(),
            payload: serde_json::to_value(payload).expect("job payloads serialise to JSON"),
            run_at: None,
            max_attempts: P::QUEUE.retry_policy().max_attempts,
        }
    }

    /// The same job, not to run before `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> NewJob {
        self.run_at = Some(at);
        self
    }

    /// The same job, with `n` attempts in all.
    pub fn max_attempts(mut self, n: i32) -> NewJob {
        self.max_attempts = n.max(1);
        self
    }
}

/// Enqueued says what [`enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job row with this id.
    New(i64),
    /// The logical job exists already: queued under this id, or (`None`) done and pruned, its
    /// effect recorded in the ledger.
    Duplicate(Option<i64>),
}

impl Enqueued {
    /// The job's id, when its row exists.
    pub fn id(self) -> Option<i64> {
        match self {
            Enqueued::New(id) => Some(id),
            Enqueued::Duplicate(id) => id,
        }
    }
}

/// Writes `job` through `conn`, which should be the producer's open transaction.
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<Enqueued, sqlx::Error> {
    if let Some(&id) = insert(conn, std::slice::from_ref(job)).await?.first() {
        return Ok(Enqueued::New(id));
    }
    let existing = sqlx::query_scalar("SELECT id FROM jobs WHERE queue = $1 AND logical_key = $2")
        .bind(job.queue.name())
        .bind(&job.logical_key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(Enqueued::Duplicate(existing))
}

/// Writes `jobs` in one statement through `conn` and returns how many were new; the others
/// duplicate a queued job or a recorded effect. For fan-outs and bulk loads.
pub async fn enqueue_many(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<usize, sqlx::Error> {
    Ok(insert(conn, jobs).await?.len())
}

/// Inserts the jobs that are neither queued nor in the ledger and returns their new ids.
async fn insert(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<i64>, sqlx::Error> {
    let mut queues = Vec::with_capacity(jobs.len());
    let mut keys = Vec::with_capacity(jobs.len());
    let mut payloads = Vec::with_capacity(jobs.len());
    let mut run_ats = Vec::with_capacity(jobs.len());
    let mut max_attempts = Vec::with_capacity(jobs.len());
    for job in jobs {
        queues.push(job.queue.name());
        keys.push(job.logical_key.as_str());
        payloads.push(&job.payload);
        run_ats.push(job.run_at);
        max_attempts.push(job.max_attempts);
    }
    sqlx::query_scalar(
        "INSERT INTO jobs (queue, logical_key, payload, run_at, max_attempts)
         SELECT n.queue, n.logical_key, n.payload, coalesce(n.run_at, now()), n.max_attempts
         FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::int[])
              AS n (queue, logical_key, payload, run_at, max_attempts)
         WHERE NOT EXISTS (SELECT 1 FROM effect_ledger l
                           WHERE l.queue = n.queue AND l.logical_key = n.logical_key)
         ON CONFLICT (queue, logical_key) DO NOTHING
         RETURNING id",
    )
    .bind(&queues)
    .bind(&keys)
    .bind(&payloads)
    .bind(&run_ats)
    .bind(&max_attempts)
    .fetch_all(conn)
    .await
}
