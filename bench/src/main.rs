//! `cargo run --release -p bench`: measures the job pipeline against PostgreSQL itself.
//!
//! Shared machines are noisy, so every figure is printed with its ratio to a baseline taken in the
//! same run against the same server: (a) single-row INSERT commits per second from the same number
//! of connections. Then (b) enqueue rate through `jobs::queue::enqueue`, one job per transaction;
//! (c) drain rate of N pre-inserted trivial jobs through the full worker stack (our apalis backend,
//! apalis workers, `run_attempt`, the effect ledger), at N = 10,000 and 200,000 with one and two
//! worker processes; (d) enqueue-to-start latency with idle workers, p50 and p99; (e) signed
//! Stripe webhooks ingested over HTTP by the web process (signature check, inbox row and its
//! job in one transaction), from the same number of client connections as the baseline;
//! (f) a broadcast's fan-out to an audience of 100,000 users: recipients queued per second, each
//! page of 1,000 one transaction (audience page, recipient rows, their `notifications` jobs, the
//! next page's job, the page job's completion), pages one after another as the chain of fan-out
//! jobs runs them; (g) the retention pass over that broadcast once every message is recorded
//! sent: its summary (a check of every message's job, the counts) and the deletion of its
//! recipients with their delivery and effect ledger rows, 5,000 to a statement; recipients
//! pruned per second; (h) one pass of `jobs::retention::prune` over 100,000 old records of each
//! kind it prunes (ledger rows and deliveries of jobs already gone, processed Stripe events,
//! billing requests, pre-checkout answers, dead jobs) among as many younger ones that stay; rows
//! pruned per second.
//!
//! The trivial job has no effect of its own: its ledger row and completion are written by the
//! batching `Completer`, a path for handlers without a database effect that no production
//! handler takes today (each records a delivery, an outcome or a settlement in its effect). Jobs with a
//! database effect use one `EffectTx` each (ledger, effect row, completion in one commit); their
//! drain rate is measured too, at the smaller backlog, and the latency run uses them.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use clap::{Parser, Subcommand};
use jobs::metrics::JobStats;
use jobs::queue::backend::{FetchSettings, QueueBackend, Wakeups};
use jobs::queue::effect::{Begun, Completer};
use jobs::queue::lease::{self, Lease};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{EffectTx, Job, JobError, JobPayload, NewJob, Queue, enqueue, enqueue_many};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks the job pipeline against a baseline taken in the same run")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Connections (and tasks) for the baseline and the enqueue run.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds each rate is measured for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Backlog sizes to drain.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 200_000])]
    backlogs: Vec<i64>,
    /// Backlog of jobs with a per-job effect transaction to drain.
    #[arg(long, default_value_t = 10_000)]
    effect_backlog: i64,
    /// Jobs one worker process runs at once (and fetches at once).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Latency samples.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Users in the broadcast fan-out's audience.
    #[arg(long, default_value_t = 100_000)]
    audience: i64,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Internal: one worker process of the drain run; starts draining on a line on stdin.
    DrainWorker {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        concurrency: usize,
    },
}

/// BenchJob is the trivial job: its effect is its ledger row, plus a latency sample when timed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchJob {
    /// Microseconds since the epoch at enqueue, for latency runs; 0 otherwise.
    sent_at_us: i64,
    /// Whether the job writes an effect row of its own through a per-job effect transaction;
    /// otherwise its only effect is its ledger row, written by the batching completer.
    effect: bool,
}

impl JobPayload for BenchJob {
    // The bench runs on a database of its own with workers of its own; it borrows a queue name.
    const QUEUE: Queue = Queue::Tracking;
}

#[derive(Clone)]
struct Ctx {
    pool: PgPool,
    stats: Arc<JobStats>,
    completer: Completer,
}

async fn handle(job: Job<BenchJob>, ctx: Data<Ctx>) -> Result<(), BoxDynError> {
    let started_us = now_us();
    let (pool, completer) = (ctx.pool.clone(), ctx.completer.clone());
    run_attempt(&ctx.pool, &ctx.stats, job, |job| async move {
        if !job.payload.effect {
            // No effect of its own: its ledger row and completion, batched with others.
            return completer.complete(&job).await.map_err(JobError::Retryable);
        }
        match EffectTx::begin(&pool, &job).await? {
            Begun::AlreadyApplied(done) => Ok(done),
            Begun::Fresh(mut tx) => {
                sqlx::query("INSERT INTO bench_effects (latency_us) VALUES ($1)")
                    .bind((job.payload.sent_at_us > 0).then(|| started_us - job.payload.sent_at_us))
                    .execute(tx.conn())
                    .await?;
                Ok(tx.commit().await?)
            }
        }
    })
    .await?;
    Ok(())
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Role::DrainWorker {
        database_url,
        concurrency,
    }) = cli.role
    {
        return drain_worker(&database_url, concurrency).await;
    }

    let (_cluster, server) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let cluster = sandbox::postgres::TempCluster::start(sandbox::postgres::Durability::Production)?;
            let url = cluster.url("postgres");
            (Some(cluster), url)
        }
    };
    let db = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let admin = jobs::db::connect(&server, 1).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await?;
    let url = sandbox::postgres::with_database(&server, &db);
    let pool = jobs::db::connect(&url, (cli.connections + 4) as u32).await?;
    jobs::db::migrate(&pool).await?;
    sqlx::query("CREATE TABLE bench_rows (n bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE TABLE bench_effects (latency_us bigint)")
        .execute(&pool)
        .await?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&pool).await?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "paygate bench: PostgreSQL {version}, {cores} cores, fsync {fsync}, synchronous_commit {synchronous_commit}, \
         {} connections, {} s per rate, {} jobs at once per worker process",
        cli.connections, cli.seconds, cli.concurrency
    );

    let window = Duration::from_secs(cli.seconds);
    let baseline = rate(cli.connections, window, {
        let pool = pool.clone();
        move |n| {
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO bench_rows (n) VALUES ($1)")
                    .bind(n)
                    .execute(&pool)
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    println!(
        "{:<66} {:>10.0}/s   1.00x",
        "(a) baseline: single-row INSERT commits", baseline
    );

    let enqueued = rate(cli.connections, window, {
        let pool = pool.clone();
        move |_| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                enqueue(
                    &mut tx,
                    &NewJob::new(
                        &BenchJob {
                            sent_at_us: 0,
                            effect: false,
                        },
                        uuid::Uuid::new_v4().to_string(),
                    ),
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    })
    .await?;
    println!(
        "{:<66} {:>10.0}/s   {:.2}x",
        "(b) enqueue: one job per transaction",
        enqueued,
        enqueued / baseline
    );
    reset(&pool).await?;

    let mut drains: Vec<(i64, bool)> = cli.backlogs.iter().map(|&b| (b, false)).collect();
    drains.push((cli.effect_backlog, true));
    for (backlog, effect) in drains {
        for processes in [1, 2] {
            let jobs_per_second = drain(&pool, &url, backlog, effect, processes, cli.concurrency).await?;
            let kind = if effect {
                "jobs with an effect transaction each"
            } else {
                "trivial jobs"
            };
            let label = format!("(c) drain {backlog} {kind}, {processes} process(es)");
            println!(
                "{label:<66} {:>10.0}/s   {:.2}x",
                jobs_per_second,
                jobs_per_second / baseline
            );
            reset(&pool).await?;
        }
    }

    let (p50, p99) = latency(&pool, &url, cli.samples).await?;
    println!(
        "{:<66} {:>8.2} ms p50, {:.2} ms p99",
        "(d) enqueue-to-start latency, idle worker", p50, p99
    );
    println!(
        "{:<66} {:>8.2} ms",
        "    for scale: one baseline INSERT commit per connection",
        1000.0 * cli.connections as f64 / baseline
    );
    reset(&pool).await?;

    let webhooks = webhook_ingest(&url, cli.connections, window).await?;
    println!(
        "{:<66} {:>10.0}/s   {:.2}x",
        "(e) signed Stripe webhooks ingested over HTTP",
        webhooks,
        webhooks / baseline
    );
    reset(&pool).await?;

    let recipients = broadcast_fan_out(&pool, cli.audience).await?;
    println!(
        "{:<66} {:>10.0}/s   {:.2}x",
        format!("(f) broadcast fan-out to {} users: recipients queued", cli.audience),
        recipients,
        recipients / baseline
    );

    let pruned = broadcast_prune(&pool, cli.audience).await?;
    println!(
        "{:<66} {:>10.0}/s   {:.2}x",
        "(g) pruning that broadcast once sent: recipients pruned",
        pruned,
        pruned / baseline
    );
    reset(&pool).await?;

    let records = record_prune(&pool, cli.audience).await?;
    println!(
        "{:<66} {:>10.0}/s   {:.2}x",
        format!("(h) pruning {} old records of each kind: rows pruned", cli.audience),
        records,
        records / baseline
    );
    Ok(())
}

/// Stores `n` records of each kind [`jobs::retention`] prunes past its retention (ledger rows and
/// deliveries of jobs already gone, processed Stripe events, billing requests, pre-checkout
/// answers, dead jobs) and as many younger ones that stay, then times one pruning pass; returns
/// rows pruned per second.
async fn record_prune(pool: &PgPool, n: i64) -> anyhow::Result<f64> {
    use jobs::retention::{self, DEFAULT_RECORD_RETENTION};

    sqlx::query(
        "WITH ages AS (
             SELECT i, CASE WHEN i % 2 = 0 THEN now() - interval '40 days' ELSE now() - interval '1 day' END AS at
             FROM generate_series(1, 2 * $1::bigint) AS i
         ), ledger AS (
             INSERT INTO effect_ledger (queue, logical_key, job_id, applied_at)
             SELECT 'notifications', 'bench:' || i, i, at FROM ages
         ), deliveries AS (
             INSERT INTO telegram_deliveries (logical_key, chat_id, status, message_id, job_id, created_at)
             SELECT 'bench:' || i, i, 'sent', 1, i, at FROM ages
         ), events AS (
             INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, processed_at, outcome)
             SELECT 'evt_bench' || i, 'invoice.paid', at, false, '{}', at, at, 'applied' FROM ages
         ), requests AS (
             INSERT INTO billing_requests (user_id, kind, plan, created_at)
             SELECT i, 'portal', NULL, at FROM ages
         ), queries AS (
             INSERT INTO telegram_pre_checkout_queries (id, user_id, invoice_payload, currency, total_amount, ok, answered_at)
             SELECT 'pcq' || i, i, 'p', 'XTR', 1, true, at FROM ages
         )
         INSERT INTO jobs (queue, logical_key, payload, state, attempt, max_attempts, finished_at)
         SELECT 'tracking', 'bench-dead:' || i, '{}', 'dead', 5, 5, at FROM ages",
    )
    .bind(n)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    let started = Instant::now();
    let pruned = retention::prune(pool, DEFAULT_RECORD_RETENTION).await?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(pruned.total() as i64 == 6 * n, "pruned {pruned:?} of 6 x {n}");
    Ok(pruned.total() as f64 / elapsed)
}

/// Marks every message of (f)'s broadcast sent, as the notifications handler records it
/// (delivery, ledger row, completed job, outcome), moves the broadcast past its retention, and
/// times the retention pass that summarises it and deletes its recipients with their delivery
/// and ledger rows; returns recipients pruned per second.
async fn broadcast_prune(pool: &PgPool, audience: i64) -> anyhow::Result<f64> {
    use jobs::marketing::broadcasts::{self, DEFAULT_BROADCAST_RETENTION};

    sqlx::query(
        "WITH done AS (
             UPDATE jobs SET state = 'completed', finished_at = now()
             WHERE queue = 'notifications' RETURNING id, logical_key, payload
         ), delivered AS (
             INSERT INTO telegram_deliveries (logical_key, chat_id, status, message_id, job_id)
             SELECT logical_key, (payload->>'chat_id')::bigint, 'sent', 1, id FROM done
         )
         INSERT INTO effect_ledger (queue, logical_key, job_id) SELECT 'notifications', logical_key, id FROM done",
    )
    .execute(pool)
    .await?;
    sqlx::query("UPDATE broadcast_recipients SET outcome = 'sent', done_at = now()")
        .execute(pool)
        .await?;
    sqlx::query("UPDATE broadcasts SET fanned_out_at = now() - interval '31 days'")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    let started = Instant::now();
    let pruned = broadcasts::prune(pool, DEFAULT_BROADCAST_RETENTION).await?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        pruned.summarised == 1 && pruned.recipients as i64 == audience,
        "pruned {pruned:?} of {audience}"
    );
    Ok(pruned.recipients as f64 / elapsed)
}

/// Puts `audience` users in the bot's audience, begins a broadcast to all of them and runs its
/// fan-out jobs page by page as the `broadcasts` worker does; returns recipients queued per second.
async fn broadcast_fan_out(pool: &PgPool, audience: i64) -> anyhow::Result<f64> {
    use jobs::marketing::broadcasts::{self, FanOut, PAGE_SIZE};
    use jobs::marketing::campaigns::{self, Audience, ButtonAction, NewCampaign, NewPromo, PromoButton, Schedule};

    sqlx::query(
        "INSERT INTO telegram_chats (chat_id, first_seen_at)
         SELECT id, now() - interval '1 day' FROM generate_series(1, $1) AS id",
    )
    .bind(audience)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE telegram_chats").execute(pool).await?;
    let campaign = NewCampaign {
        name: "bench".into(),
        audience: Audience::AllUsers,
        schedule: Schedule::Every { hours: 4 },
        promos: vec![NewPromo {
            name: "a".into(),
            text: "Pro for less this week".into(),
            parse_mode: None,
            buttons: vec![PromoButton {
                text: "Tell me more".into(),
                action: ButtonAction::Callback,
            }],
        }],
    };
    let mut tx = pool.begin().await?;
    campaigns::create(&mut tx, &campaign, None).await?;
    tx.commit().await?;
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    broadcasts::begin(&mut tx, "bench", None)
        .await?
        .context("the bench campaign exists")?;
    tx.commit().await?;
    let mut queued = 0;
    loop {
        let next: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT id, payload FROM jobs WHERE queue = 'broadcasts' AND state = 'pending' ORDER BY id LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        let Some((id, payload)) = next else { break };
        let job: FanOut = serde_json::from_value(payload)?;
        let mut tx = pool.begin().await?;
        queued += broadcasts::fan_out(&mut tx, &job, PAGE_SIZE, 30.0).await?.queued;
        sqlx::query("UPDATE jobs SET state = 'completed', finished_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    anyhow::ensure!(queued as i64 == audience, "queued {queued} of {audience}");
    Ok(queued as f64 / started.elapsed().as_secs_f64())
}

/// Serves the web process on a free port and posts it distinct signed `checkout.session.completed`
/// events from `connections` tasks for `window`; returns accepted webhooks per second.
async fn webhook_ingest(url: &str, connections: usize, window: Duration) -> anyhow::Result<f64> {
    const SECRET: &str = "whsec_bench";
    let config = api::Config {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        database_url: jobs::config::Secret::new(url),
        database_pool_size: connections as u32 + 2,
        admin_token: jobs::config::Secret::new("bench-admin-token-0123"),
        metrics_token: None,
        plans: jobs::billing::Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro"}}"#,
        )
        .map_err(anyhow::Error::msg)?,
        texts: jobs::bot::Texts::default(),
        stripe_webhook_secrets: vec![jobs::config::Secret::new(SECRET)],
        jwt: api::config::JwtConfig {
            secret: jobs::config::Secret::new("bench-jwt-secret-0123456789abcdef0123"),
            issuer: "paygate".into(),
            audience: "paygate-api".into(),
        },
        telegram: api::config::TelegramConfig::new("123456:bench-token", "bench-telegram-secret-token")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        marketing: jobs::marketing::Settings {
            bot_username: None,
            messages_per_second: 30.0,
        },
    };
    let app = api::Application::build(config).await?;
    let endpoint = format!("http://127.0.0.1:{}/webhooks/stripe", app.port());
    let server = tokio::spawn(app.run_until_stopped(std::future::pending()));
    // One real event, serialised once; each request gets its own id in place of the marker.
    let subscription = sandbox::stripe_events::Subscription::new("bench", 1, "pro", "price_pro");
    let mut event = subscription.checkout_session("checkout.session.completed", "paid", 0);
    event["id"] = serde_json::json!("evt_BENCH_MARKER");
    let template = Arc::new(event.to_string());
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections).build()?;
    let rate = rate(connections, window, move |n| {
        let (client, endpoint, template) = (client.clone(), endpoint.clone(), template.clone());
        async move {
            let body = template.replace("evt_BENCH_MARKER", &format!("evt_bench_{n}"));
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
            let status = client
                .post(endpoint.as_str())
                .header("Stripe-Signature", sandbox::stripe::sign_webhook(&body, SECRET, now))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await?
                .status();
            anyhow::ensure!(status.is_success(), "the webhook endpoint answered {status}");
            Ok(())
        }
    })
    .await;
    server.abort();
    rate
}

/// Runs `op` from `tasks` tasks for `window`; returns completed operations per second.
async fn rate<F, Fut>(tasks: usize, window: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(i64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + window;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut n: i64 = 0;
            while Instant::now() < deadline {
                op(t as i64 * 1_000_000_000 + n).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE jobs, effect_ledger, job_workers, bench_effects")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    Ok(())
}

/// Pre-inserts `backlog` jobs, starts `processes` worker processes, and returns jobs per second
/// from their start signal until the queue is empty.
async fn drain(
    pool: &PgPool,
    url: &str,
    backlog: i64,
    effect: bool,
    processes: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    for chunk in (0..backlog).collect::<Vec<_>>().chunks(10_000) {
        let jobs: Vec<NewJob> = chunk
            .iter()
            .map(|n| NewJob::new(&BenchJob { sent_at_us: 0, effect }, format!("drain-{n}")))
            .collect();
        enqueue_many(&mut conn, &jobs).await?;
    }
    drop(conn);
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    let mut children = spawn_workers(url, processes, concurrency)?;
    let started = Instant::now();
    for child in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go")?;
    }
    loop {
        let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'running'))")
            .fetch_one(pool)
            .await?;
        if !left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop(children)?;
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM effect_ledger")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(done == backlog, "drained {done} of {backlog} jobs");
    Ok(backlog as f64 / elapsed.as_secs_f64())
}

/// Enqueues `samples` jobs one at a time to one idle worker process, each after the previous one
/// ran; returns the p50 and p99 of enqueue-commit-to-handler-start in milliseconds.
async fn latency(pool: &PgPool, url: &str, samples: usize) -> anyhow::Result<(f64, f64)> {
    let mut children = spawn_workers(url, 1, 8)?;
    writeln!(children[0].stdin.as_mut().unwrap(), "go")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..samples {
        let mut tx = pool.begin().await?;
        // The clock is read as late as possible: the commit that follows is part of the latency.
        enqueue(
            &mut tx,
            &NewJob::new(
                &BenchJob {
                    sent_at_us: now_us(),
                    effect: true,
                },
                format!("latency-{i}"),
            ),
        )
        .await?;
        tx.commit().await?;
        loop {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_effects")
                .fetch_one(pool)
                .await?;
            if n as usize > i {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Let the worker go idle again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(children)?;
    let micros: Vec<i64> = sqlx::query_scalar("SELECT latency_us FROM bench_effects ORDER BY latency_us")
        .fetch_all(pool)
        .await?;
    let pick = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    Ok((pick(0.5), pick(0.99)))
}

fn spawn_workers(url: &str, processes: usize, concurrency: usize) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut child = Command::new(&exe)
            .args([
                "drain-worker",
                "--database-url",
                url,
                "--concurrency",
                &concurrency.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a worker process")?;
        // Wait until it is connected, so that process start-up is not measured.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "ready", "worker process said {line:?}");
        children.push(child);
    }
    Ok(children)
}

fn stop(children: Vec<Child>) -> anyhow::Result<()> {
    for mut child in children {
        drop(child.stdin.take());
        child.wait()?;
    }
    Ok(())
}

/// One worker process: the same backend, worker and attempt runner as `worker run`, on the bench
/// job. Starts on a line on stdin, stops when stdin closes.
async fn drain_worker(url: &str, concurrency: usize) -> anyhow::Result<()> {
    let pool = jobs::db::connect(url, concurrency as u32 + 4).await?;
    let ctx = Ctx {
        pool: pool.clone(),
        stats: Arc::new(JobStats::default()),
        completer: Completer::start(pool.clone()),
    };
    let mut wakeups = Wakeups::new(worker::startup::POLL_FALLBACK);
    let wakeup = std::sync::Mutex::new(Some(wakeups.subscribe(Queue::Tracking)));
    let name = format!("bench-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let settings = FetchSettings {
        batch_size: concurrency as i64,
        heartbeat: lease::HEARTBEAT,
    };
    // Heartbeated as `worker run` does, so that the fetch runs under a held lease.
    let lease = Lease::new();
    tokio::spawn(lease::keep_alive(
        (*pool.connect_options()).clone(),
        lease.clone(),
        vec![name.clone()],
    ));
    let p = pool.clone();
    let monitor = Monitor::new().register(move |_| {
        let wakeup = wakeup
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| Wakeups::new(worker::startup::POLL_FALLBACK).subscribe(Queue::Tracking));
        WorkerBuilder::new(name.as_str())
            .backend(QueueBackend::<BenchJob>::new(
                p.clone(),
                settings,
                lease.clone(),
                wakeup,
            ))
            .concurrency(concurrency)
            .data(ctx.clone())
            .build(handle)
    });
    tokio::spawn(wakeups.listen(pool.clone()));
    let (go, started) = tokio::sync::oneshot::channel::<()>();
    let (eof, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        let _ = stdin.lock().read_line(&mut line);
        let _ = go.send(());
        let _ = stdin.lock().read_line(&mut line);
        let _ = eof.send(());
    });
    println!("ready");
    std::io::stdout().flush()?;
    let _ = started.await;
    monitor
        .run_with_signal(async move {
            let _ = closed.await;
            Ok(())
        })
        .await?;
    Ok(())
}
