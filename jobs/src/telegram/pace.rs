//! The send pace every worker process shares, kept in PostgreSQL: Telegram allows about 30
//! messages a second from one bot, one a second to one chat and 20 a minute to one group.
//!
//! A sender reserves a send time with [`Pace::reserve`]. When the earliest allowed time is near,
//! it gets that slot and waits for it; when it is further than [`Pace::max_wait`], nothing is
//! reserved and the job is deferred to then, so no worker holds a slot while it waits.

use std::time::Duration;

use sqlx::PgPool;

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

    /// The gap a chat needs between two messages: groups (negative ids) get 20 a minute.
    pub fn chat_interval(chat_id: i64) -> Duration {
        if chat_id < 0 {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(1)
        }
    }

    /// Reserves the earliest send time for `chat_id`.
    pub async fn reserve(&self, pool: &PgPool, chat_id: i64) -> Result<Slot, sqlx::Error> {
        let (granted, wait): (bool, f64) = sqlx::query_as(
            "SELECT granted, greatest(extract(epoch FROM at - clock_timestamp()), 0)::float8
             FROM telegram_reserve_send(
                 $1, make_interval(secs => $2), make_interval(secs => $3), make_interval(secs => $4))",
        )
        .bind(chat_id)
        .bind(1.0 / self.per_second)
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

    /// Holds back `chat_id` for `wait`: Telegram asked us to (429 `retry_after`).
    pub async fn hold_chat(pool: &PgPool, chat_id: i64, wait: Duration) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO telegram_send_slots (key, next_at) VALUES ('chat:' || $1, clock_timestamp() + make_interval(secs => $2))
             ON CONFLICT (key) DO UPDATE SET next_at = greatest(telegram_send_slots.next_at, excluded.next_at)",
        )
        .bind(chat_id)
        .bind(wait.as_secs_f64())
        .execute(pool)
        .await?;
        Ok(())
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
