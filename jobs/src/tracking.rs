//! Promo clicks: how a promo button or deep link names its campaign and promo, and the
//! `tracking` job that records a click.
//!
//! A promo's callback button carries `promo:<campaign>:<promo>` and its deep link
//! `t.me/<bot>?start=promo-<campaign>-<promo>`; both names are `[A-Za-z0-9_]`, 1 to 24 characters,
//! so that the callback data fits Telegram's 64 bytes and the start parameter its 64 characters
//! and alphabet.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::queue::{JobPayload, Queue};

/// The longest campaign or promo name.
pub const MAX_NAME_LEN: usize = 24;

/// Promo names the campaign and promo a click came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promo {
    pub campaign: String,
    pub promo: String,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Promo {
    /// A promo, when both names are valid.
    pub fn new(campaign: &str, promo: &str) -> Option<Promo> {
        (is_name(campaign) && is_name(promo)).then(|| Promo {
            campaign: campaign.into(),
            promo: promo.into(),
        })
    }

    /// The callback data of the promo's button.
    pub fn callback_data(&self) -> String {
        format!("promo:{}:{}", self.campaign, self.promo)
    }

    /// The `start` parameter of the promo's deep link.
    pub fn start_payload(&self) -> String {
        format!("promo-{}-{}", self.campaign, self.promo)
    }

    /// The promo a button's callback data names.
    pub fn from_callback_data(data: &str) -> Option<Promo> {
        let rest = data.strip_prefix("promo:")?;
        let (campaign, promo) = rest.split_once(':')?;
        Promo::new(campaign, promo)
    }

    /// The promo a deep link's `start` parameter names.
    pub fn from_start_payload(payload: &str) -> Option<Promo> {
        let rest = payload.strip_prefix("promo-")?;
        let (campaign, promo) = rest.split_once('-')?;
        Promo::new(campaign, promo)
    }
}

/// Via is how a click arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A press of the promo's callback button.
    Callback,
    /// A `/start` through the promo's deep link.
    Start,
}

impl Via {
    pub const fn name(self) -> &'static str {
        match self {
            Via::Callback => "callback",
            Via::Start => "start",
        }
    }
}

/// RecordClick is the `tracking` job that stores one click; keyed by its update, so a click is
/// stored once however often Telegram delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordClick {
    pub update_id: i64,
    pub user_id: i64,
    pub chat_id: Option<i64>,
    pub promo: Promo,
    pub via: Via,
    pub clicked_at: DateTime<Utc>,
}

impl JobPayload for RecordClick {
    const QUEUE: Queue = Queue::Tracking;
}

impl RecordClick {
    /// The job's logical key.
    pub fn key(&self) -> String {
        format!("telegram_update:{}:click", self.update_id)
    }
}

/// Stores `click`; a click of an update already stored changes nothing.
pub async fn record(conn: &mut PgConnection, click: &RecordClick) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO promo_clicks (update_id, user_id, chat_id, campaign, promo, via, clicked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (update_id) DO NOTHING",
    )
    .bind(click.update_id)
    .bind(click.user_id)
    .bind(click.chat_id)
    .bind(&click.promo.campaign)
    .bind(&click.promo.promo)
    .bind(click.via.name())
    .bind(click.clicked_at)
    .execute(conn)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promo_payloads_round_trip_and_refuse_other_shapes() {
        let promo = Promo::new("spring_24", "a1").unwrap();
        assert_eq!(Promo::from_callback_data(&promo.callback_data()), Some(promo.clone()));
        assert_eq!(Promo::from_start_payload(&promo.start_payload()), Some(promo.clone()));
        assert_eq!(promo.start_payload(), "promo-spring_24-a1");
        for bad in [
            "promo:",
            "promo:x",
            "promo::y",
            "promo:x:",
            "promo:x:y:z",
            "other:x:y",
            "promo:x-1:y",
        ] {
            assert_eq!(Promo::from_callback_data(bad), None, "{bad}");
        }
        for bad in ["promo-", "promo-x", "promo-x-y-z", "x-y", "promo-x-"] {
            assert_eq!(Promo::from_start_payload(bad), None, "{bad}");
        }
        let longest = "c".repeat(MAX_NAME_LEN);
        let promo = Promo::new(&longest, &longest).unwrap();
        assert!(promo.callback_data().len() <= 64 && promo.start_payload().len() <= 64);
        assert_eq!(Promo::new(&format!("{longest}c"), "p"), None);
    }
}
