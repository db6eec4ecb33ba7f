//! What ops can see and do: queue statistics, pausing a queue, jobs in any state, dead jobs,
//! retry and discard.
//!
//! Shared by the `/v1/ops/jobs` endpoints and the `worker jobs` CLI so both behave the same.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::Queue;

/// MAX_AGE_SECS is the longest age a dead-job filter takes: 100 years of 365.25 days, the year
/// humantime counts, so that `--older-than 100years` is the bound exactly. No job is that old,
/// and PostgreSQL can take it from now; a few thousand years would take `now() - age` out of the
/// range of a timestamp, an error rather than an answer. `/v1/ops` (its `maximum` validators)
/// and `worker jobs` refuse more; [`MAX_AGE`] is the same bound.
pub const MAX_AGE_SECS: u64 = 36_525 * 24 * 3600;

/// MAX_AGE is [`MAX_AGE_SECS`] as a duration.
pub const MAX_AGE: Duration = Duration::from_secs(MAX_AGE_SECS);

/// DeadFilter selects dead jobs. Its ages are at most [`MAX_AGE`]: callers refuse more.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub queue: Option<Queue>,
    /// Only jobs dead for at least this long.
    pub older_than: Option<Duration>,
    /// Only jobs dead for at most this long.
    pub newer_than: Option<Duration>,
    /// Only jobs that died at or before this time (a count's `as_of`, so that a change applies
    /// to no job that died after the count).
    pub died_at_most: Option<DateTime<Utc>>,
}

impl DeadFilter {
    fn push_where(&self, sql: &mut QueryBuilder<Postgres>) {
        sql.push(" WHERE state = 'dead'");
        if let Some(queue) = self.queue {
            sql.push(" AND queue = ").push_bind(queue.name());
        }
        // Ages are measured from `died_at_most` when it is given (a count's time), so a change
        // selects a subset of what its count did however long the operator took; else from now.
        let from_then = |sql: &mut QueryBuilder<Postgres>| match self.died_at_most {
            Some(at) => {
                sql.push_bind(at).push("::timestamptz");
            }
            None => {
                sql.push("now()");
            }
        };
        if let Some(age) = self.older_than {
            sql.push(" AND finished_at <= ");
            from_then(sql);
            sql.push(" - make_interval(secs => ")
                .push_bind(age.as_secs_f64())
                .push(")");
        }
        if let Some(age) = self.newer_than {
            sql.push(" AND finished_at >= ");
            from_then(sql);
            sql.push(" - make_interval(secs => ")
                .push_bind(age.as_secs_f64())
                .push(")");
        }
        if let Some(at) = self.died_at_most {
            sql.push(" AND finished_at <= ").push_bind(at);
        }
    }
}

/// DeadJob is a job that exhausted its attempts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct DeadJob {
    pub id: i64,
    pub queue: String,
    /// The job's logical identity, also its idempotency key toward providers.
    pub logical_key: String,
    /// Attempts made in its last round.
    pub attempt: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    /// When its last attempt failed.
    pub died_at: DateTime<Utc>,
    /// The error of its last attempt.
    pub last_error: Option<String>,
}

/// JobDetail is everything known about one job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct JobDetail {
    pub id: i64,
    pub queue: String,
    /// The job's logical identity, also its idempotency key toward providers.
    pub logical_key: String,
    /// One of `pending`, `running`, `completed`, `dead`, `discarded`.
    pub state: String,
    /// Attempts started in the current round.
    pub attempt: i32,
    pub max_attempts: i32,
    /// When the job may next run.
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it completed, died or was discarded.
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker running it, while it runs.
    pub locked_by: Option<String>,
    /// The job's payload, as its handler reads it.
    pub payload: serde_json::Value,
    /// Every recorded failure, oldest first: `{attempt, at, kind, error}`.
    pub errors: serde_json::Value,
}

/// QueueStats is the state of one queue right now.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Jobs due now, waiting for a worker.
    pub pending: i64,
    /// Jobs running on a worker.
    pub running: i64,
    /// Jobs waiting for a later time: retries in backoff and deferred jobs.
    pub scheduled: i64,
    /// Jobs that exhausted their attempts.
    pub dead: i64,
    /// Seconds the longest-waiting due job has waited; 0 when none is due.
    pub oldest_pending_age_seconds: f64,
    /// Whether ops have paused the queue: workers fetch nothing from it until it is resumed.
    pub paused: bool,
    /// Jobs completed in the last minute.
    pub completed_last_minute: i64,
    /// Jobs completed in the last 5 minutes.
    pub completed_last_5_minutes: i64,
    /// Jobs completed in the last hour.
    pub completed_last_hour: i64,
    /// Throughput: jobs completed a second, over the last 5 minutes.
    pub completed_per_second: f64,
}

/// Change says what a retry or discard of one job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Done,
    NotFound,
    /// The job is in a state the change does not apply to.
    WrongState(String),
    /// A retry of a job of [`KEYED_QUEUES`] this old could repeat its Stripe call: Stripe may
    /// have forgotten its idempotency key.
    PastKeyMemory {
        queue: String,
        age: Duration,
    },
}

/// The most dead jobs one listing returns.
pub const LIST_LIMIT_MAX: i64 = 500;

/// Statistics for every queue, including empty ones. The completed counts read the last hour's
/// completed jobs (by the `finished_at` index); finished jobs older than that are not read.
pub async fn queue_stats(pool: &PgPool) -> Result<Vec<QueueStats>, sqlx::Error> {
    let names: Vec<&str> = Queue::ALL.iter().map(|q| q.name()).collect();
    sqlx::query_as(
        "WITH open AS (
             SELECT q.queue, q.ord,
                    count(*) FILTER (WHERE j.state = 'pending' AND j.run_at <= now()) AS pending,
                    count(*) FILTER (WHERE j.state = 'running') AS running,
                    count(*) FILTER (WHERE j.state = 'pending' AND j.run_at > now()) AS scheduled,
                    count(*) FILTER (WHERE j.state = 'dead') AS dead,
                    coalesce(extract(epoch FROM now() - min(j.run_at)
                             FILTER (WHERE j.state = 'pending' AND j.run_at <= now()))::float8, 0)
                        AS oldest_pending_age_seconds
             FROM unnest($1::text[]) WITH ORDINALITY AS q (queue, ord)
             LEFT JOIN jobs j ON j.queue = q.queue AND j.state IN ('pending', 'running', 'dead')
             GROUP BY q.queue, q.ord
         ), done AS (
             SELECT queue,
                    count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS last_minute,
                    count(*) FILTER (WHERE finished_at > now() - interval '5 minutes') AS last_5_minutes,
                    count(*) AS last_hour
             FROM jobs
             WHERE state = 'completed' AND finished_at > now() - interval '1 hour'
             GROUP BY queue
         )
         SELECT open.queue, pending, running, scheduled, dead, oldest_pending_age_seconds,
                EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = open.queue) AS paused,
                coalesce(last_minute, 0) AS completed_last_minute,
                coalesce(last_5_minutes, 0) AS completed_last_5_minutes,
                coalesce(last_hour, 0) AS completed_last_hour,
                coalesce(last_5_minutes, 0) / 300.0::float8 AS completed_per_second
         FROM open LEFT JOIN done USING (queue)
         ORDER BY open.ord",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
}

/// Pauses `queue`: from their next fetch no worker process takes its jobs, until [`resume`].
/// Jobs running now finish; new jobs are still enqueued. Returns false when it was paused already.
pub async fn pause(pool: &PgPool, queue: Queue) -> Result<bool, sqlx::Error> {
    let paused = sqlx::query("INSERT INTO queue_pauses (queue) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(queue.name())
        .execute(pool)
        .await?;
    Ok(paused.rows_affected() == 1)
}

/// Resumes a paused `queue` and wakes the workers. Returns false when it was not paused.
pub async fn resume(pool: &PgPool, queue: Queue) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let resumed = sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
        .bind(queue.name())
        .execute(&mut *tx)
        .await?;
    if resumed.rows_affected() == 1 {
        wake_workers(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(resumed.rows_affected() == 1)
}

/// Dead jobs matching `filter`, most recently dead first, at most `limit`, before id `before`
/// (the last id of the previous page) when given.
pub async fn list_dead(
    pool: &PgPool,
    filter: &DeadFilter,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<DeadJob>, sqlx::Error> {
    let mut sql = QueryBuilder::new(
        "SELECT id, queue, logical_key, attempt, max_attempts, created_at, finished_at AS died_at,
                errors -> -1 ->> 'error' AS last_error
         FROM jobs",
    );
    filter.push_where(&mut sql);
    if let Some(before) = before {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(limit.clamp(1, LIST_LIMIT_MAX));
    sql.build_query_as().fetch_all(pool).await
}

/// The states a job can be in.
pub const STATES: [&str; 5] = ["pending", "running", "completed", "dead", "discarded"];

/// JobFilter selects jobs in any state; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<Queue>,
    /// One of [`STATES`].
    pub state: Option<&'static str>,
    /// Only the job of this logical key (its idempotency key: `billing_request:12`, …).
    pub logical_key: Option<String>,
    /// Only jobs whose payload contains this JSON object (`{"user_id": 42}`), as `@>` does.
    pub payload: Option<serde_json::Value>,
}

/// JobSummary is one job of a listing.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct JobSummary {
    pub id: i64,
    pub queue: String,
    /// The job's logical identity, also its idempotency key toward providers.
    pub logical_key: String,
    /// One of `pending`, `running`, `completed`, `dead`, `discarded`.
    pub state: String,
    /// Attempts started in the current round.
    pub attempt: i32,
    pub max_attempts: i32,
    /// When the job may next run.
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it completed, died or was discarded.
    pub finished_at: Option<DateTime<Utc>>,
    /// The error of its last failed attempt, if any.
    pub last_error: Option<String>,
}

/// Jobs matching `filter` in any state, newest first, at most `limit`, before id `before` (the
/// last id of the previous page) when given.
pub async fn list(
    pool: &PgPool,
    filter: &JobFilter,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<JobSummary>, sqlx::Error> {
    let mut sql = QueryBuilder::new(
        "SELECT id, queue, logical_key, state, attempt, max_attempts, run_at, created_at, finished_at,
                errors -> -1 ->> 'error' AS last_error
         FROM jobs WHERE true",
    );
    if let Some(queue) = filter.queue {
        sql.push(" AND queue = ").push_bind(queue.name());
    }
    if let Some(state) = filter.state {
        sql.push(" AND state = ").push_bind(state);
    }
    if let Some(key) = &filter.logical_key {
        sql.push(" AND logical_key = ").push_bind(key.clone());
    }
    if let Some(payload) = &filter.payload {
        sql.push(" AND payload @> ").push_bind(payload.clone());
    }
    if let Some(before) = before {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(limit.clamp(1, LIST_LIMIT_MAX));
    sql.build_query_as().fetch_all(pool).await
}

/// Everything about job `id`, in any state.
pub async fn show(pool: &PgPool, id: i64) -> Result<Option<JobDetail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, queue, logical_key, state, attempt, max_attempts, run_at, created_at, finished_at,
                locked_by, payload, errors
         FROM jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The SET clause of a retry: due now with a fresh round of attempts; its history is kept.
const RETRY_SET: &str = "UPDATE jobs SET state = 'pending', run_at = now(), attempt = 0, finished_at = NULL";

/// The queues whose jobs call Stripe under an idempotency key, which Stripe remembers for 24
/// hours: a retry after that may repeat the call (a second refund, customer or session).
pub const KEYED_QUEUES: [Queue; 2] = [Queue::Checkout, Queue::Refunds];

/// How old a job of [`KEYED_QUEUES`] may be and still be retried without saying so: Stripe keeps
/// idempotency keys for at least 24 hours, and an hour less leaves room for clocks.
pub const KEY_MEMORY: Duration = Duration::from_secs(23 * 3600);

/// Keeps a retry off jobs older than [`KEY_MEMORY`] in [`KEYED_QUEUES`], unless `past_key_memory`.
fn push_key_memory(sql: &mut QueryBuilder<Postgres>, past_key_memory: bool) {
    if !past_key_memory {
        sql.push(" AND NOT ");
        push_past_key_memory(sql);
    }
}

/// Whether a job is of [`KEYED_QUEUES`] and older than [`KEY_MEMORY`], as a SQL condition.
fn push_past_key_memory(sql: &mut QueryBuilder<Postgres>) {
    let keyed: Vec<&str> = KEYED_QUEUES.iter().map(|q| q.name()).collect();
    sql.push("(queue = ANY(")
        .push_bind(keyed)
        .push(") AND created_at < now() - make_interval(secs => ")
        .push_bind(KEY_MEMORY.as_secs_f64())
        .push("))");
}

/// Why job `id` of `queue`, `age` old, was not retried, for ops; `how` says how to insist.
pub fn past_key_memory(id: i64, queue: &str, age: Duration, how: &str) -> String {
    format!(
        "job {id} ({queue}) was created {} h ago, and Stripe keeps idempotency keys for 24 h: a retry \
         could repeat its call. Check at Stripe that the call was not made (a refund job also looks \
         for its refund by our metadata before it makes one), then retry with {how}",
        age.as_secs() / 3600
    )
}

/// Puts dead job `id` back in its queue, due now, with a fresh round of attempts. A job of
/// [`KEYED_QUEUES`] older than [`KEY_MEMORY`] is retried only with `past_key_memory`, said by
/// someone who checked at Stripe that the call was not made (a refund job looks for its refund
/// by our metadata itself before it makes one again).
pub async fn retry(pool: &PgPool, id: i64, past_key_memory: bool) -> Result<Change, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut sql = QueryBuilder::new(RETRY_SET);
    sql.push(" WHERE state = 'dead' AND id = ").push_bind(id);
    push_key_memory(&mut sql, past_key_memory);
    let changed = sql.build().execute(&mut *tx).await?;
    if changed.rows_affected() == 1 {
        wake_workers(&mut tx).await?;
    }
    let change = change_of(&mut tx, id, changed.rows_affected()).await?;
    tx.commit().await?;
    Ok(change)
}

/// Bulk is what a bulk retry or discard did, or with a dry run would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bulk {
    /// Jobs changed (or that would be).
    pub count: u64,
    /// Matching jobs a retry left dead (or would): of [`KEYED_QUEUES`], older than [`KEY_MEMORY`].
    pub skipped_past_key_memory: u64,
}

/// How many jobs a bulk retry or discard changes per transaction, so that one over a big backlog
/// holds no more row locks than this at once and the workers start on its first batch at once.
pub const BULK_BATCH: i64 = 1000;

/// Puts every dead job matching `filter` back in its queue, or with `dry_run` only counts them.
/// Jobs of [`KEYED_QUEUES`] older than [`KEY_MEMORY`] stay dead unless `past_key_memory`, and
/// are counted as skipped. Changes [`BULK_BATCH`] jobs per transaction, calling `on_batch` with
/// the count so far after each batch that changed any.
pub async fn retry_matching(
    pool: &PgPool,
    filter: &DeadFilter,
    past_key_memory: bool,
    dry_run: bool,
    on_batch: impl FnMut(u64) + Send,
) -> Result<Bulk, sqlx::Error> {
    let mut counting = QueryBuilder::new("SELECT count(*), count(*) FILTER (WHERE ");
    push_past_key_memory(&mut counting);
    counting.push(") FROM jobs");
    filter.push_where(&mut counting);
    let (matching, old): (i64, i64) = counting.build_query_as().fetch_one(pool).await?;
    let skipped_past_key_memory = if past_key_memory { 0 } else { old as u64 };
    if dry_run {
        return Ok(Bulk {
            count: matching as u64 - skipped_past_key_memory,
            skipped_past_key_memory,
        });
    }
    let count = in_batches(pool, BulkChange::Retry { past_key_memory }, filter, on_batch).await?;
    Ok(Bulk {
        count,
        skipped_past_key_memory,
    })
}

/// The database's clock now: what jobs' `finished_at` is written by, so a bound on it
/// ([`DeadFilter::died_at_most`]) is on the same clock.
pub async fn database_now(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}

/// BulkChange is what a bulk action does to each dead job it picks.
#[derive(Debug, Clone, Copy)]
enum BulkChange {
    Retry { past_key_memory: bool },
    Discard,
}

/// Applies `change` to the dead jobs matching `filter` when it starts, [`BULK_BATCH`] at a time
/// in id order, and returns how many it changed. The ids are paged (after the last one a batch
/// picked, up to the highest matching at the start), so a job that dies again while the change
/// runs (a retried job failing at once) is not taken twice, and a batch that changes fewer than
/// it picked (a row pruned, or retried by someone else, meanwhile: the UPDATE re-checks
/// `state = 'dead'` on each row it locks) does not end the run early.
async fn in_batches(
    pool: &PgPool,
    change: BulkChange,
    filter: &DeadFilter,
    mut on_batch: impl FnMut(u64) + Send,
) -> Result<u64, sqlx::Error> {
    let selected = |sql: &mut QueryBuilder<Postgres>| {
        filter.push_where(sql);
        if let BulkChange::Retry { past_key_memory } = change {
            push_key_memory(sql, past_key_memory);
        }
    };
    let mut highest = QueryBuilder::new("SELECT max(id) FROM jobs");
    selected(&mut highest);
    let Some(highest): Option<i64> = highest.build_query_scalar().fetch_one(pool).await? else {
        return Ok(0);
    };
    let (mut total, mut after) = (0, 0_i64);
    loop {
        let mut tx = pool.begin().await?;
        let mut sql = QueryBuilder::new("WITH picked AS (SELECT id FROM jobs");
        selected(&mut sql);
        sql.push(" AND id > ")
            .push_bind(after)
            .push(" AND id <= ")
            .push_bind(highest)
            .push(" ORDER BY id LIMIT ")
            .push_bind(BULK_BATCH)
            .push("), changed AS (")
            .push(match change {
                BulkChange::Retry { .. } => RETRY_SET,
                BulkChange::Discard => DISCARD_SET,
            })
            .push(" WHERE state = 'dead' AND id IN (SELECT id FROM picked) RETURNING 1)")
            .push(" SELECT (SELECT max(id) FROM picked), (SELECT count(*) FROM changed)");
        let (last, changed): (Option<i64>, i64) = sql.build_query_as().fetch_one(&mut *tx).await?;
        if changed > 0 && matches!(change, BulkChange::Retry { .. }) {
            wake_workers(&mut tx).await?;
        }
        tx.commit().await?;
        let Some(last) = last else {
            return Ok(total);
        };
        after = last;
        if changed > 0 {
            total += changed as u64;
            on_batch(total);
        }
    }
}

/// The SET clause of a discard: kept for the record, never run, pruned with finished jobs.
pub(crate) const DISCARD_SET: &str = "UPDATE jobs SET state = 'discarded', finished_at = now()";

/// Discards job `id` if it is dead or waiting to run.
pub async fn discard(pool: &PgPool, id: i64) -> Result<Change, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut sql = QueryBuilder::new(DISCARD_SET);
    sql.push(" WHERE state IN ('dead', 'pending') AND id = ").push_bind(id);
    let changed = sql.build().execute(&mut *tx).await?;
    let change = change_of(&mut tx, id, changed.rows_affected()).await?;
    tx.commit().await?;
    Ok(change)
}

/// Discards every dead job matching `filter`, or with `dry_run` only counts them; returns how
/// many. Discards [`BULK_BATCH`] jobs per transaction, calling `on_batch` with the count so far.
pub async fn discard_matching(
    pool: &PgPool,
    filter: &DeadFilter,
    dry_run: bool,
    on_batch: impl FnMut(u64) + Send,
) -> Result<u64, sqlx::Error> {
    if dry_run {
        let mut sql = QueryBuilder::new("SELECT count(*) FROM jobs");
        filter.push_where(&mut sql);
        let n: i64 = sql.build_query_scalar().fetch_one(pool).await?;
        return Ok(n as u64);
    }
    in_batches(pool, BulkChange::Discard, filter, on_batch).await
}

async fn change_of(conn: &mut sqlx::PgConnection, id: i64, rows: u64) -> Result<Change, sqlx::Error> {
    if rows == 1 {
        return Ok(Change::Done);
    }
    let job: Option<(String, String, f64)> =
        sqlx::query_as("SELECT state, queue, extract(epoch FROM now() - created_at)::float8 FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(match job {
        None => Change::NotFound,
        Some((state, queue, age)) if state == "dead" && KEYED_QUEUES.iter().any(|q| q.name() == queue) => {
            Change::PastKeyMemory {
                queue,
                age: Duration::from_secs_f64(age.max(0.0)),
            }
        }
        Some((state, _, _)) => Change::WrongState(state),
    })
}

/// Wakes idle workers: jobs made due by an UPDATE fire no insert trigger.
async fn wake_workers(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify('paygate_jobs', 'retry')")
        .execute(conn)
        .await?;
    Ok(())
}
