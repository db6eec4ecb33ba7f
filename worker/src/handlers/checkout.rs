//! The `checkout` queue: asks Stripe for the session a billing request wants (or Telegram for a
//! Stars invoice link) and settles the request with its URL, or with the provider's reason when
//! it refuses for good.
//!
//! Every Stripe call carries an idempotency key derived from the request (or, for a new
//! customer, from the user), so a retried attempt gets the same session back instead of a second
//! one. Retryable failures (network, 5xx, 429) back off on the queue's schedule, which ends
//! within Stripe's 24-hour memory of keys; the last one fails the request.

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use jobs::billing::requests::{self, BillingRequest, CreateSession, Kind, RequestStatus, Settlement};
use jobs::billing::stars;
use jobs::billing::stripe::{customer_of, remember_customer};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{Completed, Job, JobError};
use jobs::stripe::client::{CheckoutSessionParams, HostedSession, StripeError};
use jobs::telegram::client::SendError;

use super::{Billing, apply_once};

/// Runs one attempt of a session's creation.
pub async fn handle(job: Job<CreateSession>, billing: Data<Billing>) -> Result<(), BoxDynError> {
    let billing = &*billing;
    run_attempt(&billing.pool, &billing.stats, job, |job| create(billing, job)).await?;
    Ok(())
}

async fn create(billing: &Billing, job: Job<CreateSession>) -> Result<Completed, JobError> {
    let request = {
        let mut conn = billing.pool.acquire().await?;
        requests::get(&mut conn, job.payload.request_id).await?
    };
    let Some(request) = request else {
        return Err(JobError::Terminal(format!(
            "billing request {} does not exist",
            job.payload.request_id
        )));
    };
    if request.status != RequestStatus::Pending {
        return apply_once(&billing.pool, &job, async |_| Ok::<(), sqlx::Error>(())).await;
    }
    let session = match request.kind {
        Kind::Checkout => checkout_session(billing, &request).await,
        Kind::Portal => portal_session(billing, &request).await,
        Kind::StarsInvoice => return stars_invoice(billing, &job, &request).await,
    };
    let last_failure: String;
    let settlement = match &session {
        Ok(session) => Settlement::Ready {
            url: &session.url,
            provider_id: &session.id,
        },
        Err(StripeError::Permanent { reason }) => {
            tracing::warn!(request = request.id, reason, "Stripe refused the session");
            Settlement::Failed { reason }
        }
        // The last attempt settles the request, so that a client polling it learns the outcome
        // instead of seeing `pending` forever; the user can simply ask again.
        Err(StripeError::Retryable { reason, .. }) if job.attempt >= job.max_attempts => {
            tracing::warn!(request = request.id, reason, "Stripe unreachable on the last attempt");
            last_failure = format!("Stripe could not be reached after {} attempts: {reason}", job.attempt);
            Settlement::Failed { reason: &last_failure }
        }
        Err(StripeError::Retryable { reason, .. }) => return Err(JobError::Retryable(reason.clone())),
    };
    apply_once(&billing.pool, &job, async |tx| {
        requests::settle(tx.conn(), request.id, settlement).await
    })
    .await
}

/// Creates the Stars invoice link a request asks for. Telegram takes no idempotency key here, but
/// a second link from a retried attempt charges nothing: only the stored one is handed out.
async fn stars_invoice(
    billing: &Billing,
    job: &Job<CreateSession>,
    request: &BillingRequest,
) -> Result<Completed, JobError> {
    let code = request.plan.as_deref().unwrap_or_default();
    let created = match stars::invoice(&billing.plans, code) {
        // The web process checked the plan; the catalogue changed since.
        None => Err(SendError::Permanent(format!(
            "plan {code:?} is not sold for Telegram Stars"
        ))),
        Some(invoice) => billing.telegram.create_invoice_link(&invoice).await,
    };
    let last_failure: String;
    let settlement = match &created {
        Ok(url) => Settlement::Ready { url, provider_id: url },
        Err(SendError::Permanent(reason) | SendError::Unreachable(reason)) => {
            tracing::warn!(request = request.id, reason, "Telegram refused the invoice link");
            Settlement::Failed { reason }
        }
        Err(SendError::Transient(reason)) if job.attempt >= job.max_attempts => {
            last_failure = format!("Telegram could not be reached after {} attempts: {reason}", job.attempt);
            Settlement::Failed { reason: &last_failure }
        }
        Err(SendError::Transient(reason)) => return Err(JobError::Retryable(reason.clone())),
        Err(SendError::RetryAfter(delay)) => {
            return Err(JobError::RetryAfter {
                delay: *delay,
                reason: Some("Telegram rate limit".into()),
            });
        }
    };
    apply_once(&billing.pool, job, async |tx| {
        requests::settle(tx.conn(), request.id, settlement).await
    })
    .await
}

async fn checkout_session(billing: &Billing, request: &BillingRequest) -> Result<HostedSession, StripeError> {
    let code = request.plan.as_deref().unwrap_or_default();
    let Some(price) = billing.plans.get(code).and_then(|p| p.stripe_price.as_deref()) else {
        // The web process checked the plan; the catalogue changed since.
        return Err(StripeError::Permanent {
            reason: format!("plan {code:?} is not sold through Stripe"),
        });
    };
    let customer = customer(billing, request.user_id, false).await?;
    let params = CheckoutSessionParams {
        user_id: request.user_id,
        customer: customer.as_deref(),
        price_id: price,
        plan: code,
        request_id: request.id,
        success_url: &billing.urls.success_url,
        cancel_url: &billing.urls.cancel_url,
    };
    billing
        .stripe
        .create_checkout_session(&params, &format!("paygate:checkout:{}", request.id))
        .await
}

async fn portal_session(billing: &Billing, request: &BillingRequest) -> Result<HostedSession, StripeError> {
    let customer = customer(billing, request.user_id, true)
        .await?
        .expect("created when missing");
    billing
        .stripe
        .create_portal_session(
            &customer,
            &billing.urls.portal_return_url,
            &format!("paygate:portal:{}", request.id),
        )
        .await
}

/// The user's Stripe customer; with `create`, one is created (once per user, by its key) when
/// none is known yet.
async fn customer(billing: &Billing, user_id: i64, create: bool) -> Result<Option<String>, StripeError> {
    let database = |e: sqlx::Error| StripeError::Retryable {
        reason: format!("database: {e}"),
        retry_after: None,
    };
    let mut conn = billing.pool.acquire().await.map_err(database)?;
    if let Some(known) = customer_of(&mut conn, user_id).await.map_err(database)? {
        return Ok(Some(known));
    }
    if !create {
        return Ok(None);
    }
    let created = billing
        .stripe
        .create_customer(user_id, &format!("paygate:customer:{user_id}"))
        .await?;
    remember_customer(&mut conn, user_id, &created)
        .await
        .map_err(database)?;
    // Another request may have remembered a customer first; use whichever is stored.
    Ok(customer_of(&mut conn, user_id)
        .await
        .map_err(database)?
        .or(Some(created)))
}
