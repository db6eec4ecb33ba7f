//! One scrape of `/metrics`: the pipeline and business numbers read from the database, published
//! into the recorder or rendered after what it renders.
//!
//! The database's figures come from [`DatabaseFigures`], one per app: however many scrape at
//! once, one of them reads (on at most two connections) and the others wait for its
//! figures, which then answer every scrape for [`FIGURES_MAX_AGE`]. So scrapers cannot take the
//! pool from webhooks, whatever their number; an aggregate over a big queue costs one read per
//! five seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use jobs::metrics::counters::{self, Counter as BusinessCounter};
use jobs::metrics::processes::{self, Sample, WorkerProcess};
use jobs::metrics::{
    BUSINESS_COUNTERS, Counter, DURATION_BUCKETS, DurationField, JOB_DURATION, Metric, QUEUE_JOBS, QUEUE_OLDEST,
    QUEUE_PAUSED, Total, WORKER_CPU, WORKER_MAX_FDS, WORKER_OPEN_FDS, WORKER_RESIDENT_MEMORY, WORKER_START_TIME,
    WORKER_THREADS, WORKER_VIRTUAL_MEMORY,
};
use jobs::queue::Queue;
use jobs::queue::ops::{self, QueueStats};
use sqlx::PgPool;

use super::{install, process_metrics};

/// How long a scrape waits for the database before serving the HTTP metrics alone.
const PIPELINE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Pipeline is the job pipeline as the database sees it at one scrape.
struct Pipeline {
    queues: Vec<QueueStats>,
    totals: Vec<Total>,
    workers: Vec<WorkerProcess>,
}

impl Pipeline {
    async fn read(pool: &PgPool) -> Result<Pipeline, sqlx::Error> {
        let queues = ops::queue_stats(pool).await?;
        let totals = jobs::metrics::totals(pool).await?;
        let workers = processes::fresh(pool).await?;
        Ok(Pipeline {
            queues,
            totals,
            workers,
        })
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
                metrics::gauge!(QUEUE_JOBS.name, "queue" => q.queue.clone(), "state" => state).set(n as f64);
            }
            metrics::gauge!(QUEUE_OLDEST.name, "queue" => q.queue.clone()).set(q.oldest_pending_age_seconds);
            metrics::gauge!(QUEUE_PAUSED.name, "queue" => q.queue.clone()).set(f64::from(u8::from(q.paused)));
        }
        for Total { queue, metric, value } in &self.totals {
            let Some(counter) = Counter::ALL.into_iter().find(|c| c.name() == metric) else {
                continue;
            };
            if queue.parse::<Queue>().is_ok() {
                metrics::counter!(counter.metric().name, "queue" => queue.clone()).absolute(*value as u64);
            }
        }
    }
}

/// How long figures read from the database answer scrapes before one scrape reads them again.
pub const FIGURES_MAX_AGE: Duration = Duration::from_secs(5);

/// Figures is one read of the database's numbers; a part whose read failed is `None`.
struct Figures {
    pipeline: Option<Pipeline>,
    business: Option<Vec<BusinessCounter>>,
}

impl Figures {
    async fn read(pool: &PgPool) -> Figures {
        // At once, each within its timeout: at most two connections, for at most 5 s.
        let (pipeline, business) = tokio::join!(
            read_or_log("job pipeline's metrics", Pipeline::read(pool)),
            read_or_log("billing counters", counters::all(pool)),
        );
        Figures { pipeline, business }
    }
}

/// DatabaseFigures is the app's latest [`Figures`], read by one scrape at a time.
#[derive(Clone)]
pub struct DatabaseFigures(Latest<Figures>);

impl Default for DatabaseFigures {
    fn default() -> DatabaseFigures {
        DatabaseFigures(Latest::new(FIGURES_MAX_AGE))
    }
}

/// Latest is a value read again only once it is `max_age` old, by one caller at a time: callers
/// queue on the lock while one reads, then share what it read. A failed read (a value holding
/// the failure) is kept as long, so that a database in trouble is not asked by every scraper.
pub(super) struct Latest<T> {
    max_age: Duration,
    value: Arc<tokio::sync::Mutex<Option<Read<T>>>>,
}

/// Read is a value and when it was read.
type Read<T> = (Instant, Arc<T>);

impl<T> Clone for Latest<T> {
    fn clone(&self) -> Latest<T> {
        Latest {
            max_age: self.max_age,
            value: self.value.clone(),
        }
    }
}

impl<T> Latest<T> {
    pub(super) fn new(max_age: Duration) -> Latest<T> {
        Latest {
            max_age,
            value: Arc::default(),
        }
    }

    /// The value, from `read` when there is none younger than `max_age`.
    pub(super) async fn get<F: Future<Output = T>>(&self, read: impl FnOnce() -> F) -> Arc<T> {
        let mut latest = self.value.lock().await;
        if let Some((at, value)) = latest.as_ref()
            && at.elapsed() < self.max_age
        {
            return value.clone();
        }
        let value = Arc::new(read().await);
        *latest = Some((Instant::now(), value.clone()));
        value
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

/// The text of one scrape: this process's recorder, and the database's figures of `figures`.
pub async fn scrape(pool: &PgPool, figures: &DatabaseFigures) -> String {
    let handle = install();
    let Figures { pipeline, business } = &*figures.0.get(|| Figures::read(pool)).await;
    let mut out = {
        let _serial = SCRAPE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pipeline) = pipeline {
            pipeline.publish();
        }
        process_metrics().collect();
        handle.render()
    };
    if let Some(pipeline) = pipeline {
        render_durations(&pipeline.totals, &mut out);
        render_worker_processes(&pipeline.workers, &mut out);
    }
    if let Some(counters) = business {
        render_counters(counters, &mut out);
    }
    out
}

/// Appends the business counters as Prometheus counters, one `# HELP` and `# TYPE` per name.
/// A row of a name that is not one of [`BUSINESS_COUNTERS`] (a counter this version no longer
/// keeps) or whose labels would not render as valid exposition text is left out and logged.
pub(super) fn render_counters(counters: &[BusinessCounter], out: &mut String) {
    let mut typed: Option<&str> = None;
    for BusinessCounter { name, labels, value } in counters {
        let Some(known) = BUSINESS_COUNTERS.iter().find(|m| m.name == name) else {
            tracing::warn!(name = %name.escape_debug(), "a counter this version does not know is left out");
            continue;
        };
        if !valid_labels(labels) {
            tracing::warn!(name = %name, "a counter whose labels cannot be rendered is left out");
            continue;
        }
        if typed != Some(name.as_str()) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let _ = writeln!(out, "# HELP {name} {}", known.help);
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

/// Appends each worker process's figures, labelled by process. Rendered rather than published
/// into the recorder, so that a stopped process's series end with it instead of lingering.
pub(super) fn render_worker_processes(workers: &[WorkerProcess], out: &mut String) {
    if workers.is_empty() {
        return;
    }
    type Family = (Metric, &'static str, fn(&Sample) -> f64);
    let families: [Family; 7] = [
        (WORKER_CPU, "counter", |s| s.cpu_seconds),
        (WORKER_RESIDENT_MEMORY, "gauge", |s| s.resident_memory_bytes as f64),
        (WORKER_VIRTUAL_MEMORY, "gauge", |s| s.virtual_memory_bytes as f64),
        (WORKER_OPEN_FDS, "gauge", |s| s.open_fds as f64),
        (WORKER_MAX_FDS, "gauge", |s| s.max_fds as f64),
        (WORKER_THREADS, "gauge", |s| s.threads as f64),
        (WORKER_START_TIME, "gauge", |s| s.start_time_seconds as f64),
    ];
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (metric, kind, value) in families {
        let _ = writeln!(out, "# HELP {} {}", metric.name, metric.help);
        let _ = writeln!(out, "# TYPE {} {kind}", metric.name);
        for worker in workers {
            let process = escape_label(&worker.process);
            let _ = writeln!(
                out,
                "{}{{process=\"{process}\"}} {}",
                metric.name,
                value(&worker.sample)
            );
        }
    }
}

/// `value` escaped as a label value of the exposition format.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Whether `name` is a Prometheus metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(super) fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Whether `labels` is what goes inside a series' braces: empty, or `name="value"` pairs
/// separated by commas, values escaped as the exposition format escapes them (`\\`, `\"`,
/// `\n`) and on one line.
pub(super) fn valid_labels(labels: &str) -> bool {
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

/// Appends the job duration histogram, written by hand because the stored buckets are already
/// cumulative counts, which the recorder's histograms cannot take.
pub(super) fn render_durations(totals: &[Total], out: &mut String) {
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
    let (name, help) = (JOB_DURATION.name, JOB_DURATION.help);
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (queue, d) in &by_queue {
        for (bound, n) in DURATION_BUCKETS.iter().zip(&d.buckets) {
            let _ = writeln!(out, "{name}_bucket{{queue=\"{queue}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{queue=\"{queue}\",le=\"+Inf\"}} {}", d.count);
        let _ = writeln!(out, "{name}_sum{{queue=\"{queue}\"}} {}", d.sum_micros / 1e6);
        let _ = writeln!(out, "{name}_count{{queue=\"{queue}\"}} {}", d.count);
    }
}
