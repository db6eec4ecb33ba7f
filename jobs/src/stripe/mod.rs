//! Stripe: the API client the billing jobs call to create customers, hosted sessions and refunds,
//! and the event objects billing reads. (The webhook's signature is checked in `api::auth::stripe`.)
//!
//! # Layout
//! - [`client`]: the API client (async-stripe) and how its errors map to job outcomes.
//! - [`objects`]: the fields of events and objects that billing reads.

pub mod client;
pub mod objects;
