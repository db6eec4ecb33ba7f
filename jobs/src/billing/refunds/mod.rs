//! Refunds ops ask for: stored with their job by the web process, made by a `refunds` worker
//! (the provider call carries an idempotency key derived from the refund), then the entitlement
//! the payment bought is revoked and the user told, in one transaction.

pub mod make;

pub use make::make;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::db::insert_once;
use crate::queue::{JobPayload, NewJob, Queue, enqueue};

/// Provider is who took the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Stripe,
    /// Telegram Stars: always the whole payment.
    TelegramStars,
}

impl Provider {
    pub const fn name(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::TelegramStars => "telegram_stars",
        }
    }
}

impl From<String> for Provider {
    /// The provider a stored name stands for (a CHECK constraint keeps the column to these names).
    fn from(name: String) -> Provider {
        if name == "telegram_stars" {
            Provider::TelegramStars
        } else {
            Provider::Stripe
        }
    }
}

/// RefundStatus is where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl From<String> for RefundStatus {
    fn from(name: String) -> RefundStatus {
        match name.as_str() {
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            _ => RefundStatus::Pending,
        }
    }
}

/// NewRefund is what ops ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub provider: Provider,
    /// A Stripe payment intent (`pi_…`) or charge (`ch_…`/`py_…`).
    pub payment: String,
    /// In the currency's smallest unit; `None` refunds the rest of the payment.
    pub amount: Option<i64>,
    pub reason: Option<String>,
}

/// Refund is a stored refund.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Refund {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub provider: Provider,
    pub payment: String,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: RefundStatus,
    pub provider_refund_id: Option<String>,
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "id, provider, payment, amount, reason, idempotency_key, status, provider_refund_id, failure, created_at, updated_at"
    };
}

/// MakeRefund is the `refunds` job that makes one refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeRefund {
    pub refund_id: i64,
}

impl JobPayload for MakeRefund {
    const QUEUE: Queue = Queue::Refunds;
}

/// Created is a refund [`create`] stored, or the one an earlier call with the same key stored.
pub type Created = crate::db::Created<Refund>;

/// Stores a refund and enqueues it; run it in a transaction, so that the two commit together. A
/// repeated `idempotency_key` returns the first refund and writes nothing.
pub async fn create(
    conn: &mut PgConnection,
    refund: &NewRefund,
    idempotency_key: Option<&str>,
) -> Result<Created, sqlx::Error> {
    let insert = sqlx::query_as(concat!(
        "INSERT INTO refunds (provider, payment, amount, reason, idempotency_key) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING ",
        columns!()
    ))
    .bind(refund.provider.name())
    .bind(&refund.payment)
    .bind(refund.amount)
    .bind(&refund.reason)
    .bind(idempotency_key);
    let existing = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds WHERE idempotency_key = $1"
    ))
    .bind(idempotency_key);
    let created = insert_once::<Refund>(conn, insert, existing).await?;
    if let Created::New(refund) = &created {
        let job = MakeRefund { refund_id: refund.id };
        enqueue(conn, &NewJob::new(&job, format!("refund:{}", refund.id))).await?;
    }
    Ok(created)
}

/// The id of the refund stored under `idempotency_key`, if any.
pub async fn id_of_key(conn: &mut PgConnection, idempotency_key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM refunds WHERE idempotency_key = $1")
        .bind(idempotency_key)
        .fetch_optional(conn)
        .await
}

/// The id of a refund of `payment` that is pending or succeeded, if any.
pub async fn open_or_done(
    conn: &mut PgConnection,
    provider: Provider,
    payment: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM refunds WHERE provider = $1 AND payment = $2 AND status <> 'failed' ORDER BY id LIMIT 1",
    )
    .bind(provider.name())
    .bind(payment)
    .fetch_optional(conn)
    .await
}

/// The refund with this id.
pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<Refund>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM refunds WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Records how a pending refund ended: the provider's refund id, or why it failed.
pub async fn settle(conn: &mut PgConnection, id: i64, result: Result<&str, &str>) -> Result<(), sqlx::Error> {
    let (status, provider_refund_id, failure) = match result {
        Ok(provider_id) => ("succeeded", Some(provider_id), None),
        Err(reason) => ("failed", None, Some(reason)),
    };
    sqlx::query(
        "UPDATE refunds SET status = $2, provider_refund_id = $3, failure = $4, updated_at = now()
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(status)
    .bind(provider_refund_id)
    .bind(failure)
    .execute(conn)
    .await
    .map(|_| ())
}
