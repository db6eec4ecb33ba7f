//! The HTTP routes, every one declared with poem-openapi so that `openapi/openapi.json` is
//! generated from the code that serves them.
//!
//! Each route has the same shape: parse (poem-openapi, before the handler runs) → one call
//! into `jobs`, in one transaction when it writes → answer or [`Problem`](crate::error::Problem).

pub mod health;
pub mod json_string;
pub mod notifications;
pub mod ops;

use poem_openapi::{OpenApi, OpenApiService, Tags};

/// Tag groups the operations in the spec.
#[derive(Tags)]
pub enum Tag {
    /// Liveness, readiness and metrics, for the platform; no authentication.
    Probes,
    /// Sending Telegram messages through the `notifications` queue (operators).
    Notifications,
    /// Queue statistics and dead jobs: inspect, retry, discard (operators).
    Ops,
}

/// Api is every route of the web process.
pub type Api = (health::ProbeApi, notifications::NotificationsApi, ops::OpsApi);

/// The OpenAPI service serving [`Api`].
pub fn service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (health::ProbeApi, notifications::NotificationsApi, ops::OpsApi),
        "paygate",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "The web process of paygate. Every error is `application/problem+json` (RFC 7807) with a stable \
             `type` of the form `urn:paygate:problem:<slug>`; every answer carries `X-Request-Id`.",
    )
}

/// The OpenAPI document of [`Api`], pretty-printed; checked in as `openapi/openapi.json`.
pub fn openapi_json() -> String {
    service().spec()
}

/// The path templates of [`Api`], as in the spec (`/v1/ops/jobs/{id}`).
pub fn templates() -> Vec<String> {
    <Api as OpenApi>::meta()
        .into_iter()
        .flat_map(|api| api.paths)
        .map(|path| path.path)
        .collect()
}
