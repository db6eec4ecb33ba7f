//! What arrives by webhook: each provider's deliveries are stored as sent, with the jobs that act
//! on them, in one transaction, and routed into billing, tracking and the bot's conversation. The web process calls
//! these after it has checked who sent the request (`api::auth`); nothing here calls a provider.
//!
//! # Layout
//! - [`stripe`]: Stripe events, by event id, each with the `entitlements` job that applies it.
//! - [`telegram`]: Telegram updates, by `update_id`: payments and refunds into billing, clicks
//!   into tracking, who blocked the bot into the chat store, commands and button presses into
//!   the bot's conversation, and the inline answer.

pub mod stripe;
pub mod telegram;
