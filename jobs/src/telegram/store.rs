//! What we record about Telegram chats and deliveries.

use sqlx::PgConnection;

/// Delivery is the record of one notification job's message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub chat_id: i64,
    /// `sent` or `unreachable`.
    pub status: String,
    pub message_id: Option<i64>,
}

/// The delivery recorded for notification `logical_key`, if any.
pub async fn delivery(conn: &mut PgConnection, logical_key: &str) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as("SELECT chat_id, status, message_id FROM telegram_deliveries WHERE logical_key = $1")
        .bind(logical_key)
        .fetch_optional(conn)
        .await
}

/// Records the delivery of notification `logical_key` by job `job_id`.
pub async fn record_delivery(
    conn: &mut PgConnection,
    logical_key: &str,
    job_id: i64,
    chat_id: i64,
    message_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    let status = if message_id.is_some() { "sent" } else { "unreachable" };
    sqlx::query(
        "INSERT INTO telegram_deliveries (logical_key, chat_id, status, message_id, job_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(logical_key)
    .bind(chat_id)
    .bind(status)
    .bind(message_id)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why `chat_id` is unreachable, if it is.
pub async fn unreachable_reason(conn: &mut PgConnection, chat_id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT unreachable_reason FROM telegram_chats WHERE chat_id = $1 AND unreachable_at IS NOT NULL",
    )
    .bind(chat_id)
    .fetch_optional(conn)
    .await
}

/// Marks `chat_id` unreachable: no more sends until the user talks to the bot again.
pub async fn mark_unreachable(conn: &mut PgConnection, chat_id: i64, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO telegram_chats (chat_id, unreachable_at, unreachable_reason) VALUES ($1, now(), $2)
         ON CONFLICT (chat_id) DO UPDATE SET unreachable_at = now(), unreachable_reason = excluded.unreachable_reason",
    )
    .bind(chat_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `chat_id` (a user's private chat) joined the bot's audience at `at`, if it had
/// not before. `unblocked`: the user wrote to the bot, which they cannot while blocking it, so a
/// block recorded before `at` is lifted.
pub async fn saw_chat(
    conn: &mut PgConnection,
    chat_id: i64,
    at: chrono::DateTime<chrono::Utc>,
    unblocked: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO telegram_chats (chat_id, first_seen_at, last_seen_at)
         VALUES ($1, $2, CASE WHEN $3 THEN $2::timestamptz END)
         ON CONFLICT (chat_id) DO UPDATE SET
             first_seen_at = coalesce(telegram_chats.first_seen_at, excluded.first_seen_at),
             last_seen_at = CASE WHEN $3 THEN greatest(telegram_chats.last_seen_at, excluded.first_seen_at)
                                 ELSE telegram_chats.last_seen_at END,
             unreachable_reason = CASE WHEN $3 AND telegram_chats.unreachable_at < excluded.first_seen_at
                                       THEN NULL ELSE telegram_chats.unreachable_reason END,
             unreachable_at = CASE WHEN $3 AND telegram_chats.unreachable_at < excluded.first_seen_at
                                   THEN NULL ELSE telegram_chats.unreachable_at END",
    )
    .bind(chat_id)
    .bind(at)
    .bind(unblocked)
    .execute(conn)
    .await?;
    Ok(())
}

/// What Telegram says when a user blocked the bot, as a send's 403 says it.
pub const BLOCKED_BY_USER: &str = "Forbidden: bot was blocked by the user";

/// Records that the user of private chat `chat_id` blocked the bot at `at` (a `my_chat_member`
/// update), unless they wrote to it after that: updates may arrive out of order.
pub async fn blocked_by_user(
    conn: &mut PgConnection,
    chat_id: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO telegram_chats (chat_id, unreachable_at, unreachable_reason) VALUES ($1, $2, $3)
         ON CONFLICT (chat_id) DO UPDATE SET
             unreachable_at = greatest(telegram_chats.unreachable_at, excluded.unreachable_at),
             unreachable_reason = excluded.unreachable_reason
         WHERE telegram_chats.last_seen_at IS NULL OR telegram_chats.last_seen_at < excluded.unreachable_at",
    )
    .bind(chat_id)
    .bind(at)
    .bind(BLOCKED_BY_USER)
    .execute(conn)
    .await?;
    Ok(())
}
