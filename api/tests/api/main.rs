//! The web process over HTTP against a real PostgreSQL: each test builds its own app on a free
//! port with its own database. One test binary, so the suite links once.

mod auth;
mod billing;
mod campaigns;
mod dead_jobs;
mod entitlements;
mod errors;
mod health;
mod helpers;
mod lifecycle;
mod metrics;
mod notifications;
mod pages;
mod refunds;
mod request_id;
mod sign_in;
mod stripe_webhook;
mod telegram_webhook;
mod user_auth;
