//! `cargo run -p sandbox --bin dev`: the whole system on this machine.
//!
//! A throwaway PostgreSQL (unless `DATABASE_URL` is set), the fake Telegram Bot API (unless
//! `TELEGRAM_BOT_TOKEN` is set), the release step (`worker migrate`), then the `web` (`api`) and
//! `worker` processes exactly as the Procfile runs them. Ctrl-C stops everything and removes the
//! throwaway database.

use std::process::{Child, Command};

use anyhow::{Context, bail};
use sandbox::postgres::{Durability, TempCluster};
use sandbox::telegram::{FakeTelegram, Limits};

const FAKE_BOT_TOKEN: &str = "123456:sandbox-token";
const DEV_ADMIN_TOKEN: &str = "dev-admin-token-change-me";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let admin_token = std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| DEV_ADMIN_TOKEN.into());

    let (_cluster, database_url) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            eprintln!("dev: starting a throwaway PostgreSQL…");
            let cluster = TempCluster::start(Durability::Production)?;
            let url = cluster.url("postgres");
            (Some(cluster), url)
        }
    };
    let (_fake, telegram_env) = match std::env::var("TELEGRAM_BOT_TOKEN") {
        Ok(token) if !token.is_empty() => (None, vec![("TELEGRAM_BOT_TOKEN".to_string(), token)]),
        _ => {
            let fake = FakeTelegram::start_on("127.0.0.1:8081", FAKE_BOT_TOKEN, Limits::default())
                .await
                .context("starting the fake Bot API on 127.0.0.1:8081")?;
            let env = vec![
                ("TELEGRAM_BOT_TOKEN".to_string(), FAKE_BOT_TOKEN.to_string()),
                ("TELEGRAM_API_URL".to_string(), fake.url().to_string()),
            ];
            (Some(fake), env)
        }
    };

    eprintln!("dev: building api and worker…");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !Command::new(&cargo)
        .args(["build", "-p", "api", "-p", "worker"])
        .status()?
        .success()
    {
        bail!("cargo build failed");
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the dev binary has a directory")?
        .to_path_buf();
    let process = |name: &str| {
        let mut cmd = Command::new(bin_dir.join(name));
        cmd.env("DATABASE_URL", &database_url)
            .env("PORT", &port)
            .env("ADMIN_TOKEN", &admin_token);
        cmd.envs(telegram_env.iter().map(|(k, v)| (k, v)));
        cmd
    };

    if !process("worker").arg("migrate").status()?.success() {
        bail!("worker migrate failed");
    }
    let mut children: Vec<Child> = vec![process("api").spawn()?, process("worker").arg("run").spawn()?];

    let fake_url = _fake.as_ref().map(|f| f.url().to_string());
    println!(
        "\npaygate is running.\n  API          http://127.0.0.1:{port}\n  Swagger UI   http://127.0.0.1:{port}/docs\n  Metrics      http://127.0.0.1:{port}/metrics\n  Database     {database_url}"
    );
    if let Some(url) = &fake_url {
        println!("  Fake Bot API {url} (messages it received: {url}/sandbox/messages)");
    }
    println!(
        "\nSend a Telegram message through the pipeline:\n  curl -s -X POST http://127.0.0.1:{port}/v1/ops/notifications \\\n    -H 'Authorization: Bearer {admin_token}' -H 'Content-Type: application/json' \\\n    -d '{{\"chat_id\": 42, \"text\": \"Hello from paygate\"}}'"
    );
    if let Some(url) = &fake_url {
        println!("  curl -s {url}/sandbox/messages");
    }
    println!("\nCtrl-C stops everything.");

    tokio::signal::ctrl_c().await?;
    eprintln!("dev: stopping…");
    for child in &children {
        // SIGTERM, as Heroku stops a dyno: the processes finish or hand back their work.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    Ok(())
}
