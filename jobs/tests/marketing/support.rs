//! What the marketing tests share: a database, campaigns and their promos, sending one now,
//! users who wrote to the bot, running the fan-out as the worker does, reading what it queued, and
//! clicks.
//!
//! The modules [`campaigns`] and [`broadcasts`] are `jobs`' own, but for the writes that take the
//! caller's transaction (creating, pausing and resuming a campaign, beginning a broadcast): here
//! those take the pool and run each in a transaction of its own, committed, as the API and the
//! CLI do.

use chrono::{DateTime, TimeDelta, Utc};
use jobs::marketing::broadcasts::FanOut;
use jobs::marketing::campaigns::{Audience, ButtonAction, NewCampaign, NewPromo, PromoButton, Schedule};
use jobs::telegram::SendMessage;
use jobs::telegram::store;
use jobs::tracking::{Promo, RecordClick, Via};
use sqlx::PgPool;

/// `jobs::marketing::campaigns`, its writes each in a committed transaction of their own.
pub mod campaigns {
    pub use jobs::marketing::campaigns::*;
    use sqlx::PgPool;

    pub async fn create(pool: &PgPool, c: &NewCampaign, bot_username: Option<&str>) -> Result<Campaign, CampaignError> {
        let mut tx = pool.begin().await?;
        let created = jobs::marketing::campaigns::create(&mut tx, c, bot_username).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn set_paused(pool: &PgPool, name: &str, paused: bool) -> Result<Campaign, CampaignError> {
        let mut tx = pool.begin().await?;
        let changed = jobs::marketing::campaigns::set_paused(&mut tx, name, paused).await?;
        tx.commit().await?;
        Ok(changed)
    }
}

/// `jobs::marketing::broadcasts`, [`begin`](broadcasts::begin) in a committed transaction of its
/// own.
pub mod broadcasts {
    use chrono::{DateTime, Utc};
    pub use jobs::marketing::broadcasts::*;
    use sqlx::PgPool;

    pub async fn begin(pool: &PgPool, name: &str, slot: Option<DateTime<Utc>>) -> Result<Option<Started>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let started = jobs::marketing::broadcasts::begin(&mut tx, name, slot).await?;
        tx.commit().await?;
        Ok(started)
    }
}

pub const BOT: &str = "paygate_test_bot";

pub async fn pool() -> (String, PgPool) {
    let url = sandbox::postgres::test_database().await;
    let pool = jobs::db::connect(&url, 10).await.unwrap();
    (url, pool)
}

pub fn promo(name: &str) -> NewPromo {
    NewPromo {
        name: name.into(),
        text: format!("Promo {name}"),
        parse_mode: None,
        buttons: vec![
            PromoButton {
                text: "Get Pro".into(),
                action: ButtonAction::DeepLink,
            },
            PromoButton {
                text: "More".into(),
                action: ButtonAction::Callback,
            },
        ],
    }
}

pub fn campaign(name: &str, audience: Audience, schedule: Schedule, promos: &[&str]) -> NewCampaign {
    NewCampaign {
        name: name.into(),
        audience,
        schedule,
        promos: promos.iter().map(|p| promo(p)).collect(),
    }
}

/// Creates `c` as if it had been created `ago`.
pub async fn create_backdated(pool: &PgPool, c: &NewCampaign, ago: TimeDelta) -> DateTime<Utc> {
    campaigns::create(pool, c, Some(BOT)).await.unwrap();
    sqlx::query_scalar(
        "UPDATE campaigns SET created_at = now() - make_interval(secs => $2) WHERE name = $1 RETURNING created_at",
    )
    .bind(&c.name)
    .bind(ago.num_seconds() as f64)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Creates campaign `name` (every 4 hours) and sends it now.
pub async fn send_now(pool: &PgPool, name: &str, audience: Audience, promos: &[&str]) -> broadcasts::Started {
    let c = campaign(name, audience, Schedule::Every { hours: 4 }, promos);
    campaigns::create(pool, &c, Some(BOT)).await.unwrap();
    broadcasts::begin(pool, name, None).await.unwrap().unwrap()
}

/// Users who wrote to the bot: `ids`, seen an hour ago.
pub async fn seen(pool: &PgPool, ids: impl IntoIterator<Item = i64>) {
    let mut conn = pool.acquire().await.unwrap();
    for id in ids {
        store::saw_chat(&mut conn, id, Utc::now() - TimeDelta::hours(1), true)
            .await
            .unwrap();
    }
}

/// Runs every pending `broadcasts` job, oldest first, with `page_size`, each in its own
/// transaction that also completes it and writes its ledger row (as the effect protocol does);
/// returns the pages.
pub async fn run_fan_out(pool: &PgPool, page_size: i64) -> Vec<broadcasts::Page> {
    let mut pages = Vec::new();
    loop {
        let next: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT id, payload FROM jobs WHERE queue = 'broadcasts' AND state = 'pending' ORDER BY id LIMIT 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        let Some((id, payload)) = next else {
            return pages;
        };
        let job: FanOut = serde_json::from_value(payload).unwrap();
        let mut tx = pool.begin().await.unwrap();
        pages.push(broadcasts::fan_out(&mut tx, &job, page_size, 30.0).await.unwrap());
        sqlx::query(
            "WITH done AS (UPDATE jobs SET state = 'completed', finished_at = now() WHERE id = $1
                           RETURNING queue, logical_key, id)
             INSERT INTO effect_ledger (queue, logical_key, job_id) SELECT * FROM done",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

/// The queued messages of broadcast `id`, by chat.
pub async fn messages_of(pool: &PgPool, id: i64) -> Vec<(String, SendMessage)> {
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT logical_key, payload FROM jobs WHERE queue = 'notifications' AND payload->>'broadcast_id' = $1::text
         ORDER BY (payload->>'chat_id')::bigint",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, payload)| (key, serde_json::from_value(payload).unwrap()))
        .collect()
}

pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

pub fn click(update_id: i64, user: i64, promo: (&str, &str), at: DateTime<Utc>) -> RecordClick {
    RecordClick {
        update_id,
        user_id: user,
        chat_id: Some(user),
        promo: Promo::new(promo.0, promo.1).unwrap(),
        via: Via::Callback,
        clicked_at: at,
    }
}
