//! Stripe subscriptions as entitlements: the webhook inbox, the facts each event adds, and the
//! entitlement derived from them.
//!
//! Stripe delivers events at least once and in any order. So an event never *sets* the
//! entitlement; it adds facts about its subscription, each merged so that the result does not
//! depend on order:
//! - who and which plan (`stripe_subscriptions`): the first value known is kept (all sources agree);
//! - paid periods (`stripe_invoices`): paid only ever becomes true; an invoice's own period end
//!   replaces the provisional one counted from checkout;
//! - refunds and disputes (`stripe_reversals`): only ever become true;
//! - the subscription's status: the snapshot of the latest event by (`created`, id) wins;
//! - the end of the subscription: the earliest `ended_at` seen.
//!
//! [`derive`] then computes the entitlement from all facts, and [`entitlements::set`] records it
//! if it changed. Merges of one subscription are serialised by a transaction-level advisory lock,
//! so that two events whose facts meet (a refund and the invoice that links its charge) cannot
//! each commit without seeing the other.
//!
//! # Layout
//! - this module: the job, what an event came to ([`Outcome`], [`EventError`]), and the lock and
//!   keys the others share.
//! - [`dispatch`]: [`apply_event`], which reads a stored event and routes it by type.
//! - [`facts`]: the mergers of facts into `stripe_subscriptions`, `stripe_invoices` and
//!   `stripe_reversals`, and the re-derivation they end in.
//! - [`notices`]: the messages a failed payment sends.
//! - [`customers`]: which Stripe customer a user is.
//!
//! The inbox row itself is written by [`crate::inbox::stripe`]; the rule that turns facts into an
//! entitlement is [`super::entitlements::rule`], shared with Telegram Stars.

mod customers;
mod dispatch;
mod facts;
mod notices;

pub use customers::{customer_of, remember_customer};
pub use dispatch::apply_event;
pub use facts::{Reversal, reverse};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::queue::JobError;

/// The metadata key naming the Telegram user on sessions and subscriptions we create.
pub const USER_KEY: &str = "telegram_user_id";
/// The metadata key naming the plan.
pub const PLAN_KEY: &str = "plan";

/// ProcessStripeEvent is the `entitlements` job that applies one stored webhook event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStripeEvent {
    pub event_id: String,
}

/// Outcome is what processing made of an event, stored in `stripe_events.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An entitlement changed.
    Applied,
    /// Facts were recorded; the entitlement was already right (a repeat, or not yet derivable).
    Recorded,
    /// A message was sent, nothing else changed (a failed payment).
    Notified,
    /// A type or object we do not act on.
    Ignored,
}

impl Outcome {
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Recorded => "recorded",
            Outcome::Notified => "notified",
            Outcome::Ignored => "ignored",
        }
    }
}

/// EventError is an event that cannot be applied however often it is retried.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event {0} is not in the inbox")]
    Missing(String),
    #[error("event {id} ({kind}) has a malformed object: {problem}")]
    Malformed { id: String, kind: String, problem: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<EventError> for JobError {
    fn from(e: EventError) -> JobError {
        match e {
            EventError::Database(e) => e.into(),
            // Retrying cannot make a missing or malformed event good: dead at once, for ops.
            other => JobError::Terminal(other.to_string()),
        }
    }
}

/// Links is where notifications send users.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Where a user opens the Billing Portal (a page that requests a fresh portal session:
    /// portal session URLs themselves expire within minutes).
    pub billing_portal: Option<String>,
}

/// Serialises fact merges (see the module documentation). One lock for all of Stripe: events
/// are few next to the cost of getting a cross-row merge wrong.
async fn lock_facts(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // 0x5354524950 is "STRIP" in ASCII: a constant no other lock in the schema uses.
    sqlx::query("SELECT pg_advisory_xact_lock(357895047760)")
        .execute(conn)
        .await
        .map(|_| ())
}

/// The source name of a subscription's entitlement.
pub fn source(subscription: &str) -> String {
    format!("stripe:{subscription}")
}

fn timestamp(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}
