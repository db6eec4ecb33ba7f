//! Prometheus metrics of the web process, served by `GET /metrics`.
//!
//! Two sources. What this process sees is counted here: HTTP traffic by [`HttpMetrics`], Stripe
//! webhook deliveries ([`stripe_webhook_event`]), checkouts started ([`checkout_started`]),
//! Telegram webhook deliveries ([`telegram_update`]) and Mini App sign-ins ([`miniapp_session`]).
//! The job pipeline and the business are read from the database, by one scrape at a time and at
//! most every [`FIGURES_MAX_AGE`] ([`DatabaseFigures`]): queue depths
//! from [`jobs::queue::ops::queue_stats`], the counters and durations that worker processes
//! flush into `job_metrics` (workers take no HTTP traffic, so the web process serves their
//! numbers), and the business counters of [`jobs::metrics::counters`] (payments, refunds,
//! `telegram_payments_total{result}`, `telegram_payment_value_total{currency}`). If a
//! read fails, what it would have added is left out and the rest is still served.
//!
//! The recorder is global to the process and installed at most once, however many apps a
//! process builds (the tests build many). Every name and help text is [`jobs::metrics`]'s.
//!
//! # Layout
//! - this module: the recorder, and what this process counts.
//! - [`scrape`]: one scrape: the pipeline and business numbers read from the database (cached),
//!   rendered after the recorder's.

mod scrape;
#[cfg(test)]
mod tests;

pub use scrape::{DatabaseFigures, FIGURES_MAX_AGE, scrape};

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jobs::metrics::{
    BUILD_INFO, CHECKOUT_STARTED, Counter, HTTP_DURATION, HTTP_REQUESTS, MINIAPP_EXCHANGE_LATENCY, MINIAPP_SESSIONS,
    QUEUE_JOBS, QUEUE_OLDEST, QUEUE_PAUSED, STRIPE_WEBHOOK_EVENTS, TELEGRAM_UPDATES,
};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::telemetry::{Route, UNMATCHED, method_label};

const HTTP_DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histogram samples are folded in between scrapes, so they do not pile up.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The version and commit this process was built from: the package version, and Heroku's
/// `SOURCE_VERSION` (the commit being built) when the build had it.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const BUILD_COMMIT: &str = match option_env!("SOURCE_VERSION") {
    Some(commit) => commit,
    None => "unknown",
};

/// This process's CPU, memory, file descriptors and threads, read at every scrape.
pub(crate) fn process_metrics() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The process's recorder handle, installing the recorder on first use.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.name.into()), &HTTP_DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(Matcher::Full(MINIAPP_EXCHANGE_LATENCY.name.into()), &HTTP_DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => {
                describe();
                metrics::gauge!(BUILD_INFO.name, "version" => BUILD_VERSION, "commit" => BUILD_COMMIT).set(1.0);
            }
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
    for m in [
        HTTP_REQUESTS,
        STRIPE_WEBHOOK_EVENTS,
        CHECKOUT_STARTED,
        MINIAPP_SESSIONS,
        TELEGRAM_UPDATES,
    ] {
        metrics::describe_counter!(m.name, m.help);
    }
    for counter in Counter::ALL {
        metrics::describe_counter!(counter.metric().name, counter.metric().help);
    }
    metrics::describe_gauge!(QUEUE_JOBS.name, QUEUE_JOBS.help);
    metrics::describe_gauge!(QUEUE_PAUSED.name, QUEUE_PAUSED.help);
    metrics::describe_gauge!(BUILD_INFO.name, BUILD_INFO.help);
    process_metrics().describe();
    metrics::describe_gauge!(QUEUE_OLDEST.name, Unit::Seconds, QUEUE_OLDEST.help);
    for m in [HTTP_DURATION, MINIAPP_EXCHANGE_LATENCY] {
        metrics::describe_histogram!(m.name, Unit::Seconds, m.help);
    }
}

/// Counts a Mini App sign-in; an issued one also records how long the exchange took.
pub fn miniapp_session(issued: bool, took: Duration) {
    let result = if issued { "issued" } else { "refused" };
    metrics::counter!(MINIAPP_SESSIONS.name, "result" => result).increment(1);
    if issued {
        metrics::histogram!(MINIAPP_EXCHANGE_LATENCY.name).record(took.as_secs_f64());
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
    metrics::counter!(TELEGRAM_UPDATES.name, "kind" => kind, "outcome" => outcome).increment(1);
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
    metrics::counter!(STRIPE_WEBHOOK_EVENTS.name, "type" => event_type, "outcome" => outcome.label()).increment(1);
}

/// The label of an event type (or update kind): the type itself when it looks like one of
/// Stripe's (`^[a-z_.]{1,64}$`), else `other`, so that no sender can grow the label set without bound
/// through odd strings.
pub(crate) fn event_type_label(event_type: &str) -> &str {
    let looks_like_stripes = (1..=64).contains(&event_type.len())
        && event_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
    if looks_like_stripes { event_type } else { "other" }
}

/// Counts a checkout request stored for `plan`, a code from the catalogue.
pub fn checkout_started(plan: &str) {
    metrics::counter!(CHECKOUT_STARTED.name, "plan" => plan.to_string()).increment(1);
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
        metrics::counter!(HTTP_REQUESTS.name, "method" => method, "route" => route.to_string(), "status" => status)
            .increment(1);
        metrics::histogram!(HTTP_DURATION.name, "method" => method, "route" => route.to_string())
            .record(start.elapsed().as_secs_f64());
        Ok(resp)
    }
}
