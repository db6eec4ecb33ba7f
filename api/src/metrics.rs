//! Prometheus metrics of the web process, served by `GET /metrics`.
//!
//! Two sources. What this process sees is counted here: HTTP traffic by [`HttpMetrics`], Stripe
//! webhook deliveries ([`stripe_webhook_event`]), checkouts started ([`checkout_started`]),
//! Telegram webhook deliveries ([`telegram_update`]) and Mini App sign-ins ([`miniapp_session`]).
//! The job pipeline and the business is read from the database at each scrape: queue depths
//! from [`jobs::queue::ops::queue_stats`], the counters and durations that worker processes
//! flush into `job_metrics` (workers take no HTTP traffic, so the web process serves their
//! numbers), and the business counters of [`jobs::billing::counters`] (payments, refunds,
//! `telegram_payments_total{result}`, `telegram_payment_value_total{currency}`). If a
//! read fails, what it would have added is left out and the rest is still served.
//!
//! The recorder is global to the process and installed at most once, however many apps a
//! process builds (the tests build many).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jobs::billing::counters::{self as billing_counters, Counter as BillingCounter};
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
const STRIPE_WEBHOOK_EVENTS: &str = "stripe_webhook_events_total";
const CHECKOUT_STARTED: &str = "billing_checkout_started_total";
const MINIAPP_SESSIONS: &str = "miniapp_sessions_total";
const MINIAPP_EXCHANGE_LATENCY: &str = "miniapp_exchange_latency_seconds";
const TELEGRAM_UPDATES: &str = "telegram_updates_total";

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
            .set_buckets_for_metric(Matcher::Full(MINIAPP_EXCHANGE_LATENCY.into()), &HTTP_DURATION_BUCKETS)
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
    metrics::describe_counter!(
        STRIPE_WEBHOOK_EVENTS,
        "Stripe webhook deliveries, by event type and outcome (verified, duplicate, rejected)."
    );
    metrics::describe_counter!(CHECKOUT_STARTED, "Checkout requests stored, by plan.");
    metrics::describe_counter!(MINIAPP_SESSIONS, "Mini App sign-ins, by result (issued, refused).");
    metrics::describe_histogram!(
        MINIAPP_EXCHANGE_LATENCY,
        Unit::Seconds,
        "Time to exchange Mini App initData for a token, sign-ins that issued one."
    );
    metrics::describe_counter!(
        TELEGRAM_UPDATES,
        "Telegram webhook deliveries, by update kind and outcome (accepted, duplicate, rejected)."
    );
}

/// Counts a Mini App sign-in; an issued one also records how long the exchange took.
pub fn miniapp_session(issued: bool, took: Duration) {
    let result = if issued { "issued" } else { "refused" };
    metrics::counter!(MINIAPP_SESSIONS, "result" => result).increment(1);
    if issued {
        metrics::histogram!(MINIAPP_EXCHANGE_LATENCY).record(took.as_secs_f64());
    }
}

/// Counts a Telegram webhook delivery. `kind` is the update's field name for an accepted one;
/// a refused delivery's body is not trusted, so its kind is `unknown`.
pub fn telegram_update(kind: Option<&str>, outcome: WebhookOutcome) {
    let kind = kind.map_or("unknown", event_type_label).to_string();
    let outcome = match outcome {
        WebhookOutcome::Verified => "accepted",
        other => other.label(),
    };
    metrics::counter!(TELEGRAM_UPDATES, "kind" => kind, "outcome" => outcome).increment(1);
}

/// WebhookOutcome is what became of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Verified and stored.
    Verified,
    /// Refused: no or a wrong signature, or not an event.
    Rejected,
    /// Verified, and already stored by an earlier delivery.
    Duplicate,
}

impl WebhookOutcome {
    fn label(self) -> &'static str {
        match self {
            WebhookOutcome::Verified => "verified",
            WebhookOutcome::Rejected => "rejected",
            WebhookOutcome::Duplicate => "duplicate",
        }
    }
}

/// Counts a Stripe webhook delivery. `event_type` is the type of a verified event; a refused
/// delivery's body is not trusted, so its type is `unknown`.
pub fn stripe_webhook_event(event_type: Option<&str>, outcome: WebhookOutcome) {
    let event_type = event_type.map_or("unknown", event_type_label).to_string();
    metrics::counter!(STRIPE_WEBHOOK_EVENTS, "type" => event_type, "outcome" => outcome.label()).increment(1);
}

/// The label of an event type (or update kind): the type itself when it looks like one of
/// Stripe's (`^[a-z_.]{1,64}$`), else `other`, so that no sender can grow the label set without bound
/// through odd strings.
fn event_type_label(event_type: &str) -> &str {
    let looks_like_stripes = (1..=64).contains(&event_type.len())
        && event_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
    if looks_like_stripes { event_type } else { "other" }
}

/// Counts a checkout request stored for `plan`, a code from the catalogue.
pub fn checkout_started(plan: &str) {
    metrics::counter!(CHECKOUT_STARTED, "plan" => plan.to_string()).increment(1);
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

/// `read` within [`PIPELINE_READ_TIMEOUT`], or `None` after logging why not.
async fn read_or_log<T>(what: &str, read: impl Future<Output = Result<T, sqlx::Error>>) -> Option<T> {
    match tokio::time::timeout(PIPELINE_READ_TIMEOUT, read).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "reading the {what} failed");
            None
        }
        Err(_) => {
            tracing::error!("reading the {what} timed out");
            None
        }
    }
}

/// The text of one scrape.
pub async fn scrape(pool: &PgPool) -> String {
    let handle = install();
    let (pipeline, business) = tokio::join!(
        read_or_log("job pipeline's metrics", Pipeline::read(pool)),
        read_or_log("billing counters", billing_counters::all(pool)),
    );
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
    if let Some(counters) = &business {
        render_counters(counters, &mut out);
    }
    out
}

/// Appends the business counters as Prometheus counters, one `# TYPE` per name. A row whose
/// name or labels would not render as valid exposition text is left out and logged, and so is
/// a name the recorder already rendered (two families of one name would break the scrape).
fn render_counters(counters: &[BillingCounter], out: &mut String) {
    let mut typed: Option<&str> = None;
    for BillingCounter { name, labels, value } in counters {
        if !valid_metric_name(name) || !valid_labels(labels) {
            tracing::warn!(name = %name.escape_debug(), "a billing counter that cannot be rendered is left out");
            continue;
        }
        if typed != Some(name.as_str()) {
            if out.contains(&format!("# TYPE {name} ")) {
                tracing::warn!(name = %name, "a billing counter has the name of a process metric; left out");
                continue;
            }
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let _ = writeln!(out, "# TYPE {name} counter");
            typed = Some(name);
        }
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Whether `name` is a Prometheus metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Whether `labels` is what goes inside a series' braces: empty, or `name="value"` pairs
/// separated by commas, values escaped as the exposition format escapes them (`\\`, `\"`,
/// `\n`) and on one line.
fn valid_labels(labels: &str) -> bool {
    let mut rest = labels;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !valid_metric_name(name) || name.contains(':') {
            return false;
        }
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, '\\' | '"' | 'n') => escaped = false,
                (true, _) | (false, '\n' | '\r') => return false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, _) => {}
            }
        }
        let Some(end) = end else { return false };
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            if next.is_empty() {
                return false;
            }
            rest = next;
        } else if !rest.is_empty() {
            return false;
        }
    }
    true
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

    fn counter(name: &str, labels: &str, value: f64) -> BillingCounter {
        BillingCounter {
            name: name.into(),
            labels: labels.into(),
            value,
        }
    }

    #[test]
    fn billing_counters_render_with_one_type_line_per_name() {
        let mut out = "# TYPE http_requests_total counter\nhttp_requests_total{a=\"b\"} 1".to_string();
        render_counters(
            &[
                counter("billing_payments_total", "status=\"disputed\"", 2.0),
                counter("billing_payments_total", "status=\"paid\"", 5.0),
                counter("billing_refunds_total", "", 1.0),
                counter("http_requests_total", "x=\"y\"", 9.0),
                counter("bad name", "", 1.0),
                counter("billing_bad_total", "status=\"a\nb\"", 1.0),
            ],
            &mut out,
        );
        assert_eq!(
            out,
            "# TYPE http_requests_total counter\nhttp_requests_total{a=\"b\"} 1\n\
             # TYPE billing_payments_total counter\n\
             billing_payments_total{status=\"disputed\"} 2\n\
             billing_payments_total{status=\"paid\"} 5\n\
             # TYPE billing_refunds_total counter\n\
             billing_refunds_total 1\n"
        );
    }

    #[test]
    fn only_well_formed_label_sets_pass() {
        for good in [
            "",
            "status=\"paid\"",
            "a=\"1\",b_2=\"x y\"",
            "a=\"quote \\\" and backslash \\\\ and \\n\"",
            "a=\"\"",
        ] {
            assert!(valid_labels(good), "{good:?}");
        }
        for bad in [
            "status",
            "status=paid",
            "status=\"paid",
            "status=\"paid\",",
            "status=\"paid\" x",
            "1a=\"x\"",
            "a:b=\"x\"",
            "a=\"line\nbreak\"",
            "a=\"bad \\x escape\"",
            "a=\"x\"}} evil{b=\"y\"",
        ] {
            assert!(!valid_labels(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_stripe_like_event_types_become_labels() {
        assert_eq!(
            event_type_label("checkout.session.completed"),
            "checkout.session.completed"
        );
        assert_eq!(event_type_label("invoice_payment.paid"), "invoice_payment.paid");
        for odd in [
            "",
            "Invoice.Paid",
            "invoice.paid\"}",
            "x".repeat(65).as_str(),
            "v2.core.event1",
        ] {
            assert_eq!(event_type_label(odd), "other", "{odd:?}");
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
