//! Which Stripe customer a user is: remembered from checkouts, read for portal sessions and later
//! checkouts.

use sqlx::PgConnection;

/// Remembers which customer a user is, for portal sessions and later checkouts.
pub async fn remember_customer(conn: &mut PgConnection, user_id: i64, customer: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO stripe_customers (user_id, customer) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(customer)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The Stripe customer of `user_id`, if one is known.
pub async fn customer_of(conn: &mut PgConnection, user_id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT customer FROM stripe_customers WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
}
