//! What the bot knows of paid chats: what it last did per user and chat (`chat_access`), the
//! links it made (`chat_invite_links`), and who is in each chat (`chat_members`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Access is what the bot last did about one user in one chat.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Access {
    pub granted: bool,
    pub invite_link: Option<String>,
    pub link_expires_at: Option<DateTime<Utc>>,
    pub outcome: String,
}

impl Access {
    /// The unused link the user holds, if it is still valid at `at`.
    pub fn valid_link(&self, at: DateTime<Utc>) -> Option<&str> {
        match (&self.invite_link, self.link_expires_at) {
            (Some(link), Some(expires)) if self.granted && expires > at => Some(link),
            _ => None,
        }
    }
}

pub async fn access_of(conn: &mut PgConnection, user_id: i64, chat_id: i64) -> Result<Option<Access>, sqlx::Error> {
    sqlx::query_as(
        "SELECT granted, invite_link, link_expires_at, outcome FROM chat_access WHERE user_id = $1 AND chat_id = $2",
    )
    .bind(user_id)
    .bind(chat_id)
    .fetch_optional(conn)
    .await
}

/// Records what was done, without a link.
pub async fn record(
    conn: &mut PgConnection,
    user_id: i64,
    chat_id: i64,
    granted: bool,
    invite_link: Option<&str>,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_access (user_id, chat_id, granted, invite_link, outcome) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, chat_id) DO UPDATE SET granted = excluded.granted,
             invite_link = excluded.invite_link, link_expires_at = NULL, outcome = excluded.outcome,
             updated_at = now()",
    )
    .bind(user_id)
    .bind(chat_id)
    .bind(granted)
    .bind(invite_link)
    .bind(outcome)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records that `link`, valid until `expires_at`, was made for the user.
pub async fn record_link(
    conn: &mut PgConnection,
    user_id: i64,
    chat_id: i64,
    link: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_access (user_id, chat_id, granted, invite_link, link_expires_at, outcome)
         VALUES ($1, $2, true, $3, $4, 'link_sent')
         ON CONFLICT (user_id, chat_id) DO UPDATE SET granted = true, invite_link = excluded.invite_link,
             link_expires_at = excluded.link_expires_at, outcome = 'link_sent', updated_at = now()",
    )
    .bind(user_id)
    .bind(chat_id)
    .bind(link)
    .bind(expires_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Remembers whom `link` was made for.
pub async fn issue_link(conn: &mut PgConnection, link: &str, chat_id: i64, user_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_invite_links (invite_link, chat_id, user_id) VALUES ($1, $2, $3)
         ON CONFLICT (invite_link) DO NOTHING",
    )
    .bind(link)
    .bind(chat_id)
    .bind(user_id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The links made for `user_id` in `chat_id` that are neither revoked nor past `LINK_TTL`.
pub async fn unrevoked_links(conn: &mut PgConnection, user_id: i64, chat_id: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT invite_link FROM chat_invite_links
         WHERE user_id = $1 AND chat_id = $2 AND revoked_at IS NULL AND created_at > now() - make_interval(secs => $3)
         ORDER BY created_at",
    )
    .bind(user_id)
    .bind(chat_id)
    .bind(super::LINK_TTL.as_seconds_f64())
    .fetch_all(conn)
    .await
}

/// Records that `links` were revoked, also as the unused link of whoever held one.
pub async fn revoked(conn: &mut PgConnection, links: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE chat_invite_links SET revoked_at = now() WHERE invite_link = ANY($1) AND revoked_at IS NULL")
        .bind(links)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE chat_access SET invite_link = NULL, link_expires_at = NULL, updated_at = now() WHERE invite_link = ANY($1)",
    )
    .bind(links)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records, before the bot bans `user_id` from `chat_id`, that it is removing them: a ban found
/// later is then known as the bot's own (to lift), not an administrator's (to keep), and a user
/// found out of the chat is known as removed by the bot (to tell).
pub async fn mark_removing(conn: &mut PgConnection, user_id: i64, chat_id: i64) -> Result<Access, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO chat_access (user_id, chat_id, granted, outcome) VALUES ($1, $2, false, 'removing')
         ON CONFLICT (user_id, chat_id) DO UPDATE SET granted = false, invite_link = NULL, link_expires_at = NULL,
             outcome = 'removing', updated_at = now()
         RETURNING granted, invite_link, link_expires_at, outcome",
    )
    .bind(user_id)
    .bind(chat_id)
    .fetch_one(conn)
    .await
}

/// Records that `user_id` joined by `link`, and returns whom the link was made for (`None` for a
/// link the bot did not make). The owner's access no longer holds the link: used by them, they
/// are in; used by somebody else, they need a new one.
pub async fn link_used(
    conn: &mut PgConnection,
    link: &str,
    chat_id: i64,
    user_id: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let owner: Option<i64> = sqlx::query_scalar(
        "UPDATE chat_invite_links SET used_by = $3 WHERE invite_link = $1 AND chat_id = $2 RETURNING user_id",
    )
    .bind(link)
    .bind(chat_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(owner) = owner {
        let outcome = if owner == user_id {
            "member"
        } else {
            "link_used_by_another"
        };
        sqlx::query(
            "UPDATE chat_access SET invite_link = NULL, link_expires_at = NULL, outcome = $4, updated_at = now()
             WHERE user_id = $1 AND chat_id = $2 AND invite_link = $3",
        )
        .bind(owner)
        .bind(chat_id)
        .bind(link)
        .bind(outcome)
        .execute(conn)
        .await?;
    }
    Ok(owner)
}

/// The status `user_id` has in `chat_id` as last seen, if ever seen.
pub async fn member_status(conn: &mut PgConnection, chat_id: i64, user_id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .bind(chat_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// Records `user_id`'s `status` in `chat_id` as of `at`, as a Telegram update says, unless a
/// later change is recorded (updates may arrive out of order).
pub async fn note_member(
    conn: &mut PgConnection,
    chat_id: i64,
    user_id: i64,
    status: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_members (chat_id, user_id, status, changed_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (chat_id, user_id) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at
         WHERE chat_members.changed_at <= excluded.changed_at",
    )
    .bind(chat_id)
    .bind(user_id)
    .bind(status)
    .bind(at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records `status` for `user_id` in `chat_id` as the bot found or made it just now. Telegram's
/// dates are whole seconds, so the bot's note is too; of two notes in one second the one written
/// last wins, which is the true order for the case that happens (a join the bot saw, then its
/// removal of the joiner).
pub async fn note_by_bot(conn: &mut PgConnection, chat_id: i64, user_id: i64, status: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_members (chat_id, user_id, status, changed_at)
         VALUES ($1, $2, $3, date_trunc('second', now()))
         ON CONFLICT (chat_id, user_id) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at
         WHERE chat_members.changed_at <= excluded.changed_at",
    )
    .bind(chat_id)
    .bind(user_id)
    .bind(status)
    .execute(conn)
    .await
    .map(|_| ())
}
