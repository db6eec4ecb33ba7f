//! Telegram users as the Mini App shows them: the profile a sign-in carries is written by an
//! `entitlements` job (the web process only enqueues it), and whether a user is banned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::EntitlementsJob;
use crate::queue::NewJob;

/// Profile is what a Mini App sign-in tells about its user: the fields of Telegram's
/// `WebAppUser` we keep (others are ignored when it is read from `initData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub id: i64,
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub language_code: Option<String>,
    #[serde(default)]
    pub is_premium: bool,
    #[serde(default)]
    pub allows_write_to_pm: bool,
    #[serde(default)]
    pub photo_url: Option<String>,
}

/// ProvisionUser is the job that upserts a user's profile after a sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionUser {
    pub profile: Profile,
    /// The sign-in's `auth_date`: a profile older than the stored one is not written.
    pub signed_in_at: DateTime<Utc>,
}

impl ProvisionUser {
    /// The job, keyed by user and sign-in, so that one sign-in is provisioned once.
    pub fn job(&self) -> NewJob {
        NewJob::new(
            &EntitlementsJob::ProvisionUser(self.clone()),
            format!("telegram_user:{}:{}", self.profile.id, self.signed_in_at.timestamp()),
        )
    }
}

/// Writes the profile unless a newer sign-in's profile is already there.
pub async fn upsert(conn: &mut PgConnection, user: &ProvisionUser) -> Result<(), sqlx::Error> {
    let p = &user.profile;
    sqlx::query(
        "INSERT INTO telegram_users (id, first_name, last_name, username, language_code, is_premium,
                                     allows_write_to_pm, photo_url, profile_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET
             first_name = excluded.first_name, last_name = excluded.last_name,
             username = excluded.username, language_code = excluded.language_code,
             is_premium = excluded.is_premium, allows_write_to_pm = excluded.allows_write_to_pm,
             photo_url = excluded.photo_url, profile_at = excluded.profile_at, updated_at = now()
         WHERE telegram_users.profile_at <= excluded.profile_at",
    )
    .bind(p.id)
    .bind(&p.first_name)
    .bind(&p.last_name)
    .bind(&p.username)
    .bind(&p.language_code)
    .bind(p.is_premium)
    .bind(p.allows_write_to_pm)
    .bind(&p.photo_url)
    .bind(user.signed_in_at)
    .execute(&mut *conn)
    .await?;
    if p.allows_write_to_pm {
        // The bot may write to them: they join the audience (a block we saw stays).
        crate::telegram::store::saw_chat(conn, p.id, user.signed_in_at, false).await?;
    }
    Ok(())
}

/// Whether `user_id` is banned; a user we have never seen is not.
pub async fn is_banned(conn: &mut PgConnection, user_id: i64) -> Result<bool, sqlx::Error> {
    let banned: Option<bool> = sqlx::query_scalar("SELECT banned FROM telegram_users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(banned.unwrap_or(false))
}

/// Bans or unbans `user_id`; a user never seen gets a row with an empty profile that their first
/// sign-in fills in.
pub async fn set_banned(conn: &mut PgConnection, user_id: i64, banned: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO telegram_users (id, first_name, profile_at, banned) VALUES ($1, '', '-infinity', $2)
         ON CONFLICT (id) DO UPDATE SET banned = excluded.banned, updated_at = now()",
    )
    .bind(user_id)
    .bind(banned)
    .execute(conn)
    .await
    .map(|_| ())
}
