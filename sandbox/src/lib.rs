//! Local stand-ins for the outside world, used by the tests, the local run and the benchmark.
//!
//! # Layout
//! - [`postgres`]: throwaway PostgreSQL clusters and per-test databases.
//! - [`stripe`]: a fake Stripe API on loopback that records what it is sent; webhook events and
//!   their signatures.
//! - [`telegram`]: a fake Telegram Bot API server on loopback that records what it is sent.
//! - [`telegram_updates`]: the updates Telegram posts to a webhook, and their delivery.

pub mod postgres;
pub mod stripe;
pub mod stripe_events;
pub mod telegram;
pub mod telegram_updates;
