//! `worker run`: one apalis worker per queue, the job listener, and maintenance, until shutdown.
//!
//! Shutdown (SIGTERM on Heroku, which kills 30 s later): workers stop taking jobs and their
//! running jobs get [`GRACE`] to finish; jobs still running then, and jobs fetched but not
//! started, are handed back to their queues with the attempt unspent, and the process exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use backon::{ExponentialBuilder, Retryable};
use jobs::billing::refunds::MakeRefund;
use jobs::billing::requests::CreateSession;
use jobs::billing::requests::ReturnUrls;
use jobs::billing::{Billing, EntitlementsJob, expiry};
use jobs::marketing::broadcasts::{self, Broadcaster, FanOut};
use jobs::metrics::{JobStats, processes};
use jobs::notifications::Notifier;
use jobs::queue::backend::{FetchSettings, QueueBackend, Wakeups};
use jobs::queue::lease::{self, HEARTBEAT, Lease, WORKER_TIMEOUT};
use jobs::queue::{JobPayload, Queue, maintenance};
use jobs::stripe::client::StripeClient;
use jobs::telegram::SendMessage;
use jobs::telegram::client::TelegramClient;
use jobs::telegram::pace::Pace;
use jobs::tracking::TrackingJob;
use sqlx::PgPool;

use crate::config::Config;
use crate::handlers;

/// How long running jobs may take to finish after shutdown begins: under Heroku's 30 s.
pub const GRACE: Duration = Duration::from_secs(20);
/// How often an idle worker looks for jobs without being woken: jobs that became due by time
/// (retries, deferrals), and the few enqueues that send no NOTIFY (see the migration
/// `notify_only_idle_queues`). It bounds their wait; an empty fetch costs one index probe.
pub const POLL_FALLBACK: Duration = Duration::from_millis(100);
/// How long the pruning of old rows rests between passes.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the campaign scheduler looks for due slots: a broadcast begins at most this long
/// after its slot.
pub const SCHEDULER_INTERVAL: Duration = Duration::from_secs(30);
/// How often the expiry and reminder passes run: an entitlement ends at most this long after its
/// grace ran out.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Runs every queue's worker until `shutdown` resolves, then hands back what is unfinished.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let pool = jobs::db::connect(&config.database_url, config.database_pool_size)
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    let stats = Arc::new(JobStats::default());
    // Unique per process, so that orphan rescue can tell this process's jobs from others'.
    let process = format!(
        "{}-{}-{}",
        config.instance,
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let mut wakeups = Wakeups::new(POLL_FALLBACK);
    let settings = FetchSettings {
        batch_size: config.concurrency as i64,
        heartbeat: HEARTBEAT,
    };
    // Held once the first heartbeat succeeds (see jobs::queue::lease): nothing is fetched before.
    let lease = Lease::new();

    let notifier = Notifier {
        pool: pool.clone(),
        stats: stats.clone(),
        telegram: TelegramClient::new(
            &config.telegram_bot_token,
            &config.telegram_api_url,
            &format!("paygate-worker/{process}"),
        )
        .map_err(anyhow::Error::msg)?,
        pace: config.telegram_pace,
        lease: lease.clone(),
    };
    let billing = Billing {
        pool: pool.clone(),
        stats: stats.clone(),
        plans: Arc::new(config.plans.clone()),
        texts: Arc::new(config.texts.clone()),
        links: config.links.clone(),
        stripe: StripeClient::new(&config.stripe.secret_key, &config.stripe.api_url).map_err(anyhow::Error::msg)?,
        telegram: notifier.telegram.clone(),
        return_urls: Arc::new(ReturnUrls {
            success: config.stripe.success_url.clone(),
            cancel: config.stripe.cancel_url.clone(),
            portal_return: config.stripe.portal_return_url.clone(),
        }),
        attribution_window: config.attribution_window,
        lease: lease.clone(),
        grace: config.expiry_grace,
    };
    let broadcaster = Broadcaster {
        pool: pool.clone(),
        stats: stats.clone(),
        page_size: broadcasts::PAGE_SIZE,
        per_second: config.telegram_pace.per_second,
    };

    let mut names = Vec::new();
    let mut monitor = Monitor::new();
    // One worker per queue, each with its own wakeup subscription and the same fetch settings.
    macro_rules! queue_worker {
        ($payload:ty, $handler:path, $data:expr) => {{
            let queue = <$payload as JobPayload>::QUEUE;
            let name = worker_name(&process, queue);
            names.push(name.clone());
            let wakeup = std::sync::Mutex::new(Some(wakeups.subscribe(queue)));
            let (pool, lease, data, concurrency) = (pool.clone(), lease.clone(), $data, config.concurrency);
            monitor = monitor.register(move |_| {
                // A restarted worker (after a backend error) polls on its fallback tick alone.
                let wakeup = wakeup
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_else(|| Wakeups::new(POLL_FALLBACK).subscribe(queue));
                WorkerBuilder::new(name.as_str())
                    .backend(QueueBackend::<$payload>::new(
                        pool.clone(),
                        settings,
                        lease.clone(),
                        wakeup,
                    ))
                    .concurrency(concurrency)
                    .data(data.clone())
                    .build($handler)
            });
        }};
    }
    queue_worker!(SendMessage, handlers::notification, notifier.clone());
    queue_worker!(EntitlementsJob, handlers::entitlements, billing.clone());
    queue_worker!(CreateSession, handlers::checkout, billing.clone());
    queue_worker!(MakeRefund, handlers::refund, billing.clone());
    queue_worker!(TrackingJob, handlers::tracking, billing.clone());
    queue_worker!(FanOut, handlers::fan_out, broadcaster);
    let monitor = monitor
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "worker stopped, restarting it");
            true
        })
        .with_terminator(async { tokio::time::sleep(GRACE).await });

    tokio::spawn(wakeups.listen(pool.clone()));
    let heartbeat = tokio::spawn(lease::keep_alive(
        (*pool.connect_options()).clone(),
        lease,
        names.clone(),
    ));
    let maintenance = tokio::spawn(maintain(pool.clone(), stats.clone(), process.clone()));
    let pruning = tokio::spawn(prune(
        pool.clone(),
        Retention {
            jobs: config.job_retention,
            broadcasts: config.broadcast_retention,
            records: config.record_retention,
        },
    ));
    let scheduler = tokio::spawn(schedule_campaigns(pool.clone()));
    let timekeeper = tokio::spawn(keep_time(billing.clone(), config.reminder_hours.clone()));
    tracing::info!(process, queues = ?names, "worker running");
    monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing running jobs");
            Ok(())
        })
        .await?;

    heartbeat.abort();
    maintenance.abort();
    pruning.abort();
    scheduler.abort();
    timekeeper.abort();
    // Ended, so that no sample it was writing lands after the row is removed below.
    let _ = maintenance.await;
    // Whatever the hand-back below does, this process's figures stop being served.
    if let Err(e) = processes::forget(&pool, &process).await {
        tracing::warn!(error = %e, "removing this process's figures failed; they stop being served within a minute");
    }
    for name in &names {
        let handed_back = maintenance::hand_back(&pool, name).await?;
        if handed_back > 0 {
            tracing::warn!(
                worker = name,
                handed_back,
                "unfinished jobs handed back to their queues"
            );
        }
    }
    stats.flush(&pool).await?;
    tracing::info!("worker stopped");
    Ok(())
}

fn worker_name(process: &str, queue: Queue) -> String {
    format!("{process}:{queue}")
}

/// Begins the broadcasts of campaigns whose slot came due, every [`SCHEDULER_INTERVAL`] from the
/// start. Every worker process runs it; the database lets one of them begin each slot.
async fn schedule_campaigns(pool: PgPool) {
    let mut tick = tokio::time::interval(SCHEDULER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = broadcasts::fire_due(&pool, chrono::Utc::now()).await {
            tracing::warn!(error = %e, "the campaign scheduler's pass failed");
        }
    }
}

/// Queues the expiry of entitlements past their paid end and grace, and the reminders due before
/// an end, at start and every [`EXPIRY_INTERVAL`]. Every worker process runs it; the database
/// keeps each expiry and reminder to one job ([`expiry`]).
async fn keep_time(billing: Billing, reminder_hours: Vec<u32>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match expiry::enqueue_due(&billing.pool, billing.grace).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(queued = n, "entitlements past their end queued to expire"),
            Err(e) => tracing::warn!(error = %e, "the expiry pass failed"),
        }
        match expiry::remind_due(&billing.pool, billing.bot(), &reminder_hours, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(queued = n, "reminders queued"),
            Err(e) => tracing::warn!(error = %e, "the reminder pass failed"),
        }
    }
}

/// Rescues the jobs of stopped workers, flushes counters and records this process's figures, every [`HEARTBEAT`], until aborted
/// after the hand-back. Each step is safe to run in every process at once. The heartbeat itself
/// is not here but in [`lease::keep_alive`], on a connection of its own, so that nothing on the
/// pool can delay it.
async fn maintain(pool: PgPool, stats: Arc<JobStats>, process: String) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match maintenance::rescue_orphans(&pool, WORKER_TIMEOUT).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(rescued = n, "jobs of stopped workers handed to others"),
            Err(e) => tracing::warn!(error = %e, "orphan rescue failed"),
        }
        if let Err(e) = stats.flush(&pool).await {
            tracing::warn!(error = %e, "flushing job metrics failed");
        }
        if let Some(sample) = processes::Sample::of_this_process()
            && let Err(e) = processes::record(&pool, &process, &sample).await
        {
            tracing::warn!(error = %e, "recording this process's figures failed");
        }
    }
}

/// How long what [`prune`] deletes is kept.
struct Retention {
    /// Completed and discarded jobs, and stored Telegram updates.
    jobs: Duration,
    /// The records that guard against repeats, and dead jobs ([`jobs::retention`]).
    records: Duration,
    /// Broadcasts' per-recipient rows, from the end of their fan-out.
    broadcasts: Duration,
}

/// Deletes old rows, at start and every [`PRUNE_INTERVAL`] after a pass ends: finished jobs,
/// past send slots, stored Telegram updates, old broadcasts' recipients, and the records that
/// guard against repeats once nothing can repeat ([`jobs::retention`]). A pass deletes in
/// batches and may take long (the first after a backlog), which is why it is not part of
/// [`maintain`]. Every process runs it; each step is safe to run at once.
async fn prune(pool: PgPool, retention: Retention) {
    loop {
        let pruned = (|| maintenance::prune_finished(&pool, retention.jobs))
            .retry(ExponentialBuilder::default().with_max_times(3))
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "finished jobs pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
        if let Err(e) = Pace::prune(&pool).await {
            tracing::warn!(error = %e, "pruning send slots failed");
        }
        match jobs::inbox::telegram::prune(&pool, retention.jobs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "old telegram updates pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning telegram updates failed"),
        }
        match broadcasts::prune(&pool, retention.broadcasts).await {
            Ok(broadcasts::Pruned {
                summarised: 0,
                recipients: 0,
            }) => {}
            Ok(p) => tracing::info!(
                summarised = p.summarised,
                recipients = p.recipients,
                "old broadcasts' recipients pruned"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning broadcasts' recipients failed"),
        }
        match jobs::retention::prune(&pool, retention.records).await {
            Ok(p) if p.total() == 0 => {}
            Ok(p) => tracing::info!(
                effect_ledger = p.effect_ledger,
                telegram_deliveries = p.telegram_deliveries,
                stripe_events = p.stripe_events,
                billing_requests = p.billing_requests,
                pre_checkout_queries = p.pre_checkout_queries,
                dead_jobs = p.dead_jobs,
                "old records pruned"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning old records failed"),
        }
        tokio::time::sleep(PRUNE_INTERVAL).await;
    }
}
