//! The `notifications` job: one Telegram message to one chat.
//!
//! Order of an attempt: a message already recorded as delivered is not sent again; an unreachable
//! chat is not sent to; the send waits for a slot of the shared pace; the message goes out; the
//! delivery, ledger row and job completion commit together. A message of a broadcast also settles
//! its recipient's outcome, in the same transaction (or, when the job goes dead, as failed).
//!
//! The remaining crash window: a worker that dies after Telegram accepted the message and before
//! that commit (or whose database stays unreachable for the ~50 s the record is retried) leaves
//! the job to be run again, and the message is sent a second time. Telegram offers no
//! idempotency key for sendMessage, so this window (one HTTP response plus one commit) can be
//! narrowed but not closed. A send that times out is retried too, and may likewise have been
//! delivered.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;

use crate::marketing::broadcasts::{self, Outcome};
use crate::metrics::JobStats;
use crate::queue::lease::{self, Lease};
use crate::queue::{Completed, EffectTx, Job, JobError, apply_once, complete_unchanged};
use crate::telegram::client::{SendError, TelegramClient};
use crate::telegram::pace::{Pace, Slot};
use crate::telegram::store;
use crate::telegram::{self, SendMessage};

/// Notifier is what the `notifications` job runs with.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub pool: PgPool,
    pub stats: Arc<JobStats>,
    pub telegram: TelegramClient,
    pub pace: Pace,
    /// The worker process's lease, checked just before every send.
    pub lease: Lease,
}

/// Runs one attempt of a `notifications` job.
pub async fn send(notifier: &Notifier, job: Job<SendMessage>) -> Result<Completed, JobError> {
    let (attempt, max_attempts) = (job.attempt, job.max_attempts);
    let (chat_id, broadcast_id) = (job.payload.chat_id, job.payload.broadcast_id);
    let result = deliver(notifier, job).await;
    if let (Err(e), Some(broadcast_id)) = (&result, broadcast_id)
        && e.is_final(attempt, max_attempts)
    {
        // The job goes dead: its recipient counts as failed (until ops retry it).
        let failed = async {
            let mut conn = notifier.pool.acquire().await?;
            broadcasts::record_outcome(&mut conn, broadcast_id, chat_id, Outcome::Failed).await
        };
        if let Err(e) = failed.await {
            tracing::warn!(broadcast_id, chat_id, error = %e, "recording a failed broadcast message failed");
        }
    }
    result
}

async fn deliver(notifier: &Notifier, job: Job<SendMessage>) -> Result<Completed, JobError> {
    let pool = &notifier.pool;
    let message = &job.payload;
    {
        let mut conn = pool.acquire().await?;
        if store::delivery(&mut conn, &job.logical_key).await?.is_some() {
            return complete_unchanged(pool, &job).await;
        }
        if let Some(reason) = store::unreachable_reason(&mut conn, message.chat_id).await? {
            tracing::info!(
                job = job.id,
                chat = message.chat_id,
                reason,
                "chat unreachable, not sending"
            );
            return apply_once(pool, &job, async |tx| record(tx, &job, None).await).await;
        }
    }
    match notifier.pace.reserve(pool, message.chat_id).await? {
        Slot::NotBefore(wait) => {
            return Err(JobError::RetryAfter {
                delay: wait,
                reason: None,
            });
        }
        Slot::Granted(wait) => tokio::time::sleep(wait).await,
    }
    // A 429 for this chat since the slot was granted: the slot is inside Telegram's window.
    if let Some(wait) = Pace::held(pool, message.chat_id).await? {
        return Err(JobError::RetryAfter {
            delay: wait,
            reason: None,
        });
    }
    // The last moment before the send: after it, a second worker running this job would send
    // the message again.
    lease::hold_for(pool, &notifier.lease, &job, telegram::client::TIMEOUT).await?;
    match notifier.telegram.send_message(message).await {
        Ok(message_id) => {
            // Telegram has the message now: a database hiccup must not lead to a second send, so
            // the record is retried here (about 50 s in all) before the attempt is given up.
            (|| apply_once(pool, &job, async |tx| record(tx, &job, Some(message_id)).await))
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_times(8),
                )
                .notify(|e, wait| tracing::warn!(job = job.id, error = %e, ?wait, "recording a sent message failed"))
                .await
        }
        Err(SendError::Unreachable(reason)) => {
            tracing::info!(
                job = job.id,
                chat = message.chat_id,
                reason,
                "chat unreachable, marking it"
            );
            apply_once(pool, &job, async |tx| {
                store::mark_unreachable(tx.conn(), message.chat_id, &reason).await?;
                record(tx, &job, None).await
            })
            .await
        }
        Err(e) => {
            if let SendError::RetryAfter(wait) = e {
                // Flood control is per chat as well: the chat's next sends wait too.
                Pace::hold_chat(pool, message.chat_id, wait).await?;
            }
            Err(e.into())
        }
    }
}

async fn record(tx: &mut EffectTx, job: &Job<SendMessage>, message_id: Option<i64>) -> Result<(), sqlx::Error> {
    let chat_id = job.payload.chat_id;
    store::record_delivery(tx.conn(), &job.logical_key, job.id, chat_id, message_id).await?;
    if let Some(broadcast_id) = job.payload.broadcast_id {
        let outcome = if message_id.is_some() {
            Outcome::Sent
        } else {
            Outcome::Unreachable
        };
        broadcasts::record_outcome(tx.conn(), broadcast_id, chat_id, outcome).await?;
    }
    Ok(())
}
