//! Telegram Stars payments as entitlements: the pre-checkout decision, the payment and refund
//! facts the webhook records, and the entitlement derived from them.
//!
//! As with Stripe, no update *sets* an entitlement. A payment adds a paid period to its source:
//! its own, `telegram_stars:<charge id>`; for a renewal of a Stars subscription the source its
//! first payment started; for a one-off payment the source of the user's first one-off payment
//! of the plan, whose periods queue up ([`paid_periods`]). A refund marks a payment refunded,
//! once. The entitlement is then derived from the periods by the same rule as a Stripe
//! subscription's ([`crate::billing::entitlements::rule`]), so the ops refund and the `refunded_payment`
//! update that follows it agree and only the first changes anything.
//!
//! # Layout
//! - this module: the jobs, the source names, what applying did ([`Applied`]).
//! - [`checkout`]: the invoice a plan is sold by, and the pre-checkout decision.
//! - [`payments`]: payments and refunds, recorded by the webhook and applied by jobs.
//! - [`periods`]: the periods a source's payments paid for, and the entitlement derived from them.

mod checkout;
mod payments;
mod periods;

pub use checkout::{Answer, answer_pre_checkout, check_pre_checkout, invoice};
pub use payments::{apply_payment, mark_refunded, payer, record_payment, record_refund_notice, refunded};
pub use periods::{Payment, paid_periods};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Telegram Stars' currency code.
pub const CURRENCY: &str = "XTR";
/// The one period Telegram offers for Stars subscriptions.
pub const SUBSCRIPTION_PERIOD_DAYS: u32 = 30;

/// The source name of the entitlement a Stars payment starts.
pub fn source(charge_id: &str) -> String {
    format!("telegram_stars:{charge_id}")
}

/// ApplyStarsPayment is the `entitlements` job that grants or extends what a Stars payment buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStarsPayment {
    pub charge_id: String,
}

/// ApplyStarsRefund is the `entitlements` job that records a refund Telegram told us of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStarsRefund {
    pub charge_id: String,
    pub refunded_at: DateTime<Utc>,
}

/// What applying a payment or a refund did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The entitlement changed (and its message was enqueued).
    Changed,
    /// The entitlement already was what the payments call for.
    Unchanged,
    /// No such payment is recorded.
    UnknownPayment,
    /// The payment's plan is no longer in the catalogue, so what it buys cannot be derived;
    /// nothing was changed. The job should go to ops (dead) rather than complete.
    PlanNotConfigured,
}
