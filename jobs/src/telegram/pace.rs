//! The send pace every worker process shares, kept in PostgreSQL: Telegram allows about 30
//! messages a second from one bot, one a second to one chat and 20 a minute to one group.
//!
//! A sender reserves a send time with [`Pace::reserve`]. When the earliest allowed time is near,
//! it gets that slot and waits for it; when it is further than [`Pace::max_wait`], nothing is
//! reserved and the job is deferred to then, so no worker holds a slot while it waits.
//!
//! Every gap is kept longer than Telegram's limit ([`MARGIN`], [`CHAT_MARGIN`]): Telegram counts
//! by when requests arrive, and a send reaches it some milliseconds after its slot (the checks
//! just before it, the network, a new connection's handshake).

use std::time::Duration;

use sqlx::PgPool;

/// How much longer than Telegram's limits the gaps between sends are: 5%, 50 ms between two
/// messages to one chat, and at 30 messages a second about 28.6 sent in any second.
pub const MARGIN: f64 = 1.05;

/// How much longer than Telegram's limit the gap between two messages to one chat is: 10%, 100 ms
/// (300 ms in a group). One send that reaches Telegram late shortens the gap to the next one by
/// as much, and the first send on a new connection waits for its handshake: 50 ms was seen to
/// be too little on a loaded machine.
pub const CHAT_MARGIN: f64 = 1.1;

/// Pace is the configured send pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Messages a second across all chats.
    pub per_second: f64,
    /// The longest a sender waits in place for its slot.
    pub max_wait: Duration,
}

/// Slot is the answer to a reservation. Waits are measured by the database's clock, the one
/// the slots are kept in, so a worker whose clock is off neither sends early nor spins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Send after this wait (zero or short).
    Granted(Duration),
    /// Nothing reserved; come back after this wait.
    NotBefore(Duration),
}

impl Pace {
    /// Telegram's documented limit for ordinary bots.
    pub const TELEGRAM_DEFAULT: Pace = Pace {
        per_second: 30.0,
        max_wait: Duration::from_secs(2),
    };

    /// The gap kept between two messages to a chat: Telegram allows one a second to a chat and
    /// 20 a minute to a group (negative ids), with [`CHAT_MARGIN`].
    pub fn chat_interval(chat_id: i64) -> Duration {
        let limit = if chat_id < 0 {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(1)
        };
        limit.mul_f64(CHAT_MARGIN)
    }

    /// The gap kept between two messages of the bot: `per_second` allows, with [`MARGIN`].
    pub fn send_interval(&self) -> Duration {
        Duration::from_secs_f64(MARGIN / self.per_second)
    }

    /// Reserves the earliest send time for `chat_id`.
    pub async fn reserve(&self, pool: &PgPool, chat_id: i64) -> Result<Slot, sqlx::Error> {
        let (granted, wait): (bool, f64) = sqlx::query_as(
            "SELECT granted, greatest(extract(epoch FROM at - clock_timestamp()), 0)::float8
             FROM telegram_reserve_send(
                 $1, make_interval(secs => $2), make_interval(secs => $3), make_interval(secs => $4))",
        )
        .bind(chat_id)
        .bind(self.send_interval().as_secs_f64())
        .bind(Self::chat_interval(chat_id).as_secs_f64())
        .bind(self.max_wait.as_secs_f64())
        .fetch_one(pool)
        .await?;
        let wait = Duration::from_secs_f64(wait);
        Ok(if granted {
            Slot::Granted(wait)
        } else {
            Slot::NotBefore(wait)
        })
    }

    /// Holds back `chat_id` for `wait`: Telegram asked us to (429 `retry_after`). Reservations
    /// made from now on come after it; sends already granted a slot find it in [`Pace::held`].
    pub async fn hold_chat(pool: &PgPool, chat_id: i64, wait: Duration) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO telegram_send_slots (key, next_at)
             SELECT prefix || $1, clock_timestamp() + make_interval(secs => $2)
             FROM unnest(ARRAY['chat:', 'hold:']) AS prefix
             ON CONFLICT (key) DO UPDATE SET next_at = greatest(telegram_send_slots.next_at, excluded.next_at)",
        )
        .bind(chat_id)
        .bind(wait.as_secs_f64())
        .execute(pool)
        .await?;
        Ok(())
    }

    /// How much longer Telegram asked `chat_id` to wait, if it still must: a send granted its
    /// slot before a 429 looks here just before it goes.
    pub async fn held(pool: &PgPool, chat_id: i64) -> Result<Option<Duration>, sqlx::Error> {
        let wait: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM next_at - clock_timestamp())::float8 FROM telegram_send_slots
             WHERE key = 'hold:' || $1 AND next_at > clock_timestamp()",
        )
        .bind(chat_id)
        .fetch_optional(pool)
        .await?;
        Ok(wait.map(|w| Duration::from_secs_f64(w.max(0.0))))
    }

    /// Deletes chat slots that have not been used for an hour.
    pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query(
                "DELETE FROM telegram_send_slots WHERE key <> 'global' AND next_at < now() - interval '1 hour'",
            )
            .execute(pool)
            .await?
            .rows_affected(),
        )
    }
}
