//! The fan-out: one [`FanOut`] job resolves one page of its broadcast's audience, inserts the
//! page's recipients and queues a message for each new one, spread over the send rate, then
//! queues the next page (or marks the broadcast fanned out).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::{FanOut, RATE_SHARE, message_key};
use crate::marketing::campaigns::PromoMessage;
use crate::metrics::JobStats;
use crate::queue::{Completed, Job, JobError, NewJob, apply_once, enqueue, enqueue_many};

/// Broadcaster is what the `broadcasts` job runs with.
#[derive(Debug, Clone)]
pub struct Broadcaster {
    pub pool: PgPool,
    pub stats: Arc<JobStats>,
    /// Recipients per fan-out job.
    pub page_size: i64,
    /// The send rate the messages are spread at.
    pub per_second: f64,
}

/// Runs one attempt of a `broadcasts` job: one page of the fan-out, in its effect transaction.
pub async fn run(broadcaster: &Broadcaster, job: Job<FanOut>) -> Result<Completed, JobError> {
    apply_once(&broadcaster.pool, &job, async |tx| {
        let page = fan_out(tx.conn(), &job.payload, broadcaster.page_size, broadcaster.per_second).await?;
        tracing::info!(
            broadcast_id = job.payload.broadcast_id,
            recipients = page.recipients,
            queued = page.queued,
            last = page.last,
            "broadcast page fanned out"
        );
        Ok::<(), sqlx::Error>(())
    })
    .await
}

/// Page is what one fan-out job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Recipients in the page.
    pub recipients: usize,
    /// Messages queued: recipients not already in the broadcast.
    pub queued: usize,
    /// Whether this was the last page.
    pub last: bool,
}

/// Broadcast is what the fan-out reads of its broadcast.
#[derive(sqlx::FromRow)]
struct Broadcast {
    audience: String,
    chat_ids: Vec<i64>,
    message: Json<PromoMessage>,
    created_at: DateTime<Utc>,
}

/// Does one page of `job`'s fan-out of at most `page_size` recipients through `conn`, the job's
/// effect transaction; messages are spread at `per_second`.
pub async fn fan_out(
    conn: &mut PgConnection,
    job: &FanOut,
    page_size: i64,
    per_second: f64,
) -> Result<Page, sqlx::Error> {
    let broadcast: Option<Broadcast> =
        sqlx::query_as("SELECT audience, chat_ids, message, created_at FROM broadcasts WHERE id = $1")
            .bind(job.broadcast_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(Broadcast {
        audience,
        chat_ids,
        message,
        created_at,
    }) = broadcast
    else {
        return Err(sqlx::Error::RowNotFound);
    };
    let after = job.after.unwrap_or(i64::MIN);
    let page: Vec<i64> = if audience == "chats" {
        sqlx::query_scalar(
            "SELECT id FROM unnest($1::bigint[]) AS id
             WHERE id > $2
               AND NOT EXISTS (SELECT 1 FROM telegram_chats c WHERE c.chat_id = id AND c.unreachable_at IS NOT NULL)
             GROUP BY id ORDER BY id LIMIT $3",
        )
        .bind(&chat_ids)
        .bind(after)
        .bind(page_size)
        .fetch_all(&mut *conn)
        .await?
    } else {
        // Users who wrote to the bot before the broadcast began, still reachable, not banned,
        // and for `without_entitlement` without access now.
        sqlx::query_scalar(
            "SELECT c.chat_id FROM telegram_chats c
             WHERE c.chat_id > greatest($1, 0) AND c.first_seen_at <= $2 AND c.unreachable_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM telegram_users u WHERE u.id = c.chat_id AND u.banned)
               AND ($3 = 'all_users' OR NOT EXISTS (
                   SELECT 1 FROM entitlements e
                   WHERE e.user_id = c.chat_id AND e.status = 'active' AND e.expires_at > now()))
             ORDER BY c.chat_id LIMIT $4",
        )
        .bind(after)
        .bind(created_at)
        .bind(&audience)
        .bind(page_size)
        .fetch_all(&mut *conn)
        .await?
    };
    let inserted: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO broadcast_recipients (broadcast_id, chat_id) SELECT $1, unnest($2::bigint[])
         ON CONFLICT DO NOTHING RETURNING chat_id",
    )
    .bind(job.broadcast_id)
    .bind(&page)
    .fetch_all(&mut *conn)
    .await?;
    // Spread from when the first page ran (not from the broadcast's creation: a fan-out that
    // started late would otherwise make its first pages due at once).
    let start = job.start.unwrap_or_else(|| created_at.max(Utc::now()));
    let messages: Vec<NewJob> = inserted
        .iter()
        .map(|&chat| {
            // Its place in the broadcast: the pages before, then its place in this one (the page
            // is in chat order).
            let n = job.before + page.binary_search(&chat).unwrap_or_default() as i64;
            let at = start + Duration::from_secs_f64(n as f64 / (RATE_SHARE * per_second));
            NewJob::new(&message.to(chat, job.broadcast_id), message_key(job.broadcast_id, chat)).run_at(at)
        })
        .collect();
    let queued = enqueue_many(conn, &messages).await?;
    let last = (page.len() as i64) < page_size;
    match page.last() {
        Some(&last_chat) if !last => {
            enqueue(
                conn,
                &FanOut {
                    broadcast_id: job.broadcast_id,
                    after: Some(last_chat),
                    before: job.before + page.len() as i64,
                    start: Some(start),
                }
                .job(),
            )
            .await?;
        }
        _ => {
            sqlx::query("UPDATE broadcasts SET fanned_out_at = now() WHERE id = $1 AND fanned_out_at IS NULL")
                .bind(job.broadcast_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(Page {
        recipients: page.len(),
        queued,
        last,
    })
}
