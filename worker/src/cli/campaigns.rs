//! `worker campaigns …`: promo campaigns, their broadcasts and statistics. The same operations
//! back the `/v1/ops/campaigns` endpoints.

use std::time::Duration;

use clap::{Args, Subcommand};
use jobs::marketing::broadcasts::{self, Progress};
use jobs::marketing::campaigns::{self, Audience, Campaign, CampaignSpec, Schedule};
use jobs::marketing::{Settings, stats};
use sqlx::PgPool;

use super::{Format, TO_THE_MINUTE, TO_THE_SECOND, print_as, when};

/// CampaignsArgs is `worker campaigns [--format table|json] <command>`.
#[derive(Debug, Args)]
pub struct CampaignsArgs {
    /// How answers print: for people, or JSON (the same objects as `/v1/ops/campaigns`).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: CampaignsCommand,
}

/// CampaignsCommand is one of the `worker campaigns` subcommands (needs DATABASE_URL).
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

/// Runs `command`, printing its result to stdout in `format`.
pub async fn run(pool: &PgPool, CampaignsArgs { format, command }: CampaignsArgs) -> anyhow::Result<()> {
    async fn set_paused(pool: &PgPool, name: &str, paused: bool) -> anyhow::Result<Campaign> {
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
            print_as(format, &created, |c| {
                println!("campaign {} created", c.name);
                describe(c);
            })
        }
        CampaignsCommand::List => print_as(format, &campaigns::list(pool).await?, |list| {
            println!(
                "{:<24} {:<22} {:<20} {:>6}  {:<16} {:<6} next slot",
                "name", "audience", "schedule", "promos", "next promo", "paused"
            );
            for c in list {
                println!(
                    "{:<24} {:<22} {:<20} {:>6}  {:<16} {:<6} {}",
                    c.name,
                    audience(&c.audience),
                    schedule(&c.schedule),
                    c.promos.len(),
                    c.next_promo,
                    if c.paused { "yes" } else { "no" },
                    when(c.next_slot, TO_THE_MINUTE)
                );
            }
            println!("{} campaign(s)", list.len());
        }),
        CampaignsCommand::Show { name } => {
            let campaign = campaigns::find(pool, &name).await?.ok_or_else(|| missing(&name))?;
            print_as(format, &campaign, describe)
        }
        CampaignsCommand::Pause { name } => print_as(format, &set_paused(pool, &name, true).await?, |c| {
            println!(
                "campaign {} paused: no scheduled broadcast until `worker campaigns resume {}`",
                c.name, c.name
            )
        }),
        CampaignsCommand::Resume { name } => print_as(format, &set_paused(pool, &name, false).await?, |c| {
            let next = when(c.next_slot, TO_THE_MINUTE);
            println!("campaign {} resumed; next broadcast {next}", c.name)
        }),
        CampaignsCommand::Preview { name } => {
            let next = campaigns::next_promo(pool, &name)
                .await?
                .ok_or_else(|| missing(&name))?;
            print_as(format, &next, |next| {
                println!(
                    "campaign {}, next promo {}:\n\n{}\n",
                    next.campaign, next.promo, next.message.text
                );
                for row in &next.message.buttons {
                    let row: Vec<String> = row.iter().map(|b| format!("[{}]", b.text)).collect();
                    println!("{}", row.join(" "));
                }
            })
        }
        CampaignsCommand::Send { name } => {
            let mut tx = pool.begin().await?;
            let started = broadcasts::begin(&mut tx, &name, None).await?;
            tx.commit().await?;
            print_as(format, &started.ok_or_else(|| missing(&name))?, |b| {
                println!(
                    "broadcast {} of campaign {} (promo {}) begun; `worker campaigns broadcast {} --watch` follows it",
                    b.broadcast_id, b.campaign, b.promo, b.broadcast_id
                )
            })
        }
        CampaignsCommand::Stats { name, since } => {
            let from = since
                .map(|since| chrono::Duration::from_std(since).map(|d| chrono::Utc::now() - d))
                .transpose()?;
            let figures = stats::campaign(pool, &name, from, None)
                .await?
                .ok_or_else(|| missing(&name))?;
            print_as(format, &figures, |f| {
                println!(
                    "campaign {} from {} to {}",
                    f.campaign,
                    f.from.format(TO_THE_MINUTE),
                    f.to.format(TO_THE_MINUTE)
                );
                println!(
                    "{:<16} {:>8} {:>9} {:>7} {:>11} {:>7}  revenue",
                    "promo", "sends", "clickers", "CTR", "conversions", "CR"
                );
                for p in &f.promos {
                    let revenue: Vec<String> = p
                        .revenue
                        .iter()
                        .map(|r| format!("{} {}", r.amount, r.currency))
                        .collect();
                    println!(
                        "{:<16} {:>8} {:>9} {:>6.1}% {:>11} {:>6.1}%  {}",
                        p.promo,
                        p.sends,
                        p.unique_clickers,
                        p.click_through_rate * 100.0,
                        p.conversions,
                        p.conversion_rate * 100.0,
                        if revenue.is_empty() {
                            "-".into()
                        } else {
                            revenue.join(", ")
                        }
                    );
                }
            })
        }
        CampaignsCommand::Broadcast { id, watch } => {
            let rate = Settings::from_env()?.messages_per_second;
            loop {
                let p = broadcasts::progress(pool, id, rate)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no broadcast {id}"))?;
                if watch && format == Format::Json {
                    // One object per line while watching, so that the output streams.
                    println!("{}", serde_json::to_string(&p)?);
                } else {
                    print_as(format, &p, progress_line)?;
                }
                if !watch || (p.fanned_out && p.pending == 0) {
                    return Ok(());
                }
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        }
    }
}

/// A campaign for people, as `show` prints it.
fn describe(c: &Campaign) {
    println!("name        {}", c.name);
    println!("audience    {}", audience(&c.audience));
    println!("schedule    {}", schedule(&c.schedule));
    println!("promos      {} (next: {})", c.promos.join(", "), c.next_promo);
    println!("paused      {}", if c.paused { "yes" } else { "no" });
    println!("created at  {}", c.created_at.format(TO_THE_SECOND));
    println!("last slot   {}", when(c.last_slot, TO_THE_MINUTE));
    println!("next slot   {}", when(c.next_slot, TO_THE_MINUTE));
}

/// A broadcast's progress in one line, as `broadcast` (and every `--watch` tick) prints it.
fn progress_line(p: &Progress) {
    let finish = p
        .expected_finish_at
        .map(|at| format!(", done by {}", at.format("%H:%M:%S UTC")))
        .unwrap_or_default();
    let of = if p.fanned_out { "" } else { " so far" };
    println!(
        "broadcast {}: {} sent, {} failed, {} unreachable, {} pending of {}{of}{finish}",
        p.id, p.sent, p.failed, p.unreachable, p.pending, p.total
    );
}

fn audience(a: &Audience) -> String {
    match a {
        Audience::Chats { chat_ids } => format!("{} chat(s)", chat_ids.len()),
        other => other.name().to_string(),
    }
}

fn schedule(s: &Schedule) -> String {
    match s {
        Schedule::Every { hours } => format!("every {hours} h"),
        Schedule::Cron { expression } => format!("cron {expression}"),
    }
}
