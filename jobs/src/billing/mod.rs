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
/// use, or who the user is. Tagged by `kind` in the stored payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
