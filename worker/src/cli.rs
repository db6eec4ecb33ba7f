//! `worker jobs …`: what ops can do about queues (statistics, pause, resume) and dead jobs from a one-off dyno
//! (`heroku run worker jobs dead`). The same operations back the `/v1/ops/jobs` endpoints.

use std::time::Duration;

use clap::{Args, Subcommand};
use jobs::queue::Queue;
use jobs::queue::ops::{self, Change, DeadFilter};
use sqlx::PgPool;

/// JobsArgs is `worker jobs [--format table|json] <command>`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// How listings print: aligned columns, or JSON (the same objects as `/v1/ops`).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// Format is how `worker jobs` prints a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// JobsCommand is one of the `worker jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Per queue: pending, running, scheduled and dead jobs, the oldest pending job's age, jobs
    /// completed in the last minute and hour, throughput over 5 minutes, and whether it is paused.
    Stats,
    /// Pauses a queue: no worker process takes its jobs from its next fetch (within a second)
    /// until `resume`. Running jobs finish; new jobs are still enqueued.
    Pause { queue: Queue },
    /// Resumes a paused queue.
    Resume { queue: Queue },
    /// Lists jobs in any state, newest first: by queue, state, logical key or payload field.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<Queue>,
        /// Only this state: pending, running, completed, dead or discarded.
        #[arg(long, value_parser = parse_state)]
        state: Option<&'static str>,
        /// Only the job of this logical key, e.g. billing_request:12.
        #[arg(long)]
        key: Option<String>,
        /// Only jobs whose payload contains this JSON object, e.g. '{"user_id":42}'.
        #[arg(long, value_parser = parse_payload)]
        payload: Option<serde_json::Value>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Lists dead jobs, most recently dead first.
    Dead {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Shows one job as JSON: state, payload and every recorded error.
    Show { id: i64 },
    /// Puts a dead job (or with --all, every dead job matching the filter) back in its queue.
    /// `checkout` and `refunds` jobs created more than 23 hours ago need --past-key-memory:
    /// Stripe forgets idempotency keys after 24 hours, so their retry could repeat a Stripe call.
    Retry {
        #[command(flatten)]
        target: Target,
        /// Retry `checkout` and `refunds` jobs older than Stripe's key memory too, after checking
        /// at Stripe that their calls were not made.
        #[arg(long)]
        past_key_memory: bool,
    },
    /// Discards a dead or waiting job (or with --all, every dead job matching the filter).
    Discard(Target),
}

/// Target is one job by id, or every dead job matching a filter.
#[derive(Debug, Args)]
pub struct Target {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<i64>,
    /// Every dead job matching the filter.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// With --all: only count the jobs it would change.
    #[arg(long, requires = "all")]
    dry_run: bool,
}

/// FilterArgs selects dead jobs.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<Queue>,
    /// Only jobs dead for at least this long, e.g. 30m, 2h, 7d; at most 100years.
    #[arg(long, value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Only jobs dead for at most this long; at most 100years.
    #[arg(long, value_parser = parse_age)]
    newer_than: Option<Duration>,
}

/// An age of a dead-job filter, as humantime writes it, up to [`ops::MAX_AGE`]. Clap names the
/// flag in its error; more than the bound would otherwise reach PostgreSQL as a timestamp out
/// of range.
fn parse_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if age > ops::MAX_AGE {
        return Err(format!("at most {}", humantime::format_duration(ops::MAX_AGE)));
    }
    Ok(age)
}

/// A job state, one of [`ops::STATES`].
fn parse_state(text: &str) -> Result<&'static str, String> {
    ops::STATES
        .into_iter()
        .find(|s| *s == text)
        .ok_or_else(|| format!("one of {}", ops::STATES.join(", ")))
}

/// A payload filter: a JSON object.
fn parse_payload(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(object @ serde_json::Value::Object(_)) => Ok(object),
        _ => Err("a JSON object, e.g. '{\"user_id\":42}'".into()),
    }
}

/// Prints `rows` as JSON, or as a table by `table`.
fn print_rows<T: serde::Serialize>(format: Format, rows: &[T], table: impl FnOnce(&[T])) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Format::Table => table(rows),
    }
    Ok(())
}

impl From<&FilterArgs> for DeadFilter {
    fn from(f: &FilterArgs) -> DeadFilter {
        DeadFilter {
            queue: f.queue,
            older_than: f.older_than,
            newer_than: f.newer_than,
        }
    }
}

/// Runs `command`, printing its result to stdout in `format`.
pub async fn run(pool: &PgPool, JobsArgs { format, command }: JobsArgs) -> anyhow::Result<()> {
    match command {
        JobsCommand::Stats => print_rows(format, &ops::queue_stats(pool).await?, |stats| {
            println!(
                "{:<14} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>6}",
                "queue",
                "pending",
                "running",
                "scheduled",
                "dead",
                "oldest(s)",
                "done(1m)",
                "done(1h)",
                "per s",
                "paused"
            );
            for s in stats {
                println!(
                    "{:<14} {:>9} {:>9} {:>9} {:>9} {:>10.1} {:>9} {:>9} {:>8.2} {:>6}",
                    s.queue,
                    s.pending,
                    s.running,
                    s.scheduled,
                    s.dead,
                    s.oldest_pending_age_seconds,
                    s.completed_last_minute,
                    s.completed_last_hour,
                    s.completed_per_second,
                    if s.paused { "yes" } else { "no" }
                );
            }
        })?,
        JobsCommand::List {
            queue,
            state,
            key,
            payload,
            limit,
        } => {
            let filter = ops::JobFilter {
                queue,
                state,
                logical_key: key,
                payload,
            };
            print_rows(format, &ops::list(pool, &filter, limit, None).await?, |jobs| {
                println!(
                    "{:>10}  {:<14} {:<10} {:<32} {:>8}  {:<25} last error",
                    "id", "queue", "state", "logical key", "attempts", "created at"
                );
                for j in jobs {
                    println!(
                        "{:>10}  {:<14} {:<10} {:<32} {:>8}  {:<25} {}",
                        j.id,
                        j.queue,
                        j.state,
                        j.logical_key,
                        format!("{}/{}", j.attempt, j.max_attempts),
                        j.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        j.last_error.as_deref().unwrap_or("-")
                    );
                }
                println!("{} job(s)", jobs.len());
            })?
        }
        JobsCommand::Pause { queue } => match ops::pause(pool, queue).await? {
            true => println!("queue {queue} paused: workers take none of its jobs until `worker jobs resume {queue}`"),
            false => println!("queue {queue} was paused already"),
        },
        JobsCommand::Resume { queue } => match ops::resume(pool, queue).await? {
            true => println!("queue {queue} resumed"),
            false => println!("queue {queue} was not paused"),
        },
        JobsCommand::Dead { filter, limit } => {
            let dead = ops::list_dead(pool, &DeadFilter::from(&filter), limit, None).await?;
            print_rows(format, &dead, |dead| {
                println!(
                    "{:>10}  {:<14} {:<25} {:>8}  {:<36}",
                    "id", "queue", "died at", "attempts", "last error"
                );
                for j in dead {
                    println!(
                        "{:>10}  {:<14} {:<25} {:>8}  {}",
                        j.id,
                        j.queue,
                        j.died_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        format!("{}/{}", j.attempt, j.max_attempts),
                        j.last_error.as_deref().unwrap_or("-")
                    );
                }
                println!("{} dead job(s)", dead.len());
            })?
        }
        JobsCommand::Show { id } => match ops::show(pool, id).await? {
            Some(job) => println!("{}", serde_json::to_string_pretty(&job)?),
            None => anyhow::bail!("no job {id}"),
        },
        JobsCommand::Retry {
            target,
            past_key_memory,
        } => match target.id {
            Some(id) => report(id, "retried", "dead", ops::retry(pool, id, past_key_memory).await?)?,
            None => {
                let filter = DeadFilter::from(&target.filter);
                let bulk = ops::retry_matching(pool, &filter, past_key_memory, target.dry_run).await?;
                let done = if target.dry_run { "would be retried" } else { "retried" };
                println!("{} job(s) {done}", bulk.count);
                if bulk.skipped_past_key_memory > 0 {
                    println!(
                        "{} checkout or refunds job(s) created more than 23 h ago (Stripe keeps idempotency keys 24 h) left dead: \
                         check at Stripe that their calls were not made, then add --past-key-memory",
                        bulk.skipped_past_key_memory
                    );
                }
            }
        },
        JobsCommand::Discard(target) => match target.id {
            Some(id) => report(id, "discarded", "dead or pending", ops::discard(pool, id).await?)?,
            None => {
                let filter = DeadFilter::from(&target.filter);
                let count = ops::discard_matching(pool, &filter, target.dry_run).await?;
                let done = if target.dry_run {
                    "would be discarded"
                } else {
                    "discarded"
                };
                println!("{count} job(s) {done}");
            }
        },
    }
    Ok(())
}

/// Says what became of job `id`; `applies_to` names the states the change applies to.
fn report(id: i64, done: &str, applies_to: &str, change: Change) -> anyhow::Result<()> {
    match change {
        Change::Done => {
            println!("job {id} {done}");
            Ok(())
        }
        Change::NotFound => anyhow::bail!("no job {id}"),
        Change::WrongState(state) => anyhow::bail!("job {id} is {state}; only {applies_to} jobs can be {done}"),
        Change::PastKeyMemory { queue, age } => {
            anyhow::bail!("{}", ops::past_key_memory(id, &queue, age, "--past-key-memory"))
        }
    }
}

/// TelegramCommand is one of the `worker telegram` subcommands.
#[derive(Debug, Subcommand)]
pub enum TelegramCommand {
    /// Points the bot's webhook at `TELEGRAM_WEBHOOK_URL` (or --url) with
    /// `TELEGRAM_WEBHOOK_SECRET` as its secret token, for messages, button presses and
    /// pre-checkout queries. Updates waiting at Telegram are kept.
    SetWebhook {
        /// The public URL of `POST /webhooks/telegram`, e.g. https://<app>.herokuapp.com/webhooks/telegram.
        #[arg(long)]
        url: Option<String>,
    },
    /// Shows the webhook as Telegram sees it: its URL, updates waiting, the last delivery error.
    WebhookInfo,
    /// Bans a user: their pre-checkout queries are refused from now on (needs DATABASE_URL).
    Ban { user_id: i64 },
    /// Lifts a user's ban (needs DATABASE_URL).
    Unban { user_id: i64 },
}

/// Runs `command`: against the Bot API of `TELEGRAM_BOT_TOKEN` (at `TELEGRAM_API_URL`), or for
/// bans against the database.
pub async fn run_telegram(command: TelegramCommand) -> anyhow::Result<()> {
    use jobs::config::required;
    use jobs::telegram::client::BOT_UPDATES;

    match command {
        TelegramCommand::SetWebhook { url } => {
            let url = match url {
                Some(url) => url,
                None => required("TELEGRAM_WEBHOOK_URL")?,
            };
            let secret = required("TELEGRAM_WEBHOOK_SECRET")?;
            bot()?.set_webhook(&url, &secret, &BOT_UPDATES).await?;
            println!("webhook set: {url} (message, callback_query, pre_checkout_query, my_chat_member)");
        }
        TelegramCommand::WebhookInfo => {
            let (url, pending, last_error) = bot()?.webhook_info().await?;
            let url = if url.is_empty() { "(none)" } else { url.as_str() };
            println!("url: {url}\npending updates: {pending}");
            if let Some(error) = last_error {
                println!("last error: {error}");
            }
        }
        TelegramCommand::Ban { user_id } => set_banned(user_id, true).await?,
        TelegramCommand::Unban { user_id } => set_banned(user_id, false).await?,
    }
    Ok(())
}

/// The Bot API client of `TELEGRAM_BOT_TOKEN`, at `TELEGRAM_API_URL`.
fn bot() -> anyhow::Result<jobs::telegram::client::TelegramClient> {
    use jobs::config::{Secret, optional, required};
    use jobs::telegram::client::{DEFAULT_API_URL, TelegramClient};

    let token = Secret::new(required("TELEGRAM_BOT_TOKEN")?);
    let api_url = optional("TELEGRAM_API_URL").unwrap_or_else(|| DEFAULT_API_URL.into());
    TelegramClient::new(&token, &api_url, "paygate-worker/cli").map_err(anyhow::Error::msg)
}

async fn set_banned(user_id: i64, banned: bool) -> anyhow::Result<()> {
    let pool = jobs::db::connect(&jobs::config::required("DATABASE_URL")?, 2).await?;
    let mut conn = pool.acquire().await?;
    jobs::billing::users::set_banned(&mut conn, user_id, banned).await?;
    println!("user {user_id} {}", if banned { "banned" } else { "unbanned" });
    Ok(())
}

/// CampaignsCommand is one of the `worker campaigns` subcommands (needs DATABASE_URL). The same
/// operations back the `/v1/ops/campaigns` endpoints; answers print as JSON.
#[derive(Debug, Subcommand)]
pub enum CampaignsCommand {
    /// Creates a campaign from a JSON file shaped as the body of `POST /v1/ops/campaigns`
    /// (deep-link buttons need TELEGRAM_BOT_USERNAME).
    Create {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Lists campaigns.
    List,
    /// Shows one campaign.
    Show { name: String },
    /// Stops a campaign's scheduled broadcasts.
    Pause { name: String },
    /// Restarts them from the next slot.
    Resume { name: String },
    /// Shows the message the next broadcast will send.
    Preview { name: String },
    /// Begins a broadcast of the next promo now.
    Send { name: String },
    /// Sends, unique clickers, click-through, conversions and revenue per promo, over the
    /// campaign's life or since --since (e.g. 7d).
    Stats {
        name: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
    },
    /// Shows a broadcast's progress; with --watch, one line every 2 s until every recipient is
    /// settled (Ctrl-C stops watching, not the broadcast).
    Broadcast {
        id: i64,
        #[arg(long)]
        watch: bool,
    },
}

/// How often `campaigns broadcast --watch` reads the progress again.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Runs `command`, printing its result to stdout.
pub async fn run_campaigns(pool: &PgPool, command: CampaignsCommand) -> anyhow::Result<()> {
    use jobs::marketing::campaigns::{self, CampaignSpec};
    use jobs::marketing::{Settings, broadcasts, stats};

    fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
    async fn set_paused(pool: &PgPool, name: &str, paused: bool) -> anyhow::Result<campaigns::Campaign> {
        let mut tx = pool.begin().await?;
        let campaign = campaigns::set_paused(&mut tx, name, paused).await?;
        tx.commit().await?;
        Ok(campaign)
    }
    let missing = |name: &str| anyhow::anyhow!("no campaign named {name:?}");
    match command {
        CampaignsCommand::Create { file } => {
            let text = std::fs::read_to_string(&file)?;
            let spec: CampaignSpec =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let settings = Settings::from_env()?;
            let mut tx = pool.begin().await?;
            let created = campaigns::create(&mut tx, &spec.into_campaign()?, settings.bot_username.as_deref()).await?;
            tx.commit().await?;
            print(&created)
        }
        CampaignsCommand::List => print(&campaigns::list(pool).await?),
        CampaignsCommand::Show { name } => print(&campaigns::find(pool, &name).await?.ok_or_else(|| missing(&name))?),
        CampaignsCommand::Pause { name } => print(&set_paused(pool, &name, true).await?),
        CampaignsCommand::Resume { name } => print(&set_paused(pool, &name, false).await?),
        CampaignsCommand::Preview { name } => print(
            &campaigns::next_promo(pool, &name)
                .await?
                .ok_or_else(|| missing(&name))?,
        ),
        CampaignsCommand::Send { name } => {
            let mut tx = pool.begin().await?;
            let started = broadcasts::begin(&mut tx, &name, None).await?;
            tx.commit().await?;
            print(&started.ok_or_else(|| missing(&name))?)
        }
        CampaignsCommand::Stats { name, since } => {
            let from = since
                .map(|since| chrono::Duration::from_std(since).map(|d| chrono::Utc::now() - d))
                .transpose()?;
            print(
                &stats::campaign(pool, &name, from, None)
                    .await?
                    .ok_or_else(|| missing(&name))?,
            )
        }
        CampaignsCommand::Broadcast { id, watch } => {
            let rate = Settings::from_env()?.messages_per_second;
            let progress = async || {
                broadcasts::progress(pool, id, rate)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no broadcast {id}"))
            };
            if !watch {
                return print(&progress().await?);
            }
            loop {
                let p = progress().await?;
                let finish = p
                    .expected_finish_at
                    .map(|at| format!(", done by {}", at.format("%H:%M:%S UTC")))
                    .unwrap_or_default();
                let of = if p.fanned_out { "" } else { " so far" };
                println!(
                    "broadcast {id}: {} sent, {} failed, {} unreachable, {} pending of {}{of}{finish}",
                    p.sent, p.failed, p.unreachable, p.pending, p.total
                );
                if p.fanned_out && p.pending == 0 {
                    return Ok(());
                }
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_is_taken_up_to_100_years_as_humantime_counts_them() {
        assert_eq!(parse_age("100years"), Ok(ops::MAX_AGE));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("100years 1s"), Err("at most 100years".into()));
        assert_eq!(parse_age("100000years"), Err("at most 100years".into()));
        assert!(parse_age("soon").is_err());
    }
}
