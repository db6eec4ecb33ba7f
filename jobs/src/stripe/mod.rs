//! Stripe: the API client the billing jobs call to create customers, hosted sessions and refunds,
//! and what the webhook endpoint needs to trust and read Stripe's events.
//!
//! # Layout
//! - [`client`]: the API client (async-stripe) and how its errors map to job outcomes.
//! - [`signature`]: verifying `Stripe-Signature`.
//! - [`objects`]: the fields of events and objects that billing reads.

pub mod client;
pub mod objects;
pub mod signature;
