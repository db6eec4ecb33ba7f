//! What Stripe sends the other way: events around fixture objects and their `Stripe-Signature`.

#[allow(unused_imports)]
use super::*;

/// The `Stripe-Signature` header Stripe would send with `payload` at `timestamp`, signed with the
/// endpoint's signing `secret` (`whsec_…`).
pub fn sign_webhook(payload: &str, secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An event of `event_type` (`checkout.session.completed`) about `object`, as Stripe delivers it
/// to a webhook endpoint, with a fresh id.
pub fn event(event_type: &str, object: Value, created: i64) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(new_id("evt_", 24));
    event["object"] = json!("event");
    event["api_version"] = json!(API_VERSION);
    event["created"] = json!(created);
    event["data"] = json!({ "object": object });
    event["livemode"] = json!(false);
    event["pending_webhooks"] = json!(1);
    event["request"] = json!({"id": null, "idempotency_key": null});
    event["type"] = json!(event_type);
    event
}

/// A copy of Stripe's example object `name`: one of `billing_portal.session`, `charge`,
/// `checkout.session`, `customer`, `dispute`, `event`, `invoice`, `refund`, `subscription`.
///
/// # Panics
/// When there is no fixture called `name`.
pub fn fixture(name: &str) -> Value {
    static FIXTURES: OnceLock<Map<String, Value>> = OnceLock::new();
    let fixtures = FIXTURES.get_or_init(|| {
        let file: Value =
            serde_json::from_str(include_str!("../../fixtures/stripe.json")).expect("fixtures/stripe.json is JSON");
        file["resources"]
            .as_object()
            .expect("fixtures/stripe.json has resources")
            .clone()
    });
    match fixtures.get(name) {
        Some(object) => object.clone(),
        None => panic!(
            "no Stripe fixture {name:?}; there are {:?}",
            fixtures.keys().collect::<Vec<_>>()
        ),
    }
}
