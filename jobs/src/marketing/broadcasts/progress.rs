//! What became of a broadcast's recipients: each one's [`Outcome`], written with its delivery,
//! and a broadcast's [`Progress`], counted from its recipients or, once they are pruned, from the
//! counts kept on its row.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::RATE_SHARE;
use crate::metrics::{self, counters};

/// Outcome is what became of one recipient's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The chat blocked the bot (or was already known to have).
    Unreachable,
    /// The message's job died.
    Failed,
}

impl Outcome {
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Unreachable => "unreachable",
            Outcome::Failed => "failed",
        }
    }
}

/// Records the outcome of broadcast `broadcast_id`'s message to `chat_id`, and counts it.
pub async fn record_outcome(
    conn: &mut PgConnection,
    broadcast_id: i64,
    chat_id: i64,
    outcome: Outcome,
) -> Result<(), sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE broadcast_recipients SET outcome = $3, done_at = now()
         WHERE broadcast_id = $1 AND chat_id = $2 AND outcome IS DISTINCT FROM $3",
    )
    .bind(broadcast_id)
    .bind(chat_id)
    .bind(outcome.name())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed > 0 {
        counters::add(
            conn,
            metrics::MARKETING_BROADCAST_RECIPIENTS,
            &format!("outcome=\"{}\"", outcome.name()),
        )
        .await?;
    }
    Ok(())
}

/// Progress is where a broadcast stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub id: i64,
    pub campaign: String,
    pub promo: String,
    /// The schedule slot it was sent for; none for a send-now.
    pub slot: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Whether every recipient is known: until then `total` grows.
    pub fanned_out: bool,
    pub total: i64,
    pub sent: i64,
    pub failed: i64,
    pub unreachable: i64,
    pub pending: i64,
    /// When the pending messages will have gone out at the broadcast's share of the send rate;
    /// none when nothing is pending.
    pub expected_finish_at: Option<DateTime<Utc>>,
    /// When its per-recipient rows were pruned and these counts kept on the broadcast instead;
    /// none until then.
    pub summarised_at: Option<DateTime<Utc>>,
}

/// Counts are a broadcast's recipients by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub total: i64,
    pub sent: i64,
    pub failed: i64,
    pub unreachable: i64,
}

#[derive(sqlx::FromRow)]
struct ProgressRow {
    campaign: String,
    promo: String,
    slot: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    fanned_out: bool,
    summarised_at: Option<DateTime<Utc>>,
    total: Option<i64>,
    sent: Option<i64>,
    failed: Option<i64>,
    unreachable: Option<i64>,
}

/// The progress of broadcast `id`; `per_second` is the send rate messages are paced at.
pub async fn progress(pool: &PgPool, id: i64, per_second: f64) -> Result<Option<Progress>, sqlx::Error> {
    let row: Option<ProgressRow> = sqlx::query_as(
        "SELECT campaign, promo, slot, created_at, fanned_out_at IS NOT NULL AS fanned_out,
                summarised_at, total, sent, failed, unreachable
         FROM broadcasts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let counts = match (row.total, row.sent, row.failed, row.unreachable) {
        (Some(total), Some(sent), Some(failed), Some(unreachable)) => Counts {
            total,
            sent,
            failed,
            unreachable,
        },
        _ => live_counts(&mut *pool.acquire().await?, id).await?,
    };
    let pending = counts.total - counts.sent - counts.failed - counts.unreachable;
    Ok(Some(Progress {
        id,
        campaign: row.campaign,
        promo: row.promo,
        slot: row.slot,
        created_at: row.created_at,
        fanned_out: row.fanned_out,
        total: counts.total,
        sent: counts.sent,
        failed: counts.failed,
        unreachable: counts.unreachable,
        pending,
        expected_finish_at: (pending > 0 && per_second > 0.0)
            .then(|| Utc::now() + Duration::from_secs_f64(pending as f64 / (RATE_SHARE * per_second))),
        summarised_at: row.summarised_at,
    }))
}

/// Counts broadcast `id`'s recipients by outcome from their rows.
pub(super) async fn live_counts(conn: &mut PgConnection, id: i64) -> Result<Counts, sqlx::Error> {
    let (total, sent, failed, unreachable): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE outcome = 'sent'),
                count(*) FILTER (WHERE outcome = 'failed'),
                count(*) FILTER (WHERE outcome = 'unreachable')
         FROM broadcast_recipients WHERE broadcast_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    // Recipients without an outcome whose job died without its handler recording it (a timeout,
    // a panic), was discarded, or is gone (discarded and pruned: a sent one has its outcome)
    // failed too. Looked up job by job, by key, for the recipients still without an outcome.
    let unrecorded_failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM broadcast_recipients r
         LEFT JOIN LATERAL (
             SELECT j.state FROM jobs j
             WHERE j.queue = 'notifications'
               AND j.logical_key = 'broadcast:' || r.broadcast_id || ':' || r.chat_id
         ) j ON true
         WHERE r.broadcast_id = $1 AND r.outcome IS NULL
           AND (j.state IS NULL OR j.state IN ('dead', 'discarded'))",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Counts {
        total,
        sent,
        failed: failed + unrecorded_failures,
        unreachable,
    })
}
