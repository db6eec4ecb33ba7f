//! The Stripe webhook's inbox: a verified event is stored as sent, with the `entitlements` job
//! that applies it, in the caller's transaction. A repeat of a stored event writes nothing.

use sqlx::PgConnection;

use crate::billing::EntitlementsJob;
use crate::billing::stripe::ProcessStripeEvent;
use crate::queue::{Enqueued, NewJob, enqueue};
use crate::stripe::objects::Event;

/// Ingested says what the inbox did with a webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored, and its processing enqueued.
    New,
    /// Already in the inbox: nothing was written.
    Duplicate,
}

/// Stores a verified webhook event in the inbox and enqueues its processing; run it in a
/// transaction, so that the two commit together. `raw` is the request body, stored as Stripe sent
/// it.
pub async fn ingest(conn: &mut PgConnection, event: &Event, raw: &str) -> Result<Ingested, sqlx::Error> {
    let stored = sqlx::query(
        "INSERT INTO stripe_events (id, type, created, livemode, payload)
         VALUES ($1, $2, to_timestamp($3), $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(event.created as f64)
    .bind(event.livemode)
    .bind(raw)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if stored == 0 {
        return Ok(Ingested::Duplicate);
    }
    let job = NewJob::new(
        &EntitlementsJob::StripeEvent(ProcessStripeEvent {
            event_id: event.id.clone(),
        }),
        format!("stripe_event:{}", event.id),
    );
    let enqueued = enqueue(conn, &job).await?;
    Ok(match enqueued {
        Enqueued::New(_) => Ingested::New,
        Enqueued::Duplicate(_) => Ingested::Duplicate,
    })
}
