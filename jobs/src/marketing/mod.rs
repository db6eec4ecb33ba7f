//! Marketing: promo campaigns, their broadcasts, and what clicks and payments they led to.
//!
//! # Layout
//! - [`campaigns`]: definitions (promos, audience, schedule), ops' changes, when slots are due.
//!   - `schedule`: every-N-hours and cron schedules, their slots, which slot is due.
//!   - `promo`: promo buttons and messages, checking a new campaign, ops' spec of one.
//!   - `store`: the campaigns' SQL (create, find, list, pause, next promo, the scheduler's reads).
//! - [`broadcasts`]: a due slot or a send-now becomes a broadcast, fanned out in pages into
//!   `notifications` jobs; recipients' outcomes and a broadcast's progress.
//!   - `scheduler`: beginning a broadcast for a slot or a send-now, firing the due slots.
//!   - `fan_out`: one page of the audience into its messages.
//!   - `progress`: recipients' outcomes and a broadcast's progress.
//!   - `retention`: summarising old broadcasts and pruning their per-recipient rows.
//! - [`stats`]: sends, clicks and conversions per promo over a time range.
//!
//! Writes that ops or the scheduler start ([`campaigns::create`], [`campaigns::set_paused`],
//! [`broadcasts::begin`]) take a connection and run in the caller's transaction: the caller
//! begins and commits it. [`broadcasts::fire_due`] and [`broadcasts::prune`] take the pool and
//! commit as they go, each slot or broadcast on its own.
//!
//! Clicks and their attribution to payments live in [`crate::tracking`].

pub mod broadcasts;
pub mod campaigns;
pub mod stats;

use crate::config::{ConfigError, optional, parsed_or};

/// Settings are what both processes read to manage and report on broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `TELEGRAM_BOT_USERNAME` (optional): the bot's username, without `@`, for promos'
    /// deep-link buttons (`https://t.me/<username>?start=…`).
    pub bot_username: Option<String>,
    /// `TELEGRAM_MESSAGES_PER_SECOND` (30 by default, more than 0 and at most 1000): the pace of
    /// all sends, by which a broadcast's finish is estimated.
    pub messages_per_second: f64,
}

impl Settings {
    /// Reads the settings; the error names the bad variable.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let messages_per_second: f64 = parsed_or("TELEGRAM_MESSAGES_PER_SECOND", 30.0)?;
        if !(messages_per_second > 0.0 && messages_per_second <= 1000.0) {
            return Err(ConfigError {
                var: "TELEGRAM_MESSAGES_PER_SECOND",
                problem: "must be more than 0 and at most 1000".into(),
            });
        }
        let bot_username = optional("TELEGRAM_BOT_USERNAME").map(|u| u.trim_start_matches('@').to_string());
        if let Some(name) = &bot_username
            && !((5..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(ConfigError {
                var: "TELEGRAM_BOT_USERNAME",
                problem: "must be a Telegram username: 5 to 32 of A-Z, a-z, 0-9 and _".into(),
            });
        }
        Ok(Settings {
            bot_username,
            messages_per_second,
        })
    }
}
