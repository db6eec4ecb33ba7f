//! Job counters and durations of a worker process, flushed to `job_metrics` for the web process
//! to serve.
//!
//! Worker dynos take no HTTP traffic, so a scrape cannot reach them: each worker counts in
//! memory and adds its counts to `job_metrics` every few seconds; `/metrics` on the web process
//! reads the sums. Counts only grow, so they keep Prometheus counter semantics across restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use super::{self as metrics, Metric};
use crate::queue::Queue;

/// Upper bounds (seconds) of the job duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Counter is one of the job counters, by its `job_metrics.metric` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Attempts that completed.
    Processed,
    /// Attempts that failed, whatever came next.
    Failed,
    /// Failed attempts scheduled for another try.
    Retried,
    /// Attempts deferred without counting (rate limits, `retry_after`).
    Deferred,
    /// Jobs that went dead.
    Dead,
}

impl Counter {
    pub const ALL: [Counter; 5] = [
        Counter::Processed,
        Counter::Failed,
        Counter::Retried,
        Counter::Deferred,
        Counter::Dead,
    ];

    /// The counter's name in `job_metrics`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Processed => "processed",
            Counter::Failed => "failed",
            Counter::Retried => "retried",
            Counter::Deferred => "deferred",
            Counter::Dead => "dead",
        }
    }

    /// The counter as `/metrics` serves it, by queue.
    pub const fn metric(self) -> Metric {
        match self {
            Counter::Processed => metrics::JOBS_PROCESSED,
            Counter::Failed => metrics::JOBS_FAILED,
            Counter::Retried => metrics::JOBS_RETRIED,
            Counter::Deferred => metrics::JOBS_DEFERRED,
            Counter::Dead => metrics::JOBS_DEAD,
        }
    }
}

/// DurationField is a `job_metrics` row of the duration histogram, as [`JobStats::flush`] names
/// it: `duration_count`, `duration_sum_micros`, and `duration_le_{bound}` per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationField {
    Count,
    SumMicros,
    /// The cumulative count of the bucket at this index of [`DURATION_BUCKETS`].
    Bucket(usize),
}

impl DurationField {
    /// The row name of this field.
    pub fn name(self) -> String {
        match self {
            DurationField::Count => "duration_count".into(),
            DurationField::SumMicros => "duration_sum_micros".into(),
            DurationField::Bucket(i) => format!("duration_le_{}", DURATION_BUCKETS[i]),
        }
    }

    /// The field a row name stands for; bucket bounds are written with f64's Display, which
    /// parses back exactly.
    pub fn parse(metric: &str) -> Option<DurationField> {
        match metric {
            "duration_count" => Some(DurationField::Count),
            "duration_sum_micros" => Some(DurationField::SumMicros),
            other => {
                let bound: f64 = other.strip_prefix("duration_le_")?.parse().ok()?;
                DURATION_BUCKETS
                    .iter()
                    .position(|b| *b == bound)
                    .map(DurationField::Bucket)
            }
        }
    }
}

#[derive(Debug, Default)]
struct QueueStats {
    counters: [AtomicU64; Counter::ALL.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    // Cumulative, as Prometheus wants them: bucket i counts durations <= DURATION_BUCKETS[i].
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
}

/// JobStats counts what one worker process did, per queue, until the next flush.
#[derive(Debug, Default)]
pub struct JobStats {
    queues: [QueueStats; Queue::ALL.len()],
}

impl JobStats {
    fn of(&self, queue: Queue) -> &QueueStats {
        &self.queues[Queue::ALL
            .iter()
            .position(|q| *q == queue)
            .expect("every queue is in ALL")]
    }

    fn add(&self, queue: Queue, counter: Counter) {
        let i = Counter::ALL
            .iter()
            .position(|c| *c == counter)
            .expect("every counter is in ALL");
        self.of(queue).counters[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt completed.
    pub fn processed(&self, queue: Queue) {
        self.add(queue, Counter::Processed);
    }

    /// One attempt failed and the job was scheduled again.
    pub fn retried(&self, queue: Queue) {
        self.add(queue, Counter::Failed);
        self.add(queue, Counter::Retried);
    }

    /// One attempt was deferred without counting.
    pub fn deferred(&self, queue: Queue) {
        self.add(queue, Counter::Deferred);
    }

    /// One attempt failed and the job went dead.
    pub fn dead(&self, queue: Queue) {
        self.add(queue, Counter::Failed);
        self.add(queue, Counter::Dead);
    }

    /// One attempt took `elapsed`.
    pub fn observe_duration(&self, queue: Queue, elapsed: Duration) {
        let q = self.of(queue);
        q.duration_count.fetch_add(1, Ordering::Relaxed);
        q.duration_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&q.duration_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds everything counted since the last flush to `job_metrics`. On failure the counts are
    /// kept for the next flush.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut taken: Vec<Taken<'_>> = Vec::new();
        for (queue, q) in Queue::ALL.into_iter().zip(&self.queues) {
            for (counter, cell) in Counter::ALL.iter().zip(&q.counters) {
                take(&mut taken, cell, queue, counter.name().to_string());
            }
            take(&mut taken, &q.duration_count, queue, DurationField::Count.name());
            take(
                &mut taken,
                &q.duration_sum_micros,
                queue,
                DurationField::SumMicros.name(),
            );
            for (i, cell) in q.duration_buckets.iter().enumerate() {
                take(&mut taken, cell, queue, DurationField::Bucket(i).name());
            }
        }
        if taken.is_empty() {
            return Ok(());
        }
        let queues: Vec<&str> = taken.iter().map(|t| t.1.name()).collect();
        let metrics: Vec<&str> = taken.iter().map(|t| t.2.as_str()).collect();
        let values: Vec<f64> = taken.iter().map(|t| t.3 as f64).collect();
        let result = sqlx::query(
            "INSERT INTO job_metrics (queue, metric, value)
             SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
             ON CONFLICT (queue, metric) DO UPDATE SET value = job_metrics.value + excluded.value",
        )
        .bind(&queues)
        .bind(&metrics)
        .bind(&values)
        .execute(pool)
        .await;
        if result.is_err() {
            for (cell, _, _, n) in &taken {
                cell.fetch_add(*n, Ordering::Relaxed);
            }
        }
        result.map(|_| ())
    }
}

/// Total is one `job_metrics` row: everything every worker process has flushed for one queue and
/// metric.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Total {
    pub queue: String,
    pub metric: String,
    pub value: f64,
}

/// Every total in `job_metrics`.
pub async fn totals(pool: &PgPool) -> Result<Vec<Total>, sqlx::Error> {
    sqlx::query_as("SELECT queue, metric, value FROM job_metrics")
        .fetch_all(pool)
        .await
}

/// A count taken out of its cell for a flush: (cell, queue, metric, count).
type Taken<'a> = (&'a AtomicU64, Queue, String, u64);

fn take<'a>(taken: &mut Vec<Taken<'a>>, cell: &'a AtomicU64, queue: Queue, metric: String) {
    let n = cell.swap(0, Ordering::Relaxed);
    if n > 0 {
        taken.push((cell, queue, metric, n));
    }
}
