//! Billing: plans, entitlements and the provider events and requests that change them.
//!
//! # Layout
//! - [`plans`]: the catalogue, from configuration.
//! - [`entitlements`]: what users may use, one row per payment source, with its history.
//! - [`stripe`]: the Stripe webhook inbox and the entitlement each subscription's facts call for.
//! - [`stars`]: Telegram Stars payments and refunds, and the entitlement each source's payments
//!   call for.
//! - [`requests`]: Checkout, Billing Portal and Stars invoice link requests, and waiting for them.
//! - [`refunds`]: refunds ops ask for.
//! - [`counters`]: payment and refund counts, kept transactionally for `/metrics`.

pub mod counters;
pub mod entitlements;
pub mod plans;
pub mod refunds;
pub mod requests;
pub mod stars;
pub mod stripe;

pub use plans::{Plan, Plans};

use serde::{Deserialize, Serialize};

use crate::queue::{JobPayload, Queue};

/// EntitlementsJob is a job of the `entitlements` queue: everything that changes what a user may
/// use, or who the user is. Tagged by `kind` in the stored payload; a payload without `kind` is a
/// Stripe event job as queued before the queue carried other jobs, so it still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "StoredEntitlementsJob")]
pub enum EntitlementsJob {
    /// Apply a stored Stripe webhook event.
    StripeEvent(stripe::ProcessStripeEvent),
    /// Grant or extend what a Telegram Stars payment buys.
    StarsPayment(stars::ApplyStarsPayment),
    /// Record a Stars refund Telegram told us of.
    StarsRefund(stars::ApplyStarsRefund),
    /// Write a Mini App user's profile.
    ProvisionUser(crate::telegram::users::ProvisionUser),
}

impl JobPayload for EntitlementsJob {
    const QUEUE: Queue = Queue::Entitlements;
}

/// StoredEntitlementsJob is every shape an `entitlements` payload has been stored in.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredEntitlementsJob {
    Tagged(TaggedEntitlementsJob),
    /// `{"event_id": …}`: the only job of the queue until Telegram payments came.
    Untagged(stripe::ProcessStripeEvent),
}

/// TaggedEntitlementsJob reads [`EntitlementsJob`]'s own tagged form.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TaggedEntitlementsJob {
    StripeEvent(stripe::ProcessStripeEvent),
    StarsPayment(stars::ApplyStarsPayment),
    StarsRefund(stars::ApplyStarsRefund),
    ProvisionUser(crate::telegram::users::ProvisionUser),
}

impl From<StoredEntitlementsJob> for EntitlementsJob {
    fn from(stored: StoredEntitlementsJob) -> EntitlementsJob {
        match stored {
            StoredEntitlementsJob::Untagged(event) => EntitlementsJob::StripeEvent(event),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::StripeEvent(e)) => EntitlementsJob::StripeEvent(e),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::StarsPayment(p)) => EntitlementsJob::StarsPayment(p),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::StarsRefund(r)) => EntitlementsJob::StarsRefund(r),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::ProvisionUser(u)) => EntitlementsJob::ProvisionUser(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_payloads_decode_in_every_shape_they_were_stored_in() {
        let legacy: EntitlementsJob = serde_json::from_str(r#"{"event_id": "evt_1"}"#).unwrap();
        let event = stripe::ProcessStripeEvent {
            event_id: "evt_1".into(),
        };
        assert_eq!(legacy, EntitlementsJob::StripeEvent(event.clone()));
        for job in [
            EntitlementsJob::StripeEvent(event),
            EntitlementsJob::StarsPayment(stars::ApplyStarsPayment {
                charge_id: "stx1".into(),
            }),
        ] {
            let stored = serde_json::to_value(&job).unwrap();
            assert!(stored.get("kind").is_some(), "{stored}");
            assert_eq!(serde_json::from_value::<EntitlementsJob>(stored).unwrap(), job);
        }
        assert!(serde_json::from_str::<EntitlementsJob>(r#"{"kind": "other", "x": 1}"#).is_err());
    }
}
