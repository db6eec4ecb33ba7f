//! The ops commands of the worker binary, for a one-off dyno (`heroku run worker jobs dead`):
//! the same operations back the `/v1/ops` endpoints.
//!
//! # Layout
//! - this module: how listings print (`--format table|json`).
//! - [`jobs`]: `worker jobs …`, queues (statistics, pause, resume) and jobs (list, show, retry,
//!   discard).
//! - [`campaigns`]: `worker campaigns …`, promo campaigns and their broadcasts.
//! - [`telegram`]: `worker telegram …`, the bot's webhook and bans.
//! - [`access`]: `worker access …`, the audit of paid chats.

pub mod access;
pub mod campaigns;
pub mod jobs;
pub mod telegram;

/// Format is how an ops command prints what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and sentences, for people.
    Table,
    /// The same objects as `/v1/ops` answers, for programs.
    Json,
}

/// Prints `value` as pretty JSON, or for people by `table`.
pub(crate) fn print_as<T: serde::Serialize + ?Sized>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T),
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Table => table(value),
    }
    Ok(())
}

/// How the commands print a time for people: to the second, or (schedule slots) to the minute.
pub(crate) const TO_THE_SECOND: &str = "%Y-%m-%d %H:%M:%S UTC";
pub(crate) const TO_THE_MINUTE: &str = "%Y-%m-%d %H:%M UTC";

/// `at` in `format`, or `-` when there is none.
pub(crate) fn when(at: Option<chrono::DateTime<chrono::Utc>>, format: &str) -> String {
    at.map_or("-".into(), |at| at.format(format).to_string())
}
