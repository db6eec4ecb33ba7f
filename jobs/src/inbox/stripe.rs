//! The Stripe webhook's inbox: a verified event is stored as sent, with the `entitlements` job
//! that applies it, in the caller's transaction. A repeat of a stored event writes nothing.

use sqlx::PgConnection;

use crate::billing::EntitlementsJob;
use crate::billing::stripe::ProcessStripeEvent;
use crate::db::{NUL, holds_nul};
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

/// The latest `created` the inbox takes, 9999-12-31T23:59:59Z: past any real event and inside
/// what both PostgreSQL's `timestamptz` and chrono can hold (`to_timestamp(1e15)` is out of range).
pub const MAX_CREATED: i64 = 253_402_300_799;

/// Refusal is why a verified event cannot go into the inbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The id or type, stored decoded, holds U+0000.
    #[error("the event's `{0}` holds {NUL}")]
    Nul(&'static str),
    /// `created` is before 1970 or after [`MAX_CREATED`].
    #[error("the event's `created` ({0}) is not a unix time from 1970 to 9999")]
    Created(i64),
}

/// Checks what [`ingest`] stores decoded: the id and type (text columns) and `created` (a
/// timestamp). Call it before ingesting; the webhook answers a refusal with a 400, which Stripe
/// retries for at most three days, so a refused event is not redelivered forever. The body itself
/// is stored as sent, in a text column that holds the escape `\u0000`, so U+0000 elsewhere in an
/// event (a customer's name) is no reason to refuse it: a refusal would lose the payment it
/// reports.
pub fn check(event: &Event) -> Result<(), Refusal> {
    if holds_nul(&event.id) {
        return Err(Refusal::Nul("id"));
    }
    if holds_nul(&event.kind) {
        return Err(Refusal::Nul("type"));
    }
    if !(0..=MAX_CREATED).contains(&event.created) {
        return Err(Refusal::Created(event.created));
    }
    Ok(())
}

/// Stores a verified webhook event that passed [`check`] in the inbox and enqueues its
/// processing; run it in a transaction, so that the two commit together. `raw` is the request
/// body, stored as Stripe sent it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: &str, created: i64) -> Event {
        serde_json::from_value(serde_json::json!({
            "id": id, "type": kind, "created": created, "data": {"object": {"name": "Ada\u{0}"}}
        }))
        .unwrap()
    }

    #[test]
    fn what_is_stored_decoded_must_be_storable() {
        assert_eq!(check(&event("evt_1", "invoice.paid", 1_700_000_000)), Ok(()));
        assert_eq!(check(&event("evt_1", "invoice.paid", 0)), Ok(()));
        assert_eq!(check(&event("evt_1", "invoice.paid", MAX_CREATED)), Ok(()));
        assert_eq!(check(&event("evt_\0", "invoice.paid", 1)), Err(Refusal::Nul("id")));
        assert_eq!(check(&event("evt_1", "invoice.\0", 1)), Err(Refusal::Nul("type")));
        for created in [-1, MAX_CREATED + 1, 1_000_000_000_000_000, i64::MAX, i64::MIN] {
            assert_eq!(
                check(&event("evt_1", "invoice.paid", created)),
                Err(Refusal::Created(created))
            );
        }
        assert!(
            chrono::DateTime::from_timestamp(MAX_CREATED, 0)
                .is_some_and(|t| t.to_rfc3339() == "9999-12-31T23:59:59+00:00")
        );
    }
}
