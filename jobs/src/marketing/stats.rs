//! Per-promo statistics of a campaign over a time range: messages sent, unique clickers,
//! conversions and revenue.
//!
//! Each figure counts what happened in the range by its own time: sends by their broadcast's
//! start, clicks by click time, conversions by payment time. Rates divide within a promo:
//! click-through = unique clickers / sends, conversion = conversions / unique clickers. A
//! broadcast's sends are counted from its recipients, or once those are pruned from the count
//! kept on its row.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Revenue is an amount in one currency, in its smallest unit (cents; Stars are whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revenue {
    pub currency: String,
    pub amount: i64,
}

/// PromoStats are one promo's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromoStats {
    pub promo: String,
    /// Messages delivered.
    pub sends: i64,
    /// Distinct users who clicked one of its buttons.
    pub unique_clickers: i64,
    /// unique_clickers / sends; 0 without sends.
    pub click_through_rate: f64,
    /// Payments attributed to its clicks.
    pub conversions: i64,
    /// conversions / unique_clickers; 0 without clickers.
    pub conversion_rate: f64,
    /// Attributed payments' sum, per currency.
    pub revenue: Vec<Revenue>,
}

/// CampaignStats are a campaign's figures over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignStats {
    pub campaign: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub promos: Vec<PromoStats>,
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// The statistics of campaign `name` over `[from, to)`, by default from the campaign's creation
/// (in whole seconds, as click times are) to now; none if there is no such campaign.
pub async fn campaign(
    pool: &PgPool,
    name: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Option<CampaignStats>, sqlx::Error> {
    let created_at: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT created_at FROM campaigns WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    let Some(created_at) = created_at else {
        return Ok(None);
    };
    let from = from.unwrap_or_else(|| created_at.trunc_subsecs(0));
    let to = to.unwrap_or_else(Utc::now);
    let promos: Vec<String> =
        sqlx::query_scalar("SELECT name FROM campaign_promos WHERE campaign = $1 ORDER BY position")
            .bind(name)
            .fetch_all(pool)
            .await?;
    let sends: Vec<(String, i64)> = sqlx::query_as(
        "SELECT b.promo, sum(coalesce(b.sent, (
                    SELECT count(*) FROM broadcast_recipients r WHERE r.broadcast_id = b.id AND r.outcome = 'sent'
                )))::bigint
         FROM broadcasts b
         WHERE b.campaign = $1 AND b.created_at >= $2 AND b.created_at < $3
         GROUP BY b.promo",
    )
    .bind(name)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let clickers: Vec<(String, i64)> = sqlx::query_as(
        "SELECT promo, count(DISTINCT user_id) FROM promo_clicks
         WHERE campaign = $1 AND clicked_at >= $2 AND clicked_at < $3
         GROUP BY promo",
    )
    .bind(name)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let conversions: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT promo, currency, count(*), sum(amount)::bigint FROM conversions
         WHERE campaign = $1 AND paid_at >= $2 AND paid_at < $3
         GROUP BY promo, currency ORDER BY promo, currency",
    )
    .bind(name)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;

    let sends: BTreeMap<String, i64> = sends.into_iter().collect();
    let clickers: BTreeMap<String, i64> = clickers.into_iter().collect();
    let promos = promos
        .into_iter()
        .map(|promo| {
            let sends = sends.get(&promo).copied().unwrap_or(0);
            let unique_clickers = clickers.get(&promo).copied().unwrap_or(0);
            let mine = conversions.iter().filter(|(p, ..)| *p == promo);
            let converted: i64 = mine.clone().map(|(_, _, n, _)| n).sum();
            PromoStats {
                sends,
                unique_clickers,
                click_through_rate: ratio(unique_clickers, sends),
                conversions: converted,
                conversion_rate: ratio(converted, unique_clickers),
                revenue: mine
                    .map(|(_, currency, _, amount)| Revenue {
                        currency: currency.clone(),
                        amount: *amount,
                    })
                    .collect(),
                promo,
            }
        })
        .collect();
    Ok(Some(CampaignStats {
        campaign: name.into(),
        from,
        to,
        promos,
    }))
}
