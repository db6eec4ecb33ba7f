//! The scheduler's side of broadcasts: a campaign's due slot, or an operator's send-now, becomes
//! one broadcast with its first fan-out job, under the campaign's row lock.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::FanOut;
use crate::marketing::campaigns::{self, PromoMessage};
use crate::metrics::{self, counters};
use crate::queue::enqueue;

/// Started is a broadcast just begun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    pub broadcast_id: i64,
    pub campaign: String,
    pub promo: String,
}

/// Begins a broadcast of campaign `name` through `conn`, in the caller's transaction: for the
/// schedule `slot`, or now (`None`, "send now", which also sends for a paused campaign). The
/// campaign's row stays locked until the caller commits or rolls back. Returns none, having
/// written nothing, when the slot is no longer due (another process fired it, or the campaign was
/// paused) or the campaign does not exist.
pub async fn begin(
    conn: &mut PgConnection,
    name: &str,
    slot: Option<DateTime<Utc>>,
) -> Result<Option<Started>, sqlx::Error> {
    // Under the campaign's row lock: a second process firing the same slot waits here and then
    // sees it fired; concurrent sends take their turns in the rotation.
    let Some(campaign) = campaigns::lock(&mut *conn, name).await? else {
        return Ok(None);
    };
    if let Some(slot) = slot
        && campaign.due_slot(slot) != Some(slot)
    {
        return Ok(None);
    }
    // The promo whose turn it is. The rotation moves on only once the broadcast is in, so that
    // a none below leaves nothing written; the row lock keeps the turn from moving meanwhile.
    let promo: Option<(String, Json<PromoMessage>, String, Vec<i64>)> = sqlx::query_as(
        "SELECT p.name, p.message, c.audience, c.chat_ids
         FROM campaigns c JOIN campaign_promos p ON p.campaign = c.name
         WHERE c.name = $1
           AND p.position = c.next_promo % (SELECT count(*) FROM campaign_promos q WHERE q.campaign = c.name)",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((promo, message, audience, chat_ids)) = promo else {
        return Ok(None);
    };
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO broadcasts (campaign, promo, slot, audience, chat_ids, message)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (campaign, slot) DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(&promo)
    .bind(slot)
    .bind(&audience)
    .bind(&chat_ids)
    .bind(&message)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(broadcast_id) = id else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE campaigns SET next_promo = next_promo + 1, last_slot = coalesce($2, last_slot) WHERE name = $1",
    )
    .bind(name)
    .bind(slot)
    .execute(&mut *conn)
    .await?;
    enqueue(
        &mut *conn,
        &FanOut {
            broadcast_id,
            after: None,
            before: 0,
            start: None,
        }
        .job(),
    )
    .await?;
    counters::add(&mut *conn, metrics::MARKETING_POSTS, &campaign_label(name)).await?;
    tracing::info!(broadcast_id, campaign = name, promo, ?slot, "broadcast begun");
    Ok(Some(Started {
        broadcast_id,
        campaign: name.into(),
        promo,
    }))
}

fn campaign_label(name: &str) -> String {
    // Campaign names are [A-Za-z0-9_]: nothing to escape.
    format!("campaign=\"{name}\"")
}

/// The scheduler's pass: begins a broadcast for every unpaused campaign whose latest slot has
/// not fired. Safe to run in every worker process at once.
///
/// Takes the pool, not a caller's transaction: each slot is begun in a transaction of its own,
/// so that a campaign's row lock is held only while its own broadcast begins, and each broadcast
/// is committed (and its fan-out can start) without waiting for the rest of the pass.
pub async fn fire_due(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Started>, sqlx::Error> {
    let mut started = Vec::new();
    for campaign in campaigns::unpaused(pool).await? {
        let Some(slot) = campaign.due_slot(now) else {
            continue;
        };
        let mut tx = pool.begin().await?;
        let begun = begin(&mut tx, &campaign.name, Some(slot)).await?;
        tx.commit().await?;
        started.extend(begun);
    }
    Ok(started)
}
