//! Broadcasts: a campaign's due slot (or an operator's "send now") becomes one broadcast, which
//! fans out into one `notifications` job per recipient, a page at a time.
//!
//! - One broadcast per slot: [`begin`] locks the campaign row, checks the slot has not fired, and
//!   inserts the broadcast under `UNIQUE (campaign, slot)`, so any number of worker processes
//!   seeing the same slot come due make one broadcast.
//! - Fan-out in pages: each [`FanOut`] job resolves one page of the audience by keyset
//!   (`chat_id > after`), and in its effect transaction inserts the page's recipients
//!   (`ON CONFLICT DO NOTHING`), enqueues a message for each recipient it inserted, and enqueues
//!   the next page. No transaction holds more than a page; a job killed mid-page rolls back and
//!   its re-run does the page again; a recipient already inserted is never sent a second job.
//! - Spread: recipient `n`'s message is due `n / (RATE_SHARE × rate)` after the first page ran
//!   (`rate` is the send rate every message shares), not all at once, so that a message queued
//!   meanwhile (a payment's confirmation) is due before most of a large broadcast rather than
//!   behind all of it, and the rest of the rate is left to such messages.
//! - Outcomes: the notifications handler writes each recipient's outcome (sent, unreachable,
//!   failed) with its delivery; [`progress()`] counts them.
//!
//! # Layout
//! - `scheduler`: [`begin`] a broadcast for a slot or a send-now, [`fire_due`] the due slots.
//! - `fan_out`: one page of a broadcast's audience into its messages ([`fan_out()`], [`Page`]),
//!   and the `broadcasts` job that runs it ([`Broadcaster`]).
//! - `progress`: recipients' [`Outcome`]s and a broadcast's [`Progress`].
//! - `retention`: [`prune`] old broadcasts' per-recipient rows, keeping their counts.
//!
//! Here: the [`FanOut`] job and the keys of its messages.

pub mod fan_out;
mod progress;
mod retention;
mod scheduler;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::queue::{JobPayload, NewJob, Queue};

pub use fan_out::{Broadcaster, Page, fan_out};
pub use progress::{Outcome, Progress, progress, record_outcome};
pub use retention::{DEFAULT_BROADCAST_RETENTION, Pruned, prune};
pub use scheduler::{Started, begin, fire_due};

/// How many recipients one fan-out job takes.
pub const PAGE_SIZE: i64 = 1000;

/// The share of the send rate a broadcast's messages are spread over; the rest is headroom for
/// other messages sent meanwhile.
pub const RATE_SHARE: f64 = 0.9;

/// FanOut is the `broadcasts` queue's job: queue the messages of the recipients after `after`
/// (chat id order), one page of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    pub broadcast_id: i64,
    /// The last chat of the previous page; none for the first page.
    #[serde(default)]
    pub after: Option<i64>,
    /// Recipients in the pages before this one.
    #[serde(default)]
    pub before: i64,
    /// When the first page ran: the messages are spread from here. None for the first page.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
}

impl JobPayload for FanOut {
    const QUEUE: Queue = Queue::Broadcasts;
}

impl FanOut {
    /// The job, keyed by broadcast and page.
    pub fn job(&self) -> NewJob {
        let page = self.after.map_or_else(|| "first".to_string(), |a| a.to_string());
        NewJob::new(self, format!("broadcast:{}:after:{page}", self.broadcast_id))
    }
}

/// The logical key of broadcast `broadcast_id`'s message to `chat_id`.
pub fn message_key(broadcast_id: i64, chat_id: i64) -> String {
    format!("broadcast:{broadcast_id}:{chat_id}")
}
