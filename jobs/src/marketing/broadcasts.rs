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
//!   failed) with its delivery; [`progress`] counts them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::campaigns::{self, PromoMessage};
use crate::billing::counters;
use crate::db::PRUNE_BATCH;
use crate::queue::ops::DISCARD_SET;
use crate::queue::{JobPayload, NewJob, Queue, enqueue, enqueue_many};

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

/// Started is a broadcast just begun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    pub broadcast_id: i64,
    pub campaign: String,
    pub promo: String,
}

/// Begins a broadcast of campaign `name`: for the schedule `slot`, or now (`None`, "send now",
/// which also sends for a paused campaign). Returns none when the slot is no longer due (another
/// process fired it, or the campaign was paused) or the campaign does not exist.
pub async fn begin(pool: &PgPool, name: &str, slot: Option<DateTime<Utc>>) -> Result<Option<Started>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Under the campaign's row lock: a second process firing the same slot waits here and then
    // sees it fired; concurrent sends take their turns in the rotation.
    let Some(campaign) = campaigns::lock(&mut tx, name).await? else {
        return Ok(None);
    };
    if let Some(slot) = slot
        && campaign.due_slot(slot) != Some(slot)
    {
        return Ok(None);
    }
    let promo: Option<(String, Json<PromoMessage>, String, Vec<i64>)> = sqlx::query_as(
        "UPDATE campaigns c SET next_promo = c.next_promo + 1, last_slot = coalesce($2, c.last_slot)
         FROM campaign_promos p
         WHERE c.name = $1 AND p.campaign = c.name
           AND p.position = c.next_promo % (SELECT count(*) FROM campaign_promos q WHERE q.campaign = c.name)
         RETURNING p.name, p.message, c.audience, c.chat_ids",
    )
    .bind(name)
    .bind(slot)
    .fetch_optional(&mut *tx)
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
    .fetch_optional(&mut *tx)
    .await?;
    let Some(broadcast_id) = id else {
        return Ok(None);
    };
    enqueue(
        &mut tx,
        &FanOut {
            broadcast_id,
            after: None,
            before: 0,
            start: None,
        }
        .job(),
    )
    .await?;
    counters::add(&mut tx, "marketing_posts_total", &campaign_label(name)).await?;
    tx.commit().await?;
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
pub async fn fire_due(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Started>, sqlx::Error> {
    let mut started = Vec::new();
    for campaign in campaigns::unpaused(pool).await? {
        if let Some(slot) = campaign.due_slot(now)
            && let Some(s) = begin(pool, &campaign.name, Some(slot)).await?
        {
            started.push(s);
        }
    }
    Ok(started)
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
            "marketing_broadcast_recipients_total",
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
struct Counts {
    total: i64,
    sent: i64,
    failed: i64,
    unreachable: i64,
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
async fn live_counts(conn: &mut PgConnection, id: i64) -> Result<Counts, sqlx::Error> {
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

/// Pruned is what one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Broadcasts whose counts were kept on their row.
    pub summarised: u64,
    /// Recipient rows deleted, each with its message's delivery and effect ledger rows.
    pub recipients: u64,
}

/// How long a broadcast's per-recipient rows are kept after its fan-out finished, unless
/// configured (`BROADCAST_RETENTION_DAYS`): thirty days.
pub const DEFAULT_BROADCAST_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Summarises every broadcast whose fan-out finished more than `retention` ago and none of
/// whose messages is still queued or running (their counts are final), then deletes the
/// recipients of summarised broadcasts with their messages' delivery and effect ledger rows, in
/// batches. Safe to run in every worker process at once; a pass may take long, so it must not run
/// where it would hold up heartbeats.
///
/// Nothing can send a pruned message again: its recipient row is what a re-run fan-out checks, a
/// summarised broadcast's fan-out jobs have all completed (their own ledger rows stay), and its
/// messages' jobs are completed or discarded, never to run again (see [`summarise`]).
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<Pruned, sqlx::Error> {
    let mut pruned = Pruned::default();
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM broadcasts
         WHERE summarised_at IS NULL AND fanned_out_at < now() - make_interval(secs => $1)
         ORDER BY id",
    )
    .bind(retention.as_secs_f64())
    .fetch_all(pool)
    .await?;
    for id in due {
        if summarise(pool, id).await? {
            pruned.summarised += 1;
        }
    }
    // Summarised broadcasts with recipients left: those just summarised, and any whose pruning
    // a stopped pass left half done. Probed by primary key, broadcast by broadcast.
    let summarised: Vec<i64> = sqlx::query_scalar(
        "SELECT b.id FROM broadcasts b
         WHERE b.summarised_at IS NOT NULL
           AND EXISTS (SELECT 1 FROM broadcast_recipients r WHERE r.broadcast_id = b.id)
         ORDER BY b.id",
    )
    .fetch_all(pool)
    .await?;
    for id in summarised {
        let mut after = i64::MIN;
        loop {
            // One statement per batch, so a recipient never outlives its message's delivery or
            // ledger row (or the reverse) whatever stops the pass. Batches walk the chats in
            // order from where the last one ended, not over the index entries it deleted.
            let (n, last): (i64, Option<i64>) = sqlx::query_as(
                "WITH gone AS (
                     DELETE FROM broadcast_recipients
                     WHERE broadcast_id = $1 AND chat_id IN (
                         SELECT chat_id FROM broadcast_recipients
                         WHERE broadcast_id = $1 AND chat_id > $2
                         ORDER BY chat_id LIMIT $3)
                     RETURNING chat_id, 'broadcast:' || broadcast_id || ':' || chat_id AS key
                 ), deliveries AS (
                     DELETE FROM telegram_deliveries WHERE logical_key IN (SELECT key FROM gone)
                 ), ledger AS (
                     DELETE FROM effect_ledger
                     WHERE queue = 'notifications' AND logical_key IN (SELECT key FROM gone)
                 )
                 SELECT count(*), max(chat_id) FROM gone",
            )
            .bind(id)
            .bind(after)
            .bind(PRUNE_BATCH)
            .fetch_one(pool)
            .await?;
            pruned.recipients += n as u64;
            match last {
                Some(last) => after = last,
                // Done, or another process deleted this batch first and carries on past it (or
                // the next pass does).
                None => break,
            }
        }
    }
    Ok(pruned)
}

/// Keeps broadcast `id`'s counts on its row, unless another process is doing so or one of its
/// messages is still queued or running (or died meanwhile); returns whether it did.
///
/// Its dead messages are discarded in the same transaction: its counts are final, a retry weeks
/// later would send a stale promo, and a dead job may even have delivered (its worker was
/// presumed dead and its job given up while it sent), which only the delivery and ledger rows
/// about to be pruned would have caught. Discarding before the check for queued messages means
/// an ops retry either came first (the check sees it queued and nothing is summarised) or finds
/// the job discarded.
async fn summarise(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mine: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM broadcasts WHERE id = $1 AND summarised_at IS NULL FOR UPDATE SKIP LOCKED")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    // Rolled back explicitly: a dropped transaction's rollback waits for its connection's next
    // use, and until then its locks would hold up other processes and ops.
    if mine.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    // Dead notification jobs are few: found through their partial index.
    let discarded = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{DISCARD_SET} WHERE queue = 'notifications' AND state = 'dead' AND logical_key LIKE 'broadcast:' || $1 || ':%'"
    )))
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Any of its messages, whatever its recorded outcome (one retried by ops is queued again with
    // its `failed` outcome still recorded). A dead one now died since the discard: it was running
    // then, so back off too. Once none is queued, running or dead, none can become so before
    // this commits: a retry waits on the discard's row locks and then finds the job discarded.
    let unsettled: bool = sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM broadcast_recipients r
             JOIN jobs j ON j.queue = 'notifications'
                        AND j.logical_key = 'broadcast:' || r.broadcast_id || ':' || r.chat_id
             WHERE r.broadcast_id = $1 AND j.state IN ('pending', 'running', 'dead'))",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if unsettled {
        tx.rollback().await?;
        return Ok(false);
    }
    let counts = live_counts(&mut tx, id).await?;
    sqlx::query(
        "UPDATE broadcasts SET summarised_at = now(), total = $2, sent = $3, failed = $4, unreachable = $5
         WHERE id = $1",
    )
    .bind(id)
    .bind(counts.total)
    .bind(counts.sent)
    .bind(counts.failed)
    .bind(counts.unreachable)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(broadcast_id = id, ?counts, discarded, "broadcast summarised");
    Ok(true)
}
