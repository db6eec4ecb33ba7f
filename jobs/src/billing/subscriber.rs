//! One subscriber as ops look them up: their profile, every entitlement with its history, their
//! payments through either provider, and the last messages the bot sent them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

/// How many of the latest deliveries a lookup shows.
pub const DELIVERIES_SHOWN: i64 = 20;

/// Subscriber is everything known about one Telegram user.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Subscriber {
    pub user_id: i64,
    /// From their last Mini App sign-in; absent for a user who never signed in.
    pub first_name: Option<String>,
    pub username: Option<String>,
    /// Whether ops banned them from buying.
    pub banned: bool,
    /// Every entitlement, latest change first.
    pub entitlements: Vec<EntitlementRecord>,
    /// Every payment, latest first.
    pub payments: Vec<Payment>,
    /// The latest messages the bot sent them (at most 20), latest first.
    pub deliveries: Vec<Delivery>,
}

/// EntitlementRecord is one entitlement and every change it went through.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct EntitlementRecord {
    pub plan: String,
    pub source: String,
    /// `active`, `suspended`, `revoked` or `expired`.
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub renews: bool,
    /// Oldest first.
    pub history: Vec<Change>,
}

/// Change is one recorded change of an entitlement.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Change {
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub renews: bool,
    /// What caused it: the job's key (a Stripe event, a Stars payment, an expiry …).
    pub cause: String,
    pub recorded_at: DateTime<Utc>,
}

/// Payment is one payment, as `POST /v1/ops/refunds` names it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Payment {
    /// `stripe` or `telegram_stars`.
    pub provider: String,
    /// What a refund names: a Stripe payment intent (or charge), a Stars charge id.
    pub payment: String,
    /// The plan it paid for.
    pub plan: Option<String>,
    /// In the currency's smallest unit; Stripe's amounts are not kept here (see the Dashboard).
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// When it was paid; for Stripe, when its paid invoice was last recorded (Stripe's own
    /// payment time is not kept here).
    pub paid_at: DateTime<Utc>,
    /// Whether it was refunded in full.
    pub refunded: bool,
}

/// Delivery is one message the bot sent.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
pub struct Delivery {
    /// The job's key, which says what it was about (`entitlement_change:…`, `bot_reply:…` …).
    pub logical_key: String,
    /// `sent` or `unreachable` (the user blocked the bot).
    pub status: String,
    pub message_id: Option<i64>,
    pub at: DateTime<Utc>,
}

/// Everything known about `user_id`, or `None` when nothing is.
pub async fn look_up(conn: &mut PgConnection, user_id: i64) -> Result<Option<Subscriber>, sqlx::Error> {
    let profile: Option<(String, Option<String>, bool)> =
        sqlx::query_as("SELECT first_name, username, banned FROM telegram_users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    type Row = (i64, String, String, String, Option<DateTime<Utc>>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, plan, source, status, expires_at, renews FROM entitlements WHERE user_id = $1
         ORDER BY updated_at DESC, id DESC",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut entitlements = Vec::with_capacity(rows.len());
    for (id, plan, source, status, expires_at, renews) in rows {
        let history = sqlx::query_as(
            "SELECT status, expires_at, renews, cause, recorded_at FROM entitlement_changes
             WHERE entitlement_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        entitlements.push(EntitlementRecord {
            plan,
            source,
            status,
            expires_at,
            renews,
            history,
        });
    }
    let payments: Vec<Payment> = sqlx::query_as(
        "SELECT 'telegram_stars' AS provider, charge_id AS payment, invoice_payload AS plan,
                total_amount AS amount, currency, paid_at, refunded_at IS NOT NULL AS refunded
         FROM telegram_payments WHERE user_id = $1
         UNION ALL
         SELECT 'stripe', coalesce(i.payment_intent, i.charge), s.plan, NULL, NULL, i.updated_at,
                coalesce((SELECT bool_or(r.refunded) FROM stripe_reversals r
                          WHERE r.payment IN (i.payment_intent, i.charge)), false)
         FROM stripe_invoices i JOIN stripe_subscriptions s ON s.id = i.subscription
         WHERE s.user_id = $1 AND i.paid AND coalesce(i.payment_intent, i.charge) IS NOT NULL
         ORDER BY paid_at DESC",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let deliveries: Vec<Delivery> = sqlx::query_as(
        "SELECT logical_key, status, message_id, created_at AS at FROM telegram_deliveries
         WHERE chat_id = $1 ORDER BY created_at DESC, logical_key LIMIT $2",
    )
    .bind(user_id)
    .bind(DELIVERIES_SHOWN)
    .fetch_all(&mut *conn)
    .await?;
    if profile.is_none() && entitlements.is_empty() && payments.is_empty() && deliveries.is_empty() {
        return Ok(None);
    }
    let (first_name, username, banned) = profile.map_or((None, None, false), |(f, u, b)| (Some(f), u, b));
    Ok(Some(Subscriber {
        user_id,
        first_name,
        username,
        banned,
        entitlements,
        payments,
        deliveries,
    }))
}
