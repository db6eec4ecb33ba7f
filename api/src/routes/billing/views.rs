//! The bodies and answers of `/v1/billing/...`: what a request asks for, and a billing request
//! as its user sees it.

use chrono::{DateTime, Utc};
use jobs::billing::requests::{self, BillingRequest, Kind, RequestStatus};
use poem::{Request, RequestBody};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ApiResponse, Enum, ExtractParamOptions, Object};

use crate::error::{Problem, ProblemDetails, ProblemKind};
use crate::routes::json_string::JsonString;

/// CheckoutRequest asks for a Stripe Checkout session.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct CheckoutRequest {
    /// The plan to buy, by code; it must be for sale through Stripe.
    pub plan: JsonString,
}

/// PortalRequest is the body of a portal request: none at all, or an empty object.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct PortalRequest {}

/// PortalBody takes an absent or empty body, or `{}`; anything else is a 400.
pub struct PortalBody;

impl<'a> ApiExtractor<'a> for PortalBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        PortalRequest::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("Nothing, or an empty object."),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: PortalRequest::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = body.take()?.into_bytes().await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(PortalBody);
        }
        crate::routes::extract::require_json(request)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ParseRequestPayloadError { reason: e.to_string() })?;
        PortalRequest::parse_from_json(Some(value)).map_err(|e| ParseRequestPayloadError {
            reason: e.into_message(),
        })?;
        Ok(PortalBody)
    }
}

/// RequestKind is what a billing request asks a provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RequestKind {
    /// A Stripe Checkout Session, to buy a plan.
    Checkout,
    /// A Stripe Billing Portal session, to manage subscriptions and payment methods.
    Portal,
    /// A Telegram Stars invoice link, to buy a plan with Stars (in the Mini App:
    /// `Telegram.WebApp.openInvoice(url)`).
    StarsInvoice,
}

/// RequestState is where a billing request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for a worker to ask the provider.
    Pending,
    /// `url` is the session to send the user to.
    Ready,
    /// No session could be made; `failure` says why.
    Failed,
}

/// BillingRequestView is a billing request as its user sees it.
#[derive(Debug, Object)]
#[oai(rename = "BillingRequest", skip_serializing_if_is_none)]
pub struct BillingRequestView {
    pub id: i64,
    pub kind: RequestKind,
    pub status: RequestState,
    /// The session's URL, once `ready`: send the user there. It expires within hours (checkout)
    /// or minutes (portal); ask again rather than storing it.
    pub url: Option<String>,
    /// Why no session could be made, once `failed`.
    pub failure: Option<String>,
    /// The plan, for a checkout; absent for a portal.
    pub plan: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Where to poll this request (also in `Location`), e.g. `/v1/billing/checkout/7`.
    pub status_url: String,
}

impl From<BillingRequest> for BillingRequestView {
    fn from(r: BillingRequest) -> BillingRequestView {
        BillingRequestView {
            status_url: status_url(r.kind, r.id),
            id: r.id,
            kind: match r.kind {
                Kind::Checkout => RequestKind::Checkout,
                Kind::Portal => RequestKind::Portal,
                Kind::StarsInvoice => RequestKind::StarsInvoice,
            },
            status: match r.status {
                RequestStatus::Pending => RequestState::Pending,
                RequestStatus::Ready => RequestState::Ready,
                RequestStatus::Failed => RequestState::Failed,
            },
            url: r.url,
            failure: r.failure,
            plan: r.plan,
            created_at: r.created_at,
        }
    }
}

/// Where request `id` of `kind` is polled.
pub(super) fn status_url(kind: Kind, id: i64) -> String {
    let path = match kind {
        Kind::Checkout => "checkout",
        Kind::Portal => "portal",
        Kind::StarsInvoice => "stars-invoice",
    };
    format!("/v1/billing/{path}/{id}")
}

/// CreateResponse is the answer to a checkout POST.
#[derive(ApiResponse)]
pub enum CreateResponse {
    /// The request is stored (now, or by an earlier request with the same `Idempotency-Key`)
    /// and pending: poll `status_url`, which `Location` repeats.
    #[oai(status = 202)]
    Accepted(
        Json<BillingRequestView>,
        /// The request's `status_url`.
        #[oai(header = "Location")]
        String,
    ),
    /// An earlier request with the same `Idempotency-Key` has already settled: this is it.
    #[oai(status = 200)]
    Settled(
        Json<BillingRequestView>,
        /// The request's `status_url`.
        #[oai(header = "Location")]
        String,
    ),
    /// The `Idempotency-Key` was used before for another plan (`conflict`), or the caller already
    /// has a renewing subscription to the plan (`already-subscribed`); nothing was stored.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemDetails>),
    /// The caller made too many billing requests (`rate-limited`); nothing was stored.
    #[oai(status = 429, content_type = "application/problem+json")]
    RateLimited(
        Json<ProblemDetails>,
        /// Whole seconds until the caller may make a new request.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl CreateResponse {
    pub(super) fn of(request: BillingRequest) -> CreateResponse {
        let location = status_url(request.kind, request.id);
        if request.status == RequestStatus::Pending {
            CreateResponse::Accepted(Json(request.into()), location)
        } else {
            CreateResponse::Settled(Json(request.into()), location)
        }
    }
}

/// PortalResponse is the answer to a portal POST: as [`CreateResponse`], without a plan to
/// conflict on.
#[derive(ApiResponse)]
pub enum PortalResponse {
    /// The request is stored (now, or by an earlier request with the same `Idempotency-Key`)
    /// and pending: poll `status_url`, which `Location` repeats.
    #[oai(status = 202)]
    Accepted(
        Json<BillingRequestView>,
        /// The request's `status_url`.
        #[oai(header = "Location")]
        String,
    ),
    /// An earlier request with the same `Idempotency-Key` has already settled: this is it.
    #[oai(status = 200)]
    Settled(
        Json<BillingRequestView>,
        /// The request's `status_url`.
        #[oai(header = "Location")]
        String,
    ),
    /// The caller made too many billing requests (`rate-limited`); nothing was stored.
    #[oai(status = 429, content_type = "application/problem+json")]
    RateLimited(
        Json<ProblemDetails>,
        /// Whole seconds until the caller may make a new request.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl PortalResponse {
    pub(super) fn of(request: BillingRequest) -> PortalResponse {
        let location = status_url(request.kind, request.id);
        if request.status == RequestStatus::Pending {
            PortalResponse::Accepted(Json(request.into()), location)
        } else {
            PortalResponse::Settled(Json(request.into()), location)
        }
    }
}

/// The `rate-limited` problem of a billing request refused for `retry_after`, and its
/// `Retry-After` in whole seconds (rounded up, at least 1).
pub(super) fn rate_limited(retry_after: std::time::Duration) -> (Json<ProblemDetails>, u64) {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let problem = Problem::new(
        ProblemKind::RateLimited,
        format!(
            "at most {} billing requests per user in {} minutes; retry in {secs} s",
            requests::LIMIT,
            requests::LIMIT_WINDOW.as_secs() / 60
        ),
    );
    (Json(problem.body()), secs)
}

/// ShowResponse is one billing request, or why not.
#[derive(ApiResponse)]
pub enum ShowResponse {
    /// The request as it stands (after waiting, if asked to).
    #[oai(status = 200)]
    Ok(Json<BillingRequestView>),
    /// The caller has no request of this kind with this id (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}
