//! `worker access …`: paid chats. The same audit backs `GET /v1/ops/access/audit`.

use clap::{Args, Subcommand};
use jobs::access::audit::{self, Audit};
use jobs::billing::Plans;
use sqlx::PgPool;

use super::{Format, print_as};

/// AccessArgs is `worker access [--format table|json] <command>`.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// How answers print: for people, or JSON (the same object as `/v1/ops/access/audit`).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: AccessCommand,
}

/// AccessCommand is one of the `worker access` subcommands (needs DATABASE_URL and PLANS).
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Lists, per paid chat, the members without access and the users with access who are not
    /// in it, as the bot's membership records and the active entitlements say. With --fix, queues
    /// the access job of each: it removes the former (never an administrator, nor a user whose
    /// access came meanwhile) and sends the latter an invite link (their unused one if valid).
    Audit {
        #[arg(long)]
        fix: bool,
    },
}

/// Runs `args`.
pub async fn run(pool: &PgPool, args: AccessArgs) -> anyhow::Result<()> {
    let plans = Plans::from_env()?;
    match args.command {
        AccessCommand::Audit { fix } => {
            let mut tx = pool.begin().await?;
            let found = audit::audit(&mut tx, &plans).await?;
            print_as(args.format, &found, print_audit)?;
            if fix {
                let removals = audit::fix(&mut tx, &found.members_without_access).await?;
                let links = audit::fix(&mut tx, &found.entitled_not_in_chat).await?;
                tx.commit().await?;
                eprintln!(
                    "queued the access job of {removals} member(s) without access (removal) and {links} entitled user(s) not in the chat (a link)"
                );
            }
        }
    }
    Ok(())
}

fn print_audit(found: &Audit) {
    for (title, rows) in [
        ("members without access", &found.members_without_access),
        ("entitled, not in the chat", &found.entitled_not_in_chat),
    ] {
        println!("{title}: {}", rows.len());
        for row in rows.iter() {
            println!("  chat {:>16}  user {:>14}", row.chat_id, row.user_id);
        }
    }
}
