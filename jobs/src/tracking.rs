//! Promo clicks and conversions: how a promo button or deep link names its campaign and promo,
//! how a click is stored (with the broadcast it came from), and the `tracking` job that
//! attributes a payment to the payer's last click (last touch).
//!
//! A promo's callback button carries `promo:<campaign>:<promo>` and its deep link
//! `t.me/<bot>?start=promo-<campaign>-<promo>`; both names are `[A-Za-z0-9_]`, 1 to 24 characters,
//! so that the callback data fits Telegram's 64 bytes and the start parameter its 64 characters
//! and alphabet.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::metrics::{self, counters};
use crate::queue::{Completed, Job, JobError, JobPayload, NewJob, Queue, apply_once};

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

/// RecordClick is one click, stored once by its update however often Telegram delivers it: by the
/// webhook, in the update's transaction (and by `tracking` jobs queued before it did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordClick {
    pub update_id: i64,
    pub user_id: i64,
    pub chat_id: Option<i64>,
    pub promo: Promo,
    pub via: Via,
    pub clicked_at: DateTime<Utc>,
}

/// AttributePayment is the `tracking` job that attributes one payment to its payer's last click
/// within the attribution window, if there is one. Enqueued in the transaction that records the
/// payment, keyed by the payment, so a payment is considered once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributePayment {
    /// `stripe:<invoice id>` or `telegram_stars:<charge id>`.
    pub payment: String,
    pub user_id: i64,
    /// In the currency's smallest unit.
    pub amount: i64,
    pub currency: String,
    pub paid_at: DateTime<Utc>,
}

impl AttributePayment {
    /// The job.
    pub fn job(&self) -> NewJob {
        NewJob::new(
            &TrackingJob::Conversion(self.clone()),
            format!("conversion:{}", self.payment),
        )
    }
}

/// TrackingJob is a job of the `tracking` queue. Tagged by `kind`; a payload without `kind` is a
/// click as queued before the webhook stored clicks itself, so it still decodes and is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "StoredTrackingJob")]
pub enum TrackingJob {
    Click(RecordClick),
    Conversion(AttributePayment),
}

impl JobPayload for TrackingJob {
    const QUEUE: Queue = Queue::Tracking;
}

/// StoredTrackingJob is every shape a `tracking` payload has been stored in.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredTrackingJob {
    Tagged(TaggedTrackingJob),
    Untagged(RecordClick),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TaggedTrackingJob {
    Click(RecordClick),
    Conversion(AttributePayment),
}

impl From<StoredTrackingJob> for TrackingJob {
    fn from(stored: StoredTrackingJob) -> TrackingJob {
        match stored {
            StoredTrackingJob::Untagged(click) | StoredTrackingJob::Tagged(TaggedTrackingJob::Click(click)) => {
                TrackingJob::Click(click)
            }
            StoredTrackingJob::Tagged(TaggedTrackingJob::Conversion(p)) => TrackingJob::Conversion(p),
        }
    }
}

/// Runs one attempt of a `tracking` job: stores a click, or attributes a payment within `window`.
pub async fn run(pool: &PgPool, window: Duration, job: Job<TrackingJob>) -> Result<Completed, JobError> {
    apply_once(pool, &job, async |tx| match &job.payload {
        TrackingJob::Click(click) => record(tx.conn(), click).await,
        TrackingJob::Conversion(payment) => {
            let campaign = attribute(tx.conn(), payment, window).await?;
            tracing::info!(payment = payment.payment, ?campaign, "payment attributed");
            Ok(())
        }
    })
    .await
}

/// Stores `click` with the broadcast it came from: the latest broadcast of its campaign and
/// promo sent to its chat (the user's private chat for a deep link) before the click (click
/// times are whole seconds, hence a second's slack); none when there is none, or when a later
/// broadcast of it had its recipients pruned (`BROADCAST_RETENTION_DAYS` after it), since that
/// one may have been the chat's. A click of an update already stored changes nothing.
pub async fn record(conn: &mut PgConnection, click: &RecordClick) -> Result<(), sqlx::Error> {
    let stored: Option<i64> = sqlx::query_scalar(
        "INSERT INTO promo_clicks (update_id, user_id, chat_id, campaign, promo, via, clicked_at, broadcast_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7,
                 (SELECT b.id FROM broadcast_recipients r JOIN broadcasts b ON b.id = r.broadcast_id
                  WHERE r.chat_id = coalesce($3, $2) AND b.campaign = $4 AND b.promo = $5
                    AND b.created_at < $7 + interval '1 second'
                    -- Whether a later, pruned broadcast of it reached the chat is unknown.
                    AND NOT EXISTS (
                        SELECT 1 FROM broadcasts s
                        WHERE s.campaign = $4 AND s.promo = $5 AND s.id > b.id
                          AND s.created_at < $7 + interval '1 second' AND s.summarised_at IS NOT NULL)
                  ORDER BY b.id DESC LIMIT 1))
         ON CONFLICT (update_id) DO NOTHING RETURNING id",
    )
    .bind(click.update_id)
    .bind(click.user_id)
    .bind(click.chat_id)
    .bind(&click.promo.campaign)
    .bind(&click.promo.promo)
    .bind(click.via.name())
    .bind(click.clicked_at)
    .fetch_optional(&mut *conn)
    .await?;
    if stored.is_some() {
        counters::add(
            conn,
            metrics::MARKETING_CLICKS,
            &format!("campaign=\"{}\",via=\"{}\"", click.promo.campaign, click.via.name()),
        )
        .await?;
    }
    Ok(())
}

/// The attribution window unless configured (`ATTRIBUTION_WINDOW_HOURS`): seven days.
pub const DEFAULT_ATTRIBUTION_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Attributes `payment` to its payer's last click in the `window` before it, and returns the
/// campaign credited; none when no click qualifies or the payment was attributed already.
pub async fn attribute(
    conn: &mut PgConnection,
    payment: &AttributePayment,
    window: Duration,
) -> Result<Option<String>, sqlx::Error> {
    let campaign: Option<String> = sqlx::query_scalar(
        "INSERT INTO conversions (payment, user_id, amount, currency, paid_at, click_id, campaign, promo, broadcast_id)
         SELECT $1, $2, $3, $4, $5, c.id, c.campaign, c.promo, c.broadcast_id FROM promo_clicks c
         WHERE c.user_id = $2 AND c.clicked_at <= $5 AND c.clicked_at >= $5 - make_interval(secs => $6)
         ORDER BY c.clicked_at DESC, c.id DESC LIMIT 1
         ON CONFLICT (payment) DO NOTHING RETURNING campaign",
    )
    .bind(&payment.payment)
    .bind(payment.user_id)
    .bind(payment.amount)
    .bind(&payment.currency)
    .bind(payment.paid_at)
    .bind(window.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(campaign) = &campaign {
        counters::add(
            conn,
            metrics::MARKETING_CONVERSIONS,
            &format!("campaign=\"{campaign}\""),
        )
        .await?;
    }
    Ok(campaign)
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

    #[test]
    fn tracking_payloads_decode_in_every_shape_they_were_stored_in() {
        let click = RecordClick {
            update_id: 7,
            user_id: 42,
            chat_id: Some(42),
            promo: Promo::new("c", "p").unwrap(),
            via: Via::Start,
            clicked_at: "2026-12-01T10:00:00Z".parse().unwrap(),
        };
        let legacy = serde_json::to_value(&click).unwrap();
        assert!(legacy.get("kind").is_none());
        assert_eq!(
            serde_json::from_value::<TrackingJob>(legacy).unwrap(),
            TrackingJob::Click(click.clone())
        );
        let conversion = TrackingJob::Conversion(AttributePayment {
            payment: "stripe:in_1".into(),
            user_id: 42,
            amount: 999,
            currency: "usd".into(),
            paid_at: "2026-12-01T10:00:00Z".parse().unwrap(),
        });
        for job in [TrackingJob::Click(click), conversion] {
            let stored = serde_json::to_value(&job).unwrap();
            assert!(stored.get("kind").is_some(), "{stored}");
            assert_eq!(serde_json::from_value::<TrackingJob>(stored).unwrap(), job);
        }
    }
}
