//! Shared by the web (`api`) and worker (`worker`) processes: everything about jobs and the
//! domain they act on. Only this crate talks to PostgreSQL.
//!
//! # Layout
//! - [`config`]: reading the environment; [`config::Secret`] for credentials.
//! - [`db`]: connecting and migrating.
//! - [`queue`]: the durable pipeline — queue names, enqueue, the effect protocol, retries,
//!   dead letters, maintenance and the apalis backend that feeds workers.
//! - [`metrics`]: job counters of worker processes, flushed to the database.
//! - [`billing`]: plans, entitlements, Stripe events, Telegram Stars payments, checkout, portal
//!   and Stars invoice requests, refunds.
//! - [`stripe`]: the Stripe API client, webhook signatures, the event objects billing reads.
//! - [`telegram`]: the `notifications` payload, the Bot API client, the shared send pace, the
//!   webhook's inbox, Mini App users.
//! - [`access`]: paid chats: invite links, removals, join requests, membership, the audit.
//! - [`bot`]: the bot's conversation in private chats, and its texts.
//! - [`marketing`]: promo campaigns, their broadcasts, per-promo statistics.
//! - [`tracking`]: promo clicks and the payments attributed to them.
//! - [`retention`]: how long the records that guard against repeats are kept, and their pruning.

pub mod access;
pub mod billing;
pub mod bot;
pub mod config;
pub mod db;
pub mod inbox;
pub mod marketing;
pub mod metrics;
pub mod notifications;
pub mod queue;
pub mod retention;
pub mod stripe;
pub mod telegram;
pub mod tracking;
