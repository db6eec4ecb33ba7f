//! The worker binary: `worker [run]`, `worker migrate`, `worker jobs …`, `worker campaigns …`,
//! `worker telegram …`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use worker::cli::access::AccessArgs;
use worker::cli::campaigns::CampaignsArgs;
use worker::cli::jobs::JobsArgs;
use worker::cli::telegram::TelegramCommand;
use worker::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "paygate's worker dyno: drains the job queues; also migrates and runs ops commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the workers of every queue until SIGTERM (the default).
    Run,
    /// Applies the database migrations, then exits (the release phase).
    Migrate,
    /// Inspects queues and jobs, pauses and resumes queues, retries or discards dead jobs.
    Jobs(JobsArgs),
    /// Creates, pauses, resumes, previews and sends promo campaigns; their statistics.
    Campaigns(CampaignsArgs),
    /// Registers the bot's webhook with Telegram, or shows it.
    #[command(subcommand)]
    Telegram(TelegramCommand),
    /// Paid chats: who is in them without access, and who has access but is not.
    Access(AccessArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Command::Run)) {
        // Rust ignores SIGPIPE, so printing to a closed pipe (`worker jobs stats | head`) would
        // panic; an ops command ends quietly instead, as Unix tools do. The worker itself keeps
        // ignoring it: its logs going away must not kill it.
        // SAFETY: setting a signal's disposition to the default, before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logs();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(run(cli.command.unwrap_or(Command::Run))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let config = Config::from_env()?;
            worker::startup::run(config, shutdown_signal()).await
        }
        Command::Migrate => {
            let pool = connect().await?;
            jobs::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Jobs(command) => {
            let pool = connect().await?;
            worker::cli::jobs::run(&pool, command).await
        }
        Command::Campaigns(command) => {
            let pool = connect().await?;
            worker::cli::campaigns::run(&pool, command).await
        }
        Command::Telegram(command) => worker::cli::telegram::run(command).await,
        Command::Access(command) => {
            let pool = connect().await?;
            worker::cli::access::run(&pool, command).await
        }
    }
}

/// The two connections of an ops command, to `DATABASE_URL`.
async fn connect() -> anyhow::Result<sqlx::PgPool> {
    let url = jobs::config::required("DATABASE_URL")?;
    jobs::db::connect(&url, 2)
        .await
        .context("connecting to the database (DATABASE_URL)")
}

/// Resolves on SIGTERM (Heroku's stop) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
}
