//! Metrics: every name `/metrics` serves, with its help text, and the two ways worker processes
//! count (workers take no HTTP traffic, so what they count reaches the web process through the
//! database).
//!
//! # Layout
//! - this module: the names. [`Metric`]s are what the web process's recorder describes and
//!   serves (HTTP, queues, webhooks, sign-ins) and the job counters of [`Counter::metric`]; the
//!   `&str` constants name the business counters.
//! - [`workers`]: job counters and durations of a worker process, flushed to `job_metrics`.
//! - [`counters`]: business counters, added to in the transaction of the outcome they count.
//!
//! The exporter that renders them is `api::metrics`.

pub mod counters;
pub mod workers;

pub use workers::{Counter, DURATION_BUCKETS, DurationField, JobStats, Total, totals};

/// Metric is one metric's name and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
}

/// Declares each [`Metric`] as a constant: `NAME = "name", "help";`.
macro_rules! metrics {
    ($($constant:ident = $name:literal, $help:literal;)*) => {
        $(pub const $constant: Metric = Metric { name: $name, help: $help };)*
    };
}

metrics! {
    HTTP_REQUESTS = "http_requests_total", "HTTP requests answered, by method, route and status.";
    HTTP_DURATION = "http_request_duration_seconds", "Time to answer HTTP requests, by method and route.";
    QUEUE_JOBS = "paygate_queue_jobs", "Jobs by queue and state (pending: due now; scheduled: due later).";
    QUEUE_OLDEST = "paygate_queue_oldest_pending_age_seconds", "How long the longest-waiting due job of each queue has waited.";
    JOB_DURATION = "paygate_job_duration_seconds", "How long job attempts took on the workers, by queue.";
    STRIPE_WEBHOOK_EVENTS = "stripe_webhook_events_total", "Stripe webhook deliveries, by event type and outcome (verified, duplicate, rejected).";
    CHECKOUT_STARTED = "billing_checkout_started_total", "Checkout requests stored, by plan.";
    MINIAPP_SESSIONS = "miniapp_sessions_total", "Mini App sign-ins, by result (issued, refused).";
    MINIAPP_EXCHANGE_LATENCY = "miniapp_exchange_latency_seconds", "Time to exchange Mini App initData for a token, sign-ins that issued one.";
    TELEGRAM_UPDATES = "telegram_updates_total", "Telegram webhook deliveries, by update kind and outcome (accepted, duplicate, rejected).";
    JOBS_PROCESSED = "paygate_jobs_processed_total", "Job attempts completed by the workers, by queue.";
    JOBS_FAILED = "paygate_jobs_failed_total", "Job attempts that failed, by queue.";
    JOBS_RETRIED = "paygate_jobs_retried_total", "Failed job attempts scheduled for another try, by queue.";
    JOBS_DEFERRED = "paygate_jobs_deferred_total", "Job attempts deferred without counting (rate limits), by queue.";
    JOBS_DEAD = "paygate_jobs_dead_total", "Jobs that exhausted their attempts, by queue.";
}

/// Stripe payments, by `status` (paid, failed, refunded, disputed).
pub const BILLING_PAYMENTS: &str = "billing_payments_total";
/// Refunds ops asked for, by `outcome` (succeeded, failed).
pub const BILLING_REFUNDS: &str = "billing_refunds_total";
/// Telegram Stars payments, by `result` (paid, refused, refunded).
pub const TELEGRAM_PAYMENTS: &str = "telegram_payments_total";
/// The Stars paid, by `currency`.
pub const TELEGRAM_PAYMENT_VALUE: &str = "telegram_payment_value_total";
/// Broadcasts begun, by `campaign`.
pub const MARKETING_POSTS: &str = "marketing_posts_total";
/// Broadcast recipients settled, by `outcome` (sent, unreachable, failed).
pub const MARKETING_BROADCAST_RECIPIENTS: &str = "marketing_broadcast_recipients_total";
/// Promo clicks, by `campaign` and `via` (callback, start).
pub const MARKETING_CLICKS: &str = "marketing_clicks_total";
/// Payments attributed to a promo click, by `campaign`.
pub const MARKETING_CONVERSIONS: &str = "marketing_conversions_total";
