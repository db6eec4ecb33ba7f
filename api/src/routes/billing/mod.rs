//! `/v1/billing/checkout` and `/v1/billing/portal`: a signed-in user asks for a Stripe Checkout
//! or Billing Portal session, then polls for its URL.
//!
//! POST stores the request with its `checkout` job in one transaction ([`requests::create`]) and
//! answers 202 with where to poll; a worker asks Stripe and settles the request. GET answers the
//! request as it stands or, with `?wait=N`, long-polls until it settles ([`Settled::wait`]), for
//! at most [`WAIT_MAX_SECS`]: under Heroku's 30 s router timeout.
//!
//! An `Idempotency-Key` makes a POST safe to repeat: the same key of the same user answers with
//! the first request (202 while it is pending, 200 once it has settled) and writes nothing; the
//! same key for another plan is a 409. Without a key, a request for the same plan still pending
//! answers a repeat the same way; a plan the user has a renewing subscription to is not sold
//! again (409 `already-subscribed`); and a user's new requests are limited (429 `rate-limited`
//! with `Retry-After`): see [`requests::create`].

mod views;

pub use views::{
    BillingRequestView, CheckoutRequest, CreateResponse, PortalBody, PortalRequest, PortalResponse, RequestKind,
    RequestState, ShowResponse,
};

use std::time::Duration;

use jobs::billing::Plans;
use jobs::billing::requests::{self, Created, Kind, RequestStatus, Settled};
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use sqlx::PgPool;

use super::Tag;
use super::extract::IdempotencyKey;
use crate::auth::{User, UserAuth};
use crate::error::{Problem, ProblemKind};
use crate::metrics;

/// The longest a GET waits for its request to settle, in seconds.
pub const WAIT_MAX_SECS: i64 = 25;

/// BillingApi serves `/v1/billing/...`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingApi;

/// Whether `plan` is sold through the provider of `kind`.
fn for_sale(plan: &jobs::billing::Plan, kind: Kind) -> bool {
    match kind {
        Kind::StarsInvoice => plan.stars_price.is_some(),
        Kind::Checkout | Kind::Portal => plan.stripe_price.is_some(),
    }
}

/// The `unknown-plan` problem of `code` for a request of `kind`, listing what is for sale.
fn unknown_plan(plans: &Plans, kind: Kind, code: &str) -> Problem {
    let on_sale: Vec<&str> = plans
        .iter()
        .filter(|(_, plan)| for_sale(plan, kind))
        .map(|(code, _)| code)
        .collect();
    let shown: String = code.chars().take(64).collect();
    let through = if kind == Kind::StarsInvoice {
        "for Telegram Stars"
    } else {
        "through Stripe"
    };
    Problem::new(
        ProblemKind::UnknownPlan,
        format!(
            "no plan {shown:?} is for sale {through}; plans for sale: {}",
            on_sale.join(", ")
        ),
    )
}

/// Stores a request of `kind` for `plan` and enqueues it, or answers with the request an earlier
/// call with the same key stored.
async fn start_plan_request(
    pool: &PgPool,
    plans: &Plans,
    user: User,
    kind: Kind,
    plan: String,
    idempotency_key: Option<&str>,
) -> Result<CreateResponse, Problem> {
    if !plans.get(&plan).is_some_and(|p| for_sale(p, kind)) {
        return Err(unknown_plan(plans, kind, &plan));
    }
    let mut tx = pool.begin().await?;
    let created = requests::create(&mut tx, user.id, kind, Some(&plan), idempotency_key, None).await?;
    tx.commit().await?;
    Ok(match created {
        Created::New(request) => {
            if kind == Kind::Checkout {
                metrics::checkout_started(&plan);
            }
            tracing::info!(request_id = request.id, user_id = user.id, plan = %plan, kind = kind.name(), "plan requested");
            CreateResponse::of(request)
        }
        Created::Existing(request) if request.plan.as_deref() != Some(plan.as_str()) => CreateResponse::Conflict(Json(
            Problem::conflict(format!(
                "this Idempotency-Key was first used for plan {:?}; use another key for another plan",
                request.plan.unwrap_or_default()
            ))
            .body(),
        )),
        Created::Existing(request) => CreateResponse::of(request),
        Created::Limited { retry_after } => {
            let (problem, secs) = views::rate_limited(retry_after);
            CreateResponse::RateLimited(problem, secs)
        }
        Created::AlreadySubscribed(subscribed) => {
            let name = plans.get(&plan).map_or(plan.as_str(), |p| p.name.as_str());
            CreateResponse::Conflict(Json(
                Problem::new(ProblemKind::AlreadySubscribed, subscribed.already_subscribed(name)).body(),
            ))
        }
    })
}

/// The request `id` of `kind` of `user`, after waiting up to `wait` seconds for it to settle.
async fn show(
    pool: &PgPool,
    settled: &Settled,
    user: User,
    kind: Kind,
    id: i64,
    wait: i64,
) -> Result<ShowResponse, Problem> {
    let not_found = || {
        ShowResponse::NotFound(Json(
            Problem::not_found(format!("no {} request {id}", kind.name())).body(),
        ))
    };
    let mut conn = pool.acquire().await?;
    let request = requests::get(&mut conn, id).await?;
    drop(conn);
    let Some(request) = request.filter(|r| r.kind == kind && r.user_id == user.id) else {
        return Ok(not_found());
    };
    let wait = wait.clamp(0, WAIT_MAX_SECS).unsigned_abs();
    let request = if request.status == RequestStatus::Pending && wait > 0 {
        match settled.wait(pool, id, Duration::from_secs(wait)).await? {
            Some(request) => request,
            None => return Ok(not_found()),
        }
    } else {
        request
    };
    Ok(ShowResponse::Ok(Json(request.into())))
}

fn no_wait() -> i64 {
    0
}

#[OpenApi(prefix_path = "/v1/billing", tag = "Tag::Billing")]
impl BillingApi {
    /// Start a checkout
    ///
    /// Asks for a Stripe Checkout session for `plan`; a worker creates it. 202 with the request,
    /// then poll `status_url` (with `?wait=`) for its `url`. While a checkout of the same plan
    /// by the caller is pending (for up to 10 minutes), a new one without a key answers with it. A plan not in
    /// the catalogue or not sold through Stripe is 400 `unknown-plan`; a plan the caller already
    /// has a renewing subscription to (through Stripe or Telegram Stars) is 409
    /// `already-subscribed`; more than 10 new billing requests (all kinds) in 10 minutes is 429
    /// `rate-limited`; none of these stores anything.
    #[oai(path = "/checkout", method = "post", operation_id = "start_checkout")]
    async fn start_checkout(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        plans: Data<&Plans>,
        /// Makes the request safe to repeat: 1 to 200 visible ASCII characters. A repeat with the
        /// same key answers with the first request and stores nothing; the same key with another
        /// plan is 409 `conflict`.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
        body: Json<CheckoutRequest>,
    ) -> Result<CreateResponse, Problem> {
        let plan = String::from(body.0.plan);
        start_plan_request(
            &pool,
            &plans,
            auth.0,
            Kind::Checkout,
            plan,
            idempotency_key.0.as_ref().map(IdempotencyKey::as_str),
        )
        .await
    }

    /// Show a checkout
    ///
    /// The caller's checkout request. With `wait`, answers as soon as it settles, or as it
    /// stands after `wait` seconds.
    #[oai(path = "/checkout/:id", method = "get", operation_id = "show_checkout")]
    async fn show_checkout(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        settled: Data<&Settled>,
        /// The request's id.
        id: Path<i64>,
        /// Seconds to wait for a pending request to settle, 0 (the default: answer at once) to
        /// 25; more is taken as 25.
        #[oai(default = "no_wait", validator(minimum(value = "0")))]
        wait: Query<i64>,
    ) -> Result<ShowResponse, Problem> {
        show(&pool, &settled, auth.0, Kind::Checkout, id.0, wait.0).await
    }

    /// Open the billing portal
    ///
    /// Asks for a Stripe Billing Portal session, where the caller manages subscriptions and
    /// payment methods; a worker creates it. 202 with the request, then poll `status_url` (with
    /// `?wait=`) for its `url`, or the `failure` Stripe gave. While a portal request by the
    /// caller is pending (for up to 10 minutes), a new one without a key answers with it; more than 10 new
    /// billing requests (all kinds) in 10 minutes is 429 `rate-limited`.
    #[oai(path = "/portal", method = "post", operation_id = "open_portal")]
    async fn open_portal(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        /// Makes the request safe to repeat: 1 to 200 visible ASCII characters. A repeat with the
        /// same key answers with the first request and stores nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
        _body: PortalBody,
    ) -> Result<PortalResponse, Problem> {
        let user = auth.0;
        let key = idempotency_key.0.as_ref().map(IdempotencyKey::as_str);
        let mut tx = pool.begin().await?;
        let created = requests::create(&mut tx, user.id, Kind::Portal, None, key, None).await?;
        tx.commit().await?;
        Ok(match created {
            Created::New(request) => {
                tracing::info!(request_id = request.id, user_id = user.id, "billing portal requested");
                PortalResponse::of(request)
            }
            Created::Existing(request) => PortalResponse::of(request),
            Created::Limited { retry_after } => {
                let (problem, secs) = views::rate_limited(retry_after);
                PortalResponse::RateLimited(problem, secs)
            }
            Created::AlreadySubscribed(_) => unreachable!("only a purchase is guarded"),
        })
    }

    /// Show a portal request
    ///
    /// The caller's billing portal request. With `wait`, answers as soon as it settles, or as it
    /// stands after `wait` seconds.
    #[oai(path = "/portal/:id", method = "get", operation_id = "show_portal")]
    async fn show_portal(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        settled: Data<&Settled>,
        /// The request's id.
        id: Path<i64>,
        /// Seconds to wait for a pending request to settle, 0 (the default: answer at once) to
        /// 25; more is taken as 25.
        #[oai(default = "no_wait", validator(minimum(value = "0")))]
        wait: Query<i64>,
    ) -> Result<ShowResponse, Problem> {
        show(&pool, &settled, auth.0, Kind::Portal, id.0, wait.0).await
    }

    /// Create a Stars invoice link
    ///
    /// Asks for a Telegram Stars invoice link for `plan`; a worker creates it. 202 with the
    /// request, then poll `status_url` (with `?wait=`) for its `url` and open it in the Mini App
    /// (`Telegram.WebApp.openInvoice`). Plans of 30 days are Stars subscriptions, renewed monthly
    /// by Telegram. While a Stars invoice of the same plan by the caller is pending (for up to 10
    /// minutes), a new one without a key answers with it. A plan not in the catalogue or without a Stars price
    /// is 400 `unknown-plan`; a plan the caller already has a renewing subscription to (through
    /// Stripe or Telegram Stars) is 409 `already-subscribed`; more than 10 new billing requests (all
    /// kinds) in 10 minutes is 429 `rate-limited`; none of these stores anything.
    #[oai(path = "/stars-invoice", method = "post", operation_id = "create_stars_invoice")]
    async fn create_stars_invoice(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        plans: Data<&Plans>,
        /// Makes the request safe to repeat: 1 to 200 visible ASCII characters. A repeat with the
        /// same key answers with the first request and stores nothing; the same key with another
        /// plan is 409 `conflict`.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
        body: Json<CheckoutRequest>,
    ) -> Result<CreateResponse, Problem> {
        let plan = String::from(body.0.plan);
        start_plan_request(
            &pool,
            &plans,
            auth.0,
            Kind::StarsInvoice,
            plan,
            idempotency_key.0.as_ref().map(IdempotencyKey::as_str),
        )
        .await
    }

    /// Show a Stars invoice request
    ///
    /// The caller's Stars invoice request. With `wait`, answers as soon as it settles, or as it
    /// stands after `wait` seconds.
    #[oai(path = "/stars-invoice/:id", method = "get", operation_id = "show_stars_invoice")]
    async fn show_stars_invoice(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        settled: Data<&Settled>,
        /// The request's id.
        id: Path<i64>,
        /// Seconds to wait for a pending request to settle, 0 (the default: answer at once) to
        /// 25; more is taken as 25.
        #[oai(default = "no_wait", validator(minimum(value = "0")))]
        wait: Query<i64>,
    ) -> Result<ShowResponse, Problem> {
        show(&pool, &settled, auth.0, Kind::StarsInvoice, id.0, wait.0).await
    }
}

#[cfg(test)]
mod tests {
    use super::views::status_url;
    use super::*;

    #[test]
    fn an_unknown_plan_lists_the_plans_for_sale() {
        let plans = Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro"},
                "stars_only": {"name": "Stars", "entitlement": "pro", "period_days": 30, "stars_price": 100}}"#,
        )
        .unwrap();
        let problem = unknown_plan(&plans, Kind::Checkout, "stars_only");
        assert_eq!(problem.kind, ProblemKind::UnknownPlan);
        assert!(problem.detail.ends_with("plans for sale: pro"), "{}", problem.detail);
        let stars = unknown_plan(&plans, Kind::StarsInvoice, "pro");
        assert!(stars.detail.ends_with("plans for sale: stars_only"), "{}", stars.detail);
        let long = unknown_plan(&plans, Kind::Checkout, &"x".repeat(1000));
        assert!(long.detail.len() < 200, "the echo is bounded: {}", long.detail);
    }

    #[test]
    fn status_urls_name_the_kind() {
        assert_eq!(status_url(Kind::Checkout, 7), "/v1/billing/checkout/7");
        assert_eq!(status_url(Kind::Portal, 8), "/v1/billing/portal/8");
        assert_eq!(status_url(Kind::StarsInvoice, 9), "/v1/billing/stars-invoice/9");
    }
}
