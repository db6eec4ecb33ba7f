//! The worker processes' own figures (CPU, memory, file descriptors, threads), as the web
//! process's `process_*` series give its own.
//!
//! A worker dyno takes no HTTP traffic, so a scrape cannot reach it: each worker process samples
//! itself (through `metrics-process`, which reads `/proc`) every few seconds and writes the
//! sample to `worker_processes`; `/metrics` on the web process serves the samples of the
//! processes heard from within [`FRESH`], labelled by process.

use std::time::Duration;

use sqlx::PgPool;

/// How recent a sample must be to be served: a process silent for longer has stopped.
pub const FRESH: Duration = Duration::from_secs(60);

/// Sample is one process's figures at one moment.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: i64,
    pub virtual_memory_bytes: i64,
    pub open_fds: i64,
    /// The soft limit; 0 when unlimited.
    pub max_fds: i64,
    pub threads: i64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: i64,
}

impl Sample {
    /// This process's figures now, or none where the platform does not give them all (only
    /// Linux is a target).
    pub fn of_this_process() -> Option<Sample> {
        let m = metrics_process::collector::collect();
        let int = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        Some(Sample {
            cpu_seconds: m.cpu_seconds_total?,
            resident_memory_bytes: int(m.resident_memory_bytes)?,
            virtual_memory_bytes: int(m.virtual_memory_bytes)?,
            open_fds: int(m.open_fds)?,
            max_fds: int(m.max_fds)?,
            threads: int(m.threads)?,
            start_time_seconds: int(m.start_time_seconds)?,
        })
    }
}

/// WorkerProcess is a worker process's latest sample.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkerProcess {
    pub process: String,
    #[sqlx(flatten)]
    pub sample: Sample,
}

/// Writes `sample` as `process`'s latest, and deletes the rows of processes silent for a day.
pub async fn record(pool: &PgPool, process: &str, sample: &Sample) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH gone AS (DELETE FROM worker_processes WHERE sampled_at < now() - interval '1 day')
         INSERT INTO worker_processes (process, cpu_seconds, resident_memory_bytes, virtual_memory_bytes,
                                       open_fds, max_fds, threads, start_time_seconds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (process) DO UPDATE SET
             cpu_seconds = excluded.cpu_seconds, resident_memory_bytes = excluded.resident_memory_bytes,
             virtual_memory_bytes = excluded.virtual_memory_bytes, open_fds = excluded.open_fds,
             max_fds = excluded.max_fds, threads = excluded.threads,
             start_time_seconds = excluded.start_time_seconds, sampled_at = now()",
    )
    .bind(process)
    .bind(sample.cpu_seconds)
    .bind(sample.resident_memory_bytes)
    .bind(sample.virtual_memory_bytes)
    .bind(sample.open_fds)
    .bind(sample.max_fds)
    .bind(sample.threads)
    .bind(sample.start_time_seconds)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes `process`'s row, for a clean stop.
pub async fn forget(pool: &PgPool, process: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM worker_processes WHERE process = $1")
        .bind(process)
        .execute(pool)
        .await?;
    Ok(())
}

/// The latest sample of every process heard from within [`FRESH`], by process name.
pub async fn fresh(pool: &PgPool) -> Result<Vec<WorkerProcess>, sqlx::Error> {
    sqlx::query_as(
        "SELECT process, cpu_seconds, resident_memory_bytes, virtual_memory_bytes, open_fds, max_fds, threads,
                start_time_seconds
         FROM worker_processes WHERE sampled_at > now() - make_interval(secs => $1)
         ORDER BY process",
    )
    .bind(FRESH.as_secs_f64())
    .fetch_all(pool)
    .await
}
