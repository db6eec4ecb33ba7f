//! `POST /webhooks/stripe`: Stripe's event deliveries, into the inbox.
//!
//! Verify the `Stripe-Signature` over the raw body (any configured secret, 300 s tolerance) →
//! parse the event envelope → [`ingest`] (the inbox row and its `entitlements` job in one
//! transaction) → 200. A delivery that does not verify, or is not an event, writes nothing and is
//! a 400; a repeat of a stored event is a 200 that writes nothing, so Stripe stops retrying.
//! Stripe itself is never called here.

use std::time::{SystemTime, UNIX_EPOCH};

use jobs::config::Secret;
use jobs::inbox::stripe::{self as inbox, Ingested, ingest};
use jobs::stripe::objects::Event;
use poem::web::Data;
use poem_openapi::param::Header;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use super::extract::{RawBody, RawBodyDoc};
use crate::auth::stripe as signature;
use crate::error::{Problem, ProblemKind};
use crate::metrics::{self, WebhookOutcome};

/// The most bytes a webhook delivery may carry: Stripe's events are far smaller, but an invoice
/// with many lines grows past the 64 KiB that other routes take.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The path Stripe delivers to.
pub const PATH: &str = "/webhooks/stripe";

/// StripeWebhookApi serves `/webhooks/stripe`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeWebhookApi;

/// StripeWebhookSecrets are the endpoint's signing secrets (`STRIPE_WEBHOOK_SECRET`), handed to
/// the app as request data.
#[derive(Debug, Clone)]
pub struct StripeWebhookSecrets(pub Vec<Secret>);

/// StripeEvent is the envelope of a Stripe webhook event, as far as it is read here; the whole
/// body is stored as sent.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StripeEvent {
    /// The event's id (`evt_…`): a delivery of an id already stored is a duplicate.
    pub id: String,
    /// The event's type, e.g. `checkout.session.completed`.
    #[oai(rename = "type")]
    pub type_: String,
    /// Unix time at which the object was in the state `data.object` shows.
    pub created: i64,
    pub livemode: bool,
    pub data: StripeEventData,
}

/// StripeEventData holds the object an event is about.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StripeEventData {
    /// The Stripe object (a Checkout Session, an invoice, a subscription …).
    pub object: serde_json::Value,
}

/// RawEvent is a webhook body exactly as it arrived: the signature covers these bytes, so
/// nothing may parse and re-serialise them first. It documents itself as a [`StripeEvent`].
pub type RawEvent = RawBody<StripeEventBody>;

/// StripeEventBody documents a [`RawEvent`].
pub struct StripeEventBody;

impl RawBodyDoc for StripeEventBody {
    const MAX_BYTES: usize = MAX_BODY_BYTES;
    const DESCRIPTION: &'static str = "The event, as Stripe sent it; at most 256 KiB.";

    fn schema_ref() -> MetaSchemaRef {
        StripeEvent::schema_ref()
    }

    fn register(registry: &mut Registry) {
        StripeEvent::register(registry);
    }
}

/// Received acknowledges a delivery.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Received {
    /// Always true.
    pub received: bool,
    /// Whether the event was already stored by an earlier delivery; if so nothing was written.
    pub duplicate: bool,
}

/// WebhookResponse is the answer to a delivery.
#[derive(ApiResponse)]
pub enum WebhookResponse {
    /// The event is stored and queued, now or by an earlier delivery.
    #[oai(status = 200)]
    Received(Json<Received>),
}

/// The unix time now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A refused delivery: counted, and answered with `problem`.
fn rejected(problem: Problem) -> Problem {
    metrics::stripe_webhook_event(None, WebhookOutcome::Rejected);
    tracing::warn!(problem = %problem, "stripe webhook delivery refused");
    problem
}

/// The event in a verified `body`, or why it is not one.
fn parse_event(body: &[u8]) -> Result<(Event, &str), Problem> {
    let raw = std::str::from_utf8(body).map_err(|_| Problem::invalid_request("the body is not UTF-8 text"))?;
    let event: Event = serde_json::from_str(raw)
        .map_err(|e| Problem::invalid_request(format!("the body is not a Stripe event: {e}")))?;
    if event.id.is_empty() || event.kind.is_empty() {
        return Err(Problem::invalid_request("the event has an empty id or type"));
    }
    // A 400, not a 500: Stripe retries a failed delivery for at most three days, then stops.
    inbox::check(&event).map_err(|refusal| Problem::invalid_request(refusal.to_string()))?;
    Ok((event, raw))
}

#[OpenApi(tag = "Tag::Webhooks")]
impl StripeWebhookApi {
    /// Receive a Stripe event
    ///
    /// Stripe's webhook endpoint. The `Stripe-Signature` header must verify over the raw body
    /// under one of the configured signing secrets, signed within 300 s of now; else 400
    /// `invalid-signature` and nothing is stored. A verified body that is not an event, or an
    /// event whose `id` or `type` holds U+0000 or whose `created` is not a unix time from 1970
    /// to 9999, is 400 `invalid-request` and nothing is stored. A verified event is stored once
    /// by its id and processed by a worker; a repeated delivery answers 200 with
    /// `duplicate: true`. Bodies up to 256 KiB.
    #[oai(path = "/webhooks/stripe", method = "post", operation_id = "receive_stripe_event")]
    async fn receive(
        &self,
        pool: Data<&PgPool>,
        secrets: Data<&StripeWebhookSecrets>,
        /// `t=<unix time>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, as Stripe sends it; several `v1`
        /// may appear while a secret is being rolled.
        #[oai(name = "Stripe-Signature")]
        stripe_signature: Header<Option<String>>,
        body: RawEvent,
    ) -> Result<WebhookResponse, Problem> {
        let Some(header) = stripe_signature.0 else {
            return Err(rejected(Problem::new(
                ProblemKind::InvalidSignature,
                "the Stripe-Signature header is missing",
            )));
        };
        signature::verify(&header, &body.0, &secrets.0.0, unix_now())
            .map_err(|e| rejected(Problem::new(ProblemKind::InvalidSignature, e.to_string())))?;
        let (event, raw) = parse_event(&body.0).map_err(rejected)?;

        let mut tx = pool.begin().await?;
        let ingested = ingest(&mut tx, &event, raw).await?;
        tx.commit().await?;
        let duplicate = ingested == Ingested::Duplicate;
        let outcome = if duplicate {
            WebhookOutcome::Duplicate
        } else {
            WebhookOutcome::Verified
        };
        metrics::stripe_webhook_event(Some(&event.kind), outcome);
        tracing::info!(event_id = %event.id, event_type = %event.kind, duplicate, "stripe event received");
        Ok(WebhookResponse::Received(Json(Received {
            received: true,
            duplicate,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_body_must_be_an_event() {
        let event = br#"{"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": {}}}"#;
        let (parsed, raw) = parse_event(event).unwrap();
        assert_eq!((parsed.id.as_str(), parsed.kind.as_str()), ("evt_1", "invoice.paid"));
        assert_eq!(raw.as_bytes(), event);
        for bad in [
            &b"not json"[..],
            br#"{"id": "evt_1"}"#,
            br#"[1, 2]"#,
            br#"{"id": "", "type": "x", "created": 1, "data": {"object": {}}}"#,
            b"\xff\xfe",
            br#"{"id": "evt_\u0000", "type": "x", "created": 1, "data": {"object": {}}}"#,
            br#"{"id": "evt_1", "type": "x", "created": 1000000000000000, "data": {"object": {}}}"#,
        ] {
            let problem = parse_event(bad).unwrap_err();
            assert_eq!(problem.kind, ProblemKind::InvalidRequest, "{bad:?}");
        }
    }
}
