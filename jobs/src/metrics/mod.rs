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

pub const HTTP_REQUESTS: Metric = Metric {
    name: "http_requests_total",
    help: "HTTP requests answered, by method, route and status.",
};
pub const HTTP_DURATION: Metric = Metric {
    name: "http_request_duration_seconds",
    help: "Time to answer HTTP requests, by method and route.",
};
pub const QUEUE_JOBS: Metric = Metric {
    name: "paygate_queue_jobs",
    help: "Jobs by queue and state (pending: due now; scheduled: due later).",
};
pub const QUEUE_OLDEST: Metric = Metric {
    name: "paygate_queue_oldest_pending_age_seconds",
    help: "How long the longest-waiting due job of each queue has waited.",
};
pub const JOB_DURATION: Metric = Metric {
    name: "paygate_job_duration_seconds",
    help: "How long job attempts took on the workers, by queue.",
};
pub const STRIPE_WEBHOOK_EVENTS: Metric = Metric {
    name: "stripe_webhook_events_total",
    help: "Stripe webhook deliveries, by event type and outcome (verified, duplicate, rejected).",
};
pub const CHECKOUT_STARTED: Metric = Metric {
    name: "billing_checkout_started_total",
    help: "Checkout requests stored, by plan.",
};
pub const MINIAPP_SESSIONS: Metric = Metric {
    name: "miniapp_sessions_total",
    help: "Mini App sign-ins, by result (issued, refused).",
};
pub const MINIAPP_EXCHANGE_LATENCY: Metric = Metric {
    name: "miniapp_exchange_latency_seconds",
    help: "Time to exchange Mini App initData for a token, sign-ins that issued one.",
};
pub const TELEGRAM_UPDATES: Metric = Metric {
    name: "telegram_updates_total",
    help: "Telegram webhook deliveries, by update kind and outcome (accepted, duplicate, rejected).",
};

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
