//! Billing: plans, entitlements and the provider events and requests that change them.
//!
//! # Layout
//! - [`plans`]: the catalogue, from configuration.
//! - [`entitlements`]: what users may use, one row per payment source, with its history.
//! - [`stripe`]: the Stripe webhook inbox and the entitlement each subscription's facts call for.
//! - [`requests`]: Checkout and Billing Portal session requests, and waiting for them.
//! - [`refunds`]: refunds ops ask for.
//! - [`counters`]: payment and refund counts, kept transactionally for `/metrics`.

pub mod counters;
pub mod entitlements;
pub mod plans;
pub mod refunds;
pub mod requests;
pub mod stripe;

pub use plans::{Plan, Plans};
