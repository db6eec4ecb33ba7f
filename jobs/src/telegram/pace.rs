//! The send pace every worker process shares, kept in PostgreSQL: Telegram allows about 30
//! messages a second from one bot, one a second to one chat and 20 a minute to one group.
//!
//! A sender reserves a send time with [`Pace::reserve`]. When the earliest allowed time is near,
//! it gets that slot and waits for it; when it is further than [`Pace::max_wait`], nothing is
//! reserved and the job is deferred to then, so no worker holds a slot while it waits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Pace is the configured send pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Messages a second across all chats.
    pub per_second: f64,
    /// The longest a sender waits in place for its slot.
    pub max_wait: Duration,
}

/// Slot is the answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Send at this time (now or shortly).
    Granted(DateTime<Utc>),
    /// Nothing reserved; come back at this time.
    NotBefore(DateTime<Utc>),
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
        let (granted, at): (bool, DateTime<Utc>) = sqlx::query_as(
            "SELECT granted, at FROM telegram_reserve_send(
                 $1, make_interval(secs => $2), make_interval(secs => $3), make_interval(secs => $4))",
        )
        .bind(chat_id)
        .bind(1.0 / self.per_second)
        .bind(Self::chat_interval(chat_id).as_secs_f64())
        .bind(self.max_wait.as_secs_f64())
        .fetch_one(pool)
        .await?;
        Ok(if granted {
            Slot::Granted(at)
        } else {
            Slot::NotBefore(at)
        })
    }

    /// Holds back `chat_id` until `until`: Telegram asked us to wait (429 `retry_after`).
    pub async fn hold_chat(pool: &PgPool, chat_id: i64, until: DateTime<Utc>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO telegram_send_slots (key, next_at) VALUES ('chat:' || $1, $2)
             ON CONFLICT (key) DO UPDATE SET next_at = greatest(telegram_send_slots.next_at, excluded.next_at)",
        )
        .bind(chat_id)
        .bind(until)
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
