//! Counters of business outcomes (payments, refunds, broadcasts, clicks), kept in the database;
//! their names are the constants of [`super`].
//!
//! A worker adds to a counter inside the transaction that makes the outcome happen, so a retried
//! job or a second worker process can never count it twice, and the web process serves the sums
//! in `/metrics` whichever process did the work.

use sqlx::{PgConnection, PgPool};

use super::Metric;

/// Adds one to `counter{labels}`; `labels` is written as Prometheus writes it inside the
/// braces, e.g. `status="paid"`.
pub async fn add(conn: &mut PgConnection, counter: Metric, labels: &str) -> Result<(), sqlx::Error> {
    add_value(conn, counter, labels, 1.0).await
}

/// Adds `value` to `counter{labels}` (a sum, e.g. of amounts paid).
pub async fn add_value(conn: &mut PgConnection, counter: Metric, labels: &str, value: f64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO counters (name, labels, value) VALUES ($1, $2, $3)
         ON CONFLICT (name, labels) DO UPDATE SET value = counters.value + excluded.value",
    )
    .bind(counter.name)
    .bind(labels)
    .bind(value)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Counter is one counter's total.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Counter {
    pub name: String,
    pub labels: String,
    pub value: f64,
}

/// Every counter, ordered by name and labels.
pub async fn all(pool: &PgPool) -> Result<Vec<Counter>, sqlx::Error> {
    sqlx::query_as("SELECT name, labels, value FROM counters ORDER BY name, labels")
        .fetch_all(pool)
        .await
}
