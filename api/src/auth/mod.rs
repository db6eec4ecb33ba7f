//! Who may call what, and who sent what: every check of a request's sender lives here. Operators
//! with `ADMIN_TOKEN` ([`AdminAuth`]), scrapers with `METRICS_TOKEN` ([`MetricsAuth`]), users with a token we signed ([`UserAuth`]), and the two
//! providers' webhooks (Telegram's secret token, Stripe's signature). The first two are bearer
//! tokens; a missing or refused one is a 401 `unauthorized` problem that says nothing about what
//! was sent.
//!
//! # Layout
//! - [`admin`]: the ops and metrics tokens, compared in constant time.
//! - [`user`]: user tokens (HS256 JWTs): issuing and checking them.
//! - [`init_data`]: Telegram Mini App `initData`, exchanged for a user token.
//! - [`telegram`]: the Telegram webhook's secret token.
//! - [`stripe`]: the Stripe webhook's `Stripe-Signature`.

pub mod admin;
pub mod init_data;
pub mod stripe;
pub mod telegram;
pub mod user;

pub use admin::{Admin, AdminAuth, AdminToken, MetricsAuth, MetricsToken};
pub use telegram::{TelegramAuth, TelegramWebhookSecret};
pub use user::{USER_TOKEN_TTL, User, UserAuth, UserTokens, issue_user_token};
