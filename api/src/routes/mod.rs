//! The HTTP routes, every one declared with poem-openapi so that `openapi/openapi.json` is
//! generated from the code that serves them.
//!
//! Each route has the same shape: parse (poem-openapi, before the handler runs) → one call
//! into `jobs`, in one transaction when it writes → answer or [`Problem`](crate::error::Problem).

pub mod billing;
pub mod campaigns;
pub mod extract;
pub mod health;
pub mod json_string;
pub mod me;
pub mod notifications;
pub mod ops;
pub mod plans;
pub mod refunds;
pub mod sign_in;
pub mod spec;
pub mod stripe_webhook;
pub mod telegram_webhook;

use poem_openapi::{OpenApi, OpenApiService, Tags};

/// Tag groups the operations in the spec.
#[derive(Tags)]
pub enum Tag {
    /// Liveness and readiness (no authentication) and metrics (the metrics token), for the
    /// platform.
    Probes,
    /// Sending Telegram messages through the `notifications` queue (operators).
    Notifications,
    /// Queue statistics and dead jobs: inspect, retry, discard; refunds (operators).
    Ops,
    /// Promo campaigns, their broadcasts and statistics (operators).
    Marketing,
    /// Signing in: a Telegram Mini App's `initData` for a user token.
    Auth,
    /// Stripe Checkout and Billing Portal sessions and Telegram Stars invoice links for the
    /// signed-in user.
    Billing,
    /// What the signed-in user has.
    Me,
    /// Deliveries from Stripe and Telegram, authenticated by a signature or a secret token.
    Webhooks,
}

/// Api is every route of the web process.
pub type Api = (
    health::ProbeApi,
    notifications::NotificationsApi,
    ops::OpsApi,
    refunds::RefundsApi,
    campaigns::CampaignsApi,
    sign_in::SignInApi,
    billing::BillingApi,
    plans::PlansApi,
    me::MeApi,
    stripe_webhook::StripeWebhookApi,
    telegram_webhook::TelegramWebhookApi,
);

/// The OpenAPI service serving [`Api`].
pub fn service() -> OpenApiService<Api, ()> {
    // Every part of the tuple is a unit struct, so the tuple's Default is the whole API.
    OpenApiService::new(Api::default(), "paygate", env!("CARGO_PKG_VERSION")).description(
        "The web process of paygate. Every error is `application/problem+json` (RFC 7807) with a stable \
             `type` of the form `urn:paygate:problem:<slug>`; every answer carries `X-Request-Id`. \
             Operators authenticate with `adminToken`, users with `userToken` (a JWT from \
             `POST /v1/auth/telegram`), Stripe with its webhook signature, Telegram with \
             `telegramSecretToken`.",
    )
}

pub use spec::openapi_json;

/// Each path template of [`Api`], as in the spec (`/v1/ops/jobs/{id}`), with the methods its
/// operations take.
pub fn methods() -> Vec<(String, Vec<poem::http::Method>)> {
    <Api as OpenApi>::meta()
        .into_iter()
        .flat_map(|api| api.paths)
        .map(|path| (path.path, path.operations.into_iter().map(|op| op.method).collect()))
        .collect()
}
