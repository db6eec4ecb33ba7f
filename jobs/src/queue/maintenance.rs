//! Keeping the queue healthy: worker heartbeats (sent by [`super::lease`]), rescue of jobs whose
//! worker died, hand-back at shutdown, and pruning of finished jobs. Every worker process runs
//! it; each step is safe to run from many processes at once.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::outcome::ATTEMPT_TIMEOUT;

/// Records worker `name` as alive, taking jobs from `queues`.
pub async fn register_worker(pool: &PgPool, name: &str, queues: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_workers (name, queues) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET queues = excluded.queues, last_seen = now()",
    )
    .bind(name)
    .bind(queues)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that `workers` (all of one process's) are still alive, in one statement. A worker a
/// rescue removed meanwhile is recorded again. See [`super::lease`].
pub async fn heartbeat(conn: &mut PgConnection, workers: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_workers (name, queues) SELECT unnest($1::text[]), '{}'
         ON CONFLICT (name) DO UPDATE SET last_seen = now()",
    )
    .bind(workers)
    .execute(conn)
    .await?;
    Ok(())
}

/// Hands worker `name`'s running jobs back to their queues, due now, without counting the
/// attempt (they did not fail), and removes the worker. For a clean shutdown.
pub async fn hand_back(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET state = 'pending', run_at = now(), attempt = greatest(attempt - 1, 0),
                         locked_by = NULL, locked_at = NULL
         WHERE state = 'running' AND locked_by = $1",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM job_workers WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if n > 0 {
        sqlx::query("SELECT pg_notify('paygate_jobs', 'handed_back')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Hands back the running jobs of workers silent for longer than `worker_timeout`, and of jobs
/// running far longer than any attempt may; a job with no attempts left goes dead. Returns how
/// many jobs it moved.
pub async fn rescue_orphans(pool: &PgPool, worker_timeout: Duration) -> Result<u64, sqlx::Error> {
    let stuck_after = ATTEMPT_TIMEOUT * 2 + worker_timeout;
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "WITH alive AS (
             SELECT name FROM job_workers WHERE last_seen > now() - make_interval(secs => $1)
         )
         UPDATE jobs SET
             state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END,
             finished_at = CASE WHEN attempt >= max_attempts THEN now() END,
             run_at = now(), locked_by = NULL, locked_at = NULL,
             errors = jsonb_path_query_array(errors || jsonb_build_array(jsonb_build_object(
                 'attempt', attempt, 'at', now(), 'kind', 'orphaned',
                 'error', 'worker ' || coalesce(locked_by, '?') || ' stopped while running it')),
                 '$[last - 49 to last]')
         WHERE state = 'running'
           AND (locked_by IS NULL OR locked_by NOT IN (SELECT name FROM alive)
                OR locked_at < now() - make_interval(secs => $2))",
    )
    .bind(worker_timeout.as_secs_f64())
    .bind(stuck_after.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM job_workers WHERE last_seen <= now() - make_interval(secs => $1)")
        .bind(worker_timeout.as_secs_f64())
        .execute(&mut *tx)
        .await?;
    if n > 0 {
        sqlx::query("SELECT pg_notify('paygate_jobs', 'rescued')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Deletes completed and discarded jobs finished more than `retention` ago, in batches so that no
/// statement holds many locks; returns how many. Their ledger rows stay, so a late duplicate
/// enqueue of the same logical job is still refused.
pub async fn prune_finished(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    crate::db::delete_in_batches(
        pool,
        "DELETE FROM jobs WHERE id IN (
             SELECT id FROM jobs
             WHERE state IN ('completed', 'discarded') AND finished_at < now() - make_interval(secs => $1)
             LIMIT $2)",
        retention,
    )
    .await
}
