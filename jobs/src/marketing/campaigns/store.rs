//! Campaigns in the database: creating one with its rendered promos, finding and listing them,
//! pausing and resuming, the next promo, and what the scheduler reads; rows mapped to
//! [`Campaign`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::schedule::{DueCampaign, schedule_of};
use super::{Audience, CampaignError, NewCampaign, PromoMessage, Schedule};

/// Campaign is a campaign as stored, with what ops want to know about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub name: String,
    pub audience: Audience,
    pub schedule: Schedule,
    pub promos: Vec<String>,
    /// The promo the next broadcast sends.
    pub next_promo: String,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
    /// The latest scheduled slot that became a broadcast.
    pub last_slot: Option<DateTime<Utc>>,
    /// When the next scheduled broadcast is due; none while paused.
    pub next_slot: Option<DateTime<Utc>>,
}

type CampaignRow = (
    String,
    String,
    Vec<i64>,
    Option<i32>,
    Option<String>,
    Option<DateTime<Utc>>,
    i32,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Vec<String>,
);

/// The columns [`campaign_of`] reads; the queries below repeat them because sqlx takes only
/// literal SQL.
macro_rules! select_campaign {
    ($tail:literal) => {
        concat!(
            "SELECT c.name, c.audience, c.chat_ids, c.every_hours, c.cron, c.last_slot, c.next_promo,
                    c.paused_at, c.created_at,
                    array(SELECT p.name FROM campaign_promos p WHERE p.campaign = c.name ORDER BY p.position)
             FROM campaigns c ",
            $tail
        )
    };
}

fn campaign_of(row: CampaignRow, now: DateTime<Utc>) -> Campaign {
    let (name, audience, chat_ids, every_hours, cron, last_slot, next_promo, paused_at, created_at, promos) = row;
    let schedule = schedule_of(every_hours, cron);
    let next_slot = match paused_at {
        Some(_) => None,
        None => schedule.next_slot(created_at, now),
    };
    Campaign {
        name,
        audience: Audience::from_row(&audience, chat_ids),
        next_promo: promos
            .get(next_promo as usize % promos.len().max(1))
            .cloned()
            .unwrap_or_default(),
        promos,
        schedule,
        paused: paused_at.is_some(),
        created_at,
        last_slot,
        next_slot,
    }
}

/// Creates `campaign` with its rendered promos through `conn`, in the caller's transaction: the
/// campaign and its promos are written together when the caller commits. On an error nothing
/// should be committed (a name that exists wrote nothing).
pub async fn create(
    conn: &mut PgConnection,
    campaign: &NewCampaign,
    bot_username: Option<&str>,
) -> Result<Campaign, CampaignError> {
    let promos = campaign.render(bot_username)?;
    let (every_hours, cron) = match &campaign.schedule {
        Schedule::Every { hours } => (Some(*hours as i32), None),
        Schedule::Cron { expression } => (None, Some(expression.as_str())),
    };
    let created: Option<String> = sqlx::query_scalar(
        "INSERT INTO campaigns (name, audience, chat_ids, every_hours, cron) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO NOTHING RETURNING name",
    )
    .bind(&campaign.name)
    .bind(campaign.audience.name())
    .bind(campaign.audience.chat_ids())
    .bind(every_hours)
    .bind(cron)
    .fetch_optional(&mut *conn)
    .await?;
    if created.is_none() {
        return Err(CampaignError::Exists(campaign.name.clone()));
    }
    for (position, (name, message)) in promos.iter().enumerate() {
        sqlx::query("INSERT INTO campaign_promos (campaign, position, name, message) VALUES ($1, $2, $3, $4)")
            .bind(&campaign.name)
            .bind(position as i32)
            .bind(name)
            .bind(sqlx::types::Json(message))
            .execute(&mut *conn)
            .await?;
    }
    let stored = find_in(conn, &campaign.name).await?;
    stored.ok_or_else(|| CampaignError::NotFound(campaign.name.clone()))
}

/// The campaign named `name`.
pub async fn find(pool: &PgPool, name: &str) -> Result<Option<Campaign>, sqlx::Error> {
    find_in(&mut *pool.acquire().await?, name).await
}

async fn find_in(conn: &mut PgConnection, name: &str) -> Result<Option<Campaign>, sqlx::Error> {
    let row: Option<CampaignRow> = sqlx::query_as(select_campaign!("WHERE c.name = $1"))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| campaign_of(r, Utc::now())))
}

/// Every campaign, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Campaign>, sqlx::Error> {
    let rows: Vec<CampaignRow> = sqlx::query_as(select_campaign!("ORDER BY c.name"))
        .fetch_all(pool)
        .await?;
    let now = Utc::now();
    Ok(rows.into_iter().map(|r| campaign_of(r, now)).collect())
}

/// Pauses (`paused`) or resumes a campaign. A resumed campaign skips the slots its pause covered:
/// its next broadcast is the next slot after the resume. Written through `conn`, in the caller's
/// transaction; a campaign that does not exist wrote nothing.
pub async fn set_paused(conn: &mut PgConnection, name: &str, paused: bool) -> Result<Campaign, CampaignError> {
    let changed = sqlx::query(
        "UPDATE campaigns SET
             paused_at = CASE WHEN $2 THEN coalesce(paused_at, now()) END,
             skip_until = CASE WHEN NOT $2 AND paused_at IS NOT NULL THEN now() ELSE skip_until END
         WHERE name = $1",
    )
    .bind(name)
    .bind(paused)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(CampaignError::NotFound(name.into()));
    }
    let campaign = find_in(conn, name).await?;
    campaign.ok_or_else(|| CampaignError::NotFound(name.into()))
}

/// NextPromo is the promo a campaign's next broadcast sends, as it will look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextPromo {
    pub campaign: String,
    pub promo: String,
    pub message: PromoMessage,
}

/// The promo the next broadcast of `name` sends.
pub async fn next_promo(pool: &PgPool, name: &str) -> Result<Option<NextPromo>, sqlx::Error> {
    let row: Option<(String, sqlx::types::Json<PromoMessage>)> = sqlx::query_as(
        "SELECT p.name, p.message FROM campaigns c JOIN campaign_promos p ON p.campaign = c.name
         WHERE c.name = $1
           AND p.position = c.next_promo % (SELECT count(*) FROM campaign_promos q WHERE q.campaign = c.name)",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(promo, message)| NextPromo {
        campaign: name.into(),
        promo,
        message: message.0,
    }))
}

/// Unpaused campaigns, as the scheduler reads them.
pub(crate) async fn unpaused(pool: &PgPool) -> Result<Vec<DueCampaign>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, every_hours, cron, created_at, last_slot, skip_until, false AS paused
         FROM campaigns WHERE paused_at IS NULL",
    )
    .fetch_all(pool)
    .await
}

/// The campaign `name`, locked for the rest of `conn`'s transaction, so that its rotation and
/// last slot move one broadcast at a time; none if it does not exist.
pub(crate) async fn lock(conn: &mut PgConnection, name: &str) -> Result<Option<DueCampaign>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, every_hours, cron, created_at, last_slot, skip_until, paused_at IS NOT NULL AS paused
         FROM campaigns WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}
