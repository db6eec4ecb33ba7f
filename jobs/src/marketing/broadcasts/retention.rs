//! Retention: a broadcast whose fan-out finished long ago and whose messages have all settled is
//! summarised (its counts kept on its row), then its per-recipient rows are deleted in batches
//! with their messages' delivery and effect ledger rows.

use std::time::Duration;

use sqlx::PgPool;

use super::progress::live_counts;
use crate::db::PRUNE_BATCH;
use crate::queue::ops::DISCARD_SET;

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
    // Its own transaction, not a caller's: each broadcast is summarised (or backed off from) and
    // its locks released on its own, as the pass goes, and the pruning batches after it see it.
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
