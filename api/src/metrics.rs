//! Prometheus metrics of the web process, served by `GET /metrics`.
//!
//! Two sources. HTTP traffic is counted here, by [`HttpMetrics`]. The job pipeline is read from
//! the database at each scrape: queue depths from [`jobs::queue::ops::queue_stats`], and the
//! counters and durations that worker processes flush into `job_metrics` (workers take no HTTP
//! traffic, so the web process serves their numbers). If that read fails the HTTP metrics are
//! still served.
//!
//! The recorder is global to the process and installed at most once, however many apps a
//! process builds (the tests build many).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jobs::metrics::{Counter, DURATION_BUCKETS, Total};
use jobs::queue::Queue;
use jobs::queue::ops::{self, QueueStats};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use sqlx::PgPool;

use crate::telemetry::{Route, UNMATCHED, method_label};

const HTTP_REQUESTS: &str = "http_requests_total";
const HTTP_DURATION: &str = "http_request_duration_seconds";
const HTTP_DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const QUEUE_JOBS: &str = "paygate_queue_jobs";
const QUEUE_OLDEST: &str = "paygate_queue_oldest_pending_age_seconds";
const JOB_DURATION: &str = "paygate_job_duration_seconds";

/// How often histogram samples are folded in between scrapes, so they do not pile up.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long a scrape waits for the database before serving the HTTP metrics alone.
const PIPELINE_READ_TIMEOUT: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder handle, installing the recorder on first use.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &HTTP_DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => describe(),
            Err(err) => tracing::warn!(error = %err, "another metrics recorder is installed; /metrics will miss what it records"),
        }
        let upkeep = handle.clone();
        // A thread rather than a task: the recorder outlives any one tokio runtime.
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "metrics upkeep thread not started; histograms are folded in at scrape only");
        }
        handle
    })
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, route and status.");
    metrics::describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer HTTP requests, by method and route."
    );
    metrics::describe_gauge!(
        QUEUE_JOBS,
        "Jobs by queue and state (pending: due now; scheduled: due later)."
    );
    metrics::describe_gauge!(
        QUEUE_OLDEST,
        Unit::Seconds,
        "How long the longest-waiting due job of each queue has waited."
    );
    for counter in Counter::ALL {
        metrics::describe_counter!(counter_metric(counter), counter_help(counter));
    }
}

fn counter_metric(counter: Counter) -> &'static str {
    match counter {
        Counter::Processed => "paygate_jobs_processed_total",
        Counter::Failed => "paygate_jobs_failed_total",
        Counter::Retried => "paygate_jobs_retried_total",
        Counter::Deferred => "paygate_jobs_deferred_total",
        Counter::Dead => "paygate_jobs_dead_total",
    }
}

fn counter_help(counter: Counter) -> &'static str {
    match counter {
        Counter::Processed => "Job attempts completed by the workers, by queue.",
        Counter::Failed => "Job attempts that failed, by queue.",
        Counter::Retried => "Failed job attempts scheduled for another try, by queue.",
        Counter::Deferred => "Job attempts deferred without counting (rate limits), by queue.",
        Counter::Dead => "Jobs that exhausted their attempts, by queue.",
    }
}

/// HttpMetrics counts and times every request, labelled by method, [`Route`] and status. It
/// runs inside [`RequestLog`](crate::telemetry::RequestLog), which labels the route.
pub struct HttpMetrics;

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = HttpMetricsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        HttpMetricsEndpoint { inner }
    }
}

/// HttpMetricsEndpoint is [`HttpMetrics`] around an endpoint.
pub struct HttpMetricsEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for HttpMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let method = method_label(req.method());
        let route = req
            .data::<Route>()
            .map_or_else(|| Arc::from(UNMATCHED), |r| r.0.clone());
        let start = Instant::now();
        let resp = match self.inner.call(req).await {
            Ok(resp) => resp.into_response(),
            Err(err) => err.into_response(),
        };
        let status = resp.status().as_u16().to_string();
        metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.to_string(), "status" => status)
            .increment(1);
        metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route.to_string())
            .record(start.elapsed().as_secs_f64());
        Ok(resp)
    }
}

/// Pipeline is the job pipeline as the database sees it at one scrape.
struct Pipeline {
    queues: Vec<QueueStats>,
    totals: Vec<Total>,
}

impl Pipeline {
    async fn read(pool: &PgPool) -> Result<Pipeline, sqlx::Error> {
        let queues = ops::queue_stats(pool).await?;
        let totals = jobs::metrics::totals(pool).await?;
        Ok(Pipeline { queues, totals })
    }

    /// Sets the recorder's pipeline gauges and counters.
    fn publish(&self) {
        for q in &self.queues {
            for (state, n) in [
                ("pending", q.pending),
                ("running", q.running),
                ("scheduled", q.scheduled),
                ("dead", q.dead),
            ] {
                metrics::gauge!(QUEUE_JOBS, "queue" => q.queue.clone(), "state" => state).set(n as f64);
            }
            metrics::gauge!(QUEUE_OLDEST, "queue" => q.queue.clone()).set(q.oldest_pending_age_seconds);
        }
        for Total { queue, metric, value } in &self.totals {
            let Some(counter) = Counter::ALL.into_iter().find(|c| c.name() == metric) else {
                continue;
            };
            if queue.parse::<Queue>().is_ok() {
                metrics::counter!(counter_metric(counter), "queue" => queue.clone()).absolute(*value as u64);
            }
        }
    }
}

/// Serialises publish-and-render, so that concurrent scrapes each render what they read.
static SCRAPE: Mutex<()> = Mutex::new(());

/// The text of one scrape.
pub async fn scrape(pool: &PgPool) -> String {
    let handle = install();
    let pipeline = match tokio::time::timeout(PIPELINE_READ_TIMEOUT, Pipeline::read(pool)).await {
        Ok(Ok(pipeline)) => Some(pipeline),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "reading the job pipeline's metrics failed");
            None
        }
        Err(_) => {
            tracing::error!("reading the job pipeline's metrics timed out");
            None
        }
    };
    let mut out = {
        let _serial = SCRAPE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pipeline) = &pipeline {
            pipeline.publish();
        }
        handle.render()
    };
    if let Some(pipeline) = &pipeline {
        render_durations(&pipeline.totals, &mut out);
    }
    out
}

/// One queue's job durations as `job_metrics` stores them.
#[derive(Debug, Default, PartialEq)]
struct Durations {
    count: f64,
    sum_micros: f64,
    /// Cumulative, one per [`DURATION_BUCKETS`] bound.
    buckets: [f64; DURATION_BUCKETS.len()],
}

/// DurationField is a `job_metrics` row of the duration histogram.
enum DurationField {
    Count,
    SumMicros,
    /// The cumulative count of the bucket at this index of [`DURATION_BUCKETS`].
    Bucket(usize),
}

impl DurationField {
    /// The field a metric name stands for; `jobs::metrics` writes buckets as
    /// `duration_le_{bound}` with f64's Display, which parses back exactly.
    fn parse(metric: &str) -> Option<DurationField> {
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

/// Appends the job duration histogram, written by hand because the stored buckets are already
/// cumulative counts, which the recorder's histograms cannot take.
fn render_durations(totals: &[Total], out: &mut String) {
    let mut by_queue: BTreeMap<&str, Durations> = BTreeMap::new();
    for Total { queue, metric, value } in totals {
        if queue.parse::<Queue>().is_err() {
            continue;
        }
        let Some(field) = DurationField::parse(metric) else {
            continue;
        };
        let d = by_queue.entry(queue.as_str()).or_default();
        match field {
            DurationField::Count => d.count = *value,
            DurationField::SumMicros => d.sum_micros = *value,
            DurationField::Bucket(i) => d.buckets[i] = *value,
        }
    }
    if by_queue.is_empty() {
        return;
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "# HELP {JOB_DURATION} How long job attempts took on the workers, by queue."
    );
    let _ = writeln!(out, "# TYPE {JOB_DURATION} histogram");
    for (queue, d) in &by_queue {
        for (bound, n) in DURATION_BUCKETS.iter().zip(&d.buckets) {
            let _ = writeln!(out, "{JOB_DURATION}_bucket{{queue=\"{queue}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{JOB_DURATION}_bucket{{queue=\"{queue}\",le=\"+Inf\"}} {}",
            d.count
        );
        let _ = writeln!(out, "{JOB_DURATION}_sum{{queue=\"{queue}\"}} {}", d.sum_micros / 1e6);
        let _ = writeln!(out, "{JOB_DURATION}_count{{queue=\"{queue}\"}} {}", d.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(queue: &str, metric: &str, value: f64) -> Total {
        Total {
            queue: queue.into(),
            metric: metric.into(),
            value,
        }
    }

    #[test]
    fn job_durations_render_as_a_prometheus_histogram() {
        let rows = [
            row("notifications", "duration_count", 4.0),
            row("notifications", "duration_sum_micros", 1_500_000.0),
            row("notifications", "duration_le_0.005", 1.0),
            row("notifications", "duration_le_1", 3.0),
            row("notifications", "duration_le_30", 4.0),
            row("notifications", "processed", 4.0),
        ];
        let mut out = String::new();
        render_durations(&rows, &mut out);
        assert!(out.starts_with("# HELP paygate_job_duration_seconds "), "{out}");
        assert!(out.contains("# TYPE paygate_job_duration_seconds histogram\n"), "{out}");
        for line in [
            "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"0.005\"} 1\n",
            "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"0.5\"} 0\n",
            "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"1\"} 3\n",
            "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"30\"} 4\n",
            "paygate_job_duration_seconds_bucket{queue=\"notifications\",le=\"+Inf\"} 4\n",
            "paygate_job_duration_seconds_sum{queue=\"notifications\"} 1.5\n",
            "paygate_job_duration_seconds_count{queue=\"notifications\"} 4\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        assert_eq!(out.matches("_bucket{").count(), DURATION_BUCKETS.len() + 1);
    }

    #[test]
    fn the_bucket_names_written_by_workers_are_understood() {
        // jobs::metrics writes `duration_le_{bound}` with f64's Display.
        for bound in DURATION_BUCKETS {
            let name = format!("duration_le_{bound}");
            let mut out = String::new();
            render_durations(&[row("refunds", &name, 7.0)], &mut out);
            assert!(out.contains(&format!("le=\"{bound}\"}} 7\n")), "{name}: {out}");
        }
    }

    #[test]
    fn unknown_queues_and_no_rows_render_nothing() {
        let mut out = String::new();
        render_durations(&[row("nope", "duration_count", 1.0)], &mut out);
        render_durations(&[], &mut out);
        assert_eq!(out, "");
    }
}
