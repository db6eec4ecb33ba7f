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
//! - [`processes`]: each worker process's CPU, memory, file descriptors and threads.
//!
//! The exporter that renders them is `api::metrics`.

pub mod counters;
pub mod processes;
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
    QUEUE_PAUSED = "paygate_queue_paused", "Whether ops have paused the queue (1) or not (0): paused, workers take none of its jobs.";
    BUILD_INFO = "paygate_build_info", "Always 1; its labels are the running build's version and commit (SOURCE_VERSION at build time).";
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

// Each worker process's own figures, by process ([`processes`]): the web process's `process_*`.
metrics! {
    WORKER_CPU = "paygate_worker_cpu_seconds_total", "Total user and system CPU time a worker process spent, in seconds, by process.";
    WORKER_RESIDENT_MEMORY = "paygate_worker_resident_memory_bytes", "A worker process's resident memory, in bytes, by process.";
    WORKER_VIRTUAL_MEMORY = "paygate_worker_virtual_memory_bytes", "A worker process's virtual memory, in bytes, by process.";
    WORKER_OPEN_FDS = "paygate_worker_open_fds", "A worker process's open file descriptors, by process.";
    WORKER_MAX_FDS = "paygate_worker_max_fds", "A worker process's limit of open file descriptors (0: unlimited), by process.";
    WORKER_THREADS = "paygate_worker_threads", "A worker process's OS threads, by process.";
    WORKER_START_TIME = "paygate_worker_start_time_seconds", "When a worker process started, in seconds since the Unix epoch, by process.";
}

// The business counters, kept in the database by [`counters`] (their labels are written there).
metrics! {
    BILLING_PAYMENTS = "billing_payments_total", "Stripe payments, by status (paid, failed, refunded, disputed).";
    BILLING_REFUNDS = "billing_refunds_total", "Refunds ops asked for, by outcome (succeeded, failed).";
    TELEGRAM_PAYMENTS = "telegram_payments_total", "Telegram Stars payments, by result (paid, refused at pre-checkout, refunded).";
    TELEGRAM_PAYMENT_VALUE = "telegram_payment_value_total", "The amount of Telegram Stars payments, in the currency's units (Stars: XTR), by currency.";
    MARKETING_POSTS = "marketing_posts_total", "Broadcasts begun, by campaign.";
    MARKETING_BROADCAST_RECIPIENTS = "marketing_broadcast_recipients_total", "Broadcast recipients settled, by outcome (sent, unreachable, failed).";
    MARKETING_CLICKS = "marketing_clicks_total", "Promo clicks, by campaign and via (callback, start).";
    MARKETING_CONVERSIONS = "marketing_conversions_total", "Payments attributed to a promo click, by campaign.";
    ENTITLEMENT_EXPIRIES = "entitlement_expiries_total", "Entitlements ended at the end of their paid period without a renewal, by plan.";
    ENTITLEMENT_REMINDERS = "entitlement_reminders_total", "Reminders queued before an entitlement that will not renew ends, by plan.";
    ACCESS_CHANGES = "access_changes_total", "Paid chat access, by action (granted, removed, refused) and reason.";
}

/// Every business counter, for the help texts `/metrics` gives the sums read from the database.
pub const BUSINESS_COUNTERS: [Metric; 11] = [
    BILLING_PAYMENTS,
    BILLING_REFUNDS,
    TELEGRAM_PAYMENTS,
    TELEGRAM_PAYMENT_VALUE,
    MARKETING_POSTS,
    MARKETING_BROADCAST_RECIPIENTS,
    MARKETING_CLICKS,
    MARKETING_CONVERSIONS,
    ENTITLEMENT_EXPIRIES,
    ENTITLEMENT_REMINDERS,
    ACCESS_CHANGES,
];
