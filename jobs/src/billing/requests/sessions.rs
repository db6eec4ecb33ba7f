//! The `checkout` job: asks Stripe for the session a billing request wants (or Telegram for a
//! Stars invoice link) and settles the request with its URL, or with the provider's reason when
//! it refuses for good.
//!
//! Every Stripe call carries an idempotency key derived from the request (or, for a new
//! customer, from the user), so a retried attempt gets the same session back instead of a second
//! one. Retryable failures (network, 5xx, 429) back off on the queue's schedule, which ends
//! within Stripe's 24-hour memory of keys; the last one fails the request.

use super::{BillingRequest, CreateSession, Kind, RequestStatus, Settlement, get, settle};
use crate::billing::stripe::{customer_of, remember_customer};
use crate::billing::{Billing, entitlements, stars};
use crate::bot;
use crate::queue::{Completed, Job, JobError, apply_once, complete_unchanged};
use crate::stripe::client::{self, CheckoutSessionParams};
use crate::telegram;

/// ReturnUrls is where Stripe sends users back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnUrls {
    /// `CHECKOUT_SUCCESS_URL`, `CHECKOUT_CANCEL_URL`: where Checkout sends the user after paying
    /// or giving up.
    pub success: String,
    pub cancel: String,
    /// `BILLING_PORTAL_RETURN_URL`: where the Billing Portal's "return" link goes.
    pub portal_return: String,
}

/// Runs one attempt of a `checkout` job.
pub async fn create_session(billing: &Billing, job: Job<CreateSession>) -> Result<Completed, JobError> {
    let request = get(&mut *billing.pool.acquire().await?, job.payload.request_id).await?;
    let Some(request) = request else {
        return Err(JobError::Terminal(format!(
            "billing request {} does not exist",
            job.payload.request_id
        )));
    };
    if request.status != RequestStatus::Pending {
        return complete_unchanged(&billing.pool, &job).await;
    }
    let created = match already_subscribed(billing, &request).await? {
        // The web process checked too; a subscription may have begun since.
        Some(refusal) => Err(("the purchase guard", JobError::Terminal(refusal))),
        None => match request.kind {
            Kind::Checkout => checkout_session(billing, &job, &request)
                .await
                .map_err(|e| ("Stripe", e)),
            Kind::Portal => portal_session(billing, &job, &request).await.map_err(|e| ("Stripe", e)),
            Kind::StarsInvoice => stars_invoice(billing, &job, &request)
                .await
                .map_err(|e| ("Telegram", e)),
        },
    };
    let last_failure: String;
    let settlement = match &created {
        Ok((url, provider_id)) => Settlement::Ready { url, provider_id },
        Err((provider, error)) => match error {
            JobError::Terminal(reason) => {
                tracing::warn!(request = request.id, by = provider, reason, "the request was refused");
                Settlement::Failed { reason }
            }
            // The last attempt settles the request, so that a client polling it learns the
            // outcome instead of seeing `pending` forever; the user can simply ask again.
            JobError::Retryable(reason) if job.attempt >= job.max_attempts => {
                tracing::warn!(
                    request = request.id,
                    provider,
                    reason,
                    "provider unreachable on the last attempt"
                );
                last_failure = format!(
                    "{provider} could not be reached after {} attempts: {reason}",
                    job.attempt
                );
                Settlement::Failed { reason: &last_failure }
            }
            retry => return Err(retry.clone()),
        },
    };
    apply_once(&billing.pool, &job, async |tx| {
        let settled = settle(tx.conn(), request.id, settlement).await?;
        // A request made in the chat with the bot gets its link there, with the settlement.
        if let Some(link) = settled.as_ref().and_then(|r| bot::link_job(billing.bot(), r)) {
            tx.enqueue(&link).await?;
        }
        Ok::<(), sqlx::Error>(())
    })
    .await
}

/// Why the plan a purchase request asks for is not sold to its user now (the purchase guard,
/// [`entitlements::renewing`]), if it is not.
async fn already_subscribed(billing: &Billing, request: &BillingRequest) -> Result<Option<String>, JobError> {
    let (Kind::Checkout | Kind::StarsInvoice, Some(plan)) = (request.kind, request.plan.as_deref()) else {
        return Ok(None);
    };
    let renewing = entitlements::renewing(&mut *billing.pool.acquire().await?, request.user_id, plan).await?;
    let name = billing.plans.get(plan).map_or(plan, |p| p.name.as_str());
    Ok(renewing.first().map(|e| e.already_subscribed(name)))
}

/// A Checkout session for the request's plan: (URL, session id).
async fn checkout_session(
    billing: &Billing,
    job: &Job<CreateSession>,
    request: &BillingRequest,
) -> Result<(String, String), JobError> {
    let code = request.plan.as_deref().unwrap_or_default();
    let Some(price) = billing.plans.get(code).and_then(|p| p.stripe_price.as_deref()) else {
        // The web process checked the plan; the catalogue changed since.
        return Err(JobError::Terminal(format!("plan {code:?} is not sold through Stripe")));
    };
    let customer = customer(billing, job, request.user_id, false).await?;
    let params = CheckoutSessionParams {
        user_id: request.user_id,
        customer: customer.as_deref(),
        price_id: price,
        plan: code,
        request_id: request.id,
        success_url: &billing.return_urls.success,
        cancel_url: &billing.return_urls.cancel,
    };
    billing.hold(job, client::TIMEOUT).await?;
    let session = billing
        .stripe
        .create_checkout_session(&params, &format!("paygate:checkout:{}", request.id))
        .await?;
    Ok((session.url, session.id))
}

/// A Billing Portal session for the request's user: (URL, session id).
async fn portal_session(
    billing: &Billing,
    job: &Job<CreateSession>,
    request: &BillingRequest,
) -> Result<(String, String), JobError> {
    let customer = customer(billing, job, request.user_id, true)
        .await?
        .expect("created when missing");
    billing.hold(job, client::TIMEOUT).await?;
    let session = billing
        .stripe
        .create_portal_session(
            &customer,
            &billing.return_urls.portal_return,
            &format!("paygate:portal:{}", request.id),
        )
        .await?;
    Ok((session.url, session.id))
}

/// The Stars invoice link a request asks for: (URL, URL). Telegram takes no idempotency key
/// here, but a second link from a retried attempt charges nothing: only the stored one is handed
/// out.
async fn stars_invoice(
    billing: &Billing,
    job: &Job<CreateSession>,
    request: &BillingRequest,
) -> Result<(String, String), JobError> {
    let code = request.plan.as_deref().unwrap_or_default();
    let Some(invoice) = stars::invoice(&billing.plans, code) else {
        // The web process checked the plan; the catalogue changed since.
        return Err(JobError::Terminal(format!(
            "plan {code:?} is not sold for Telegram Stars"
        )));
    };
    billing.hold(job, telegram::client::TIMEOUT).await?;
    let url = billing.telegram.create_invoice_link(&invoice).await?;
    Ok((url.clone(), url))
}

/// The user's Stripe customer; with `create`, one is created (once per user, by its key) when
/// none is known yet. No connection is held while Stripe is asked.
async fn customer(
    billing: &Billing,
    job: &Job<CreateSession>,
    user_id: i64,
    create: bool,
) -> Result<Option<String>, JobError> {
    let known = async { customer_of(&mut *billing.pool.acquire().await?, user_id).await };
    if let Some(known) = known.await? {
        return Ok(Some(known));
    }
    if !create {
        return Ok(None);
    }
    billing.hold(job, client::TIMEOUT).await?;
    let created = billing
        .stripe
        .create_customer(user_id, &format!("paygate:customer:{user_id}"))
        .await?;
    let stored = async {
        let mut conn = billing.pool.acquire().await?;
        remember_customer(&mut conn, user_id, &created).await?;
        // Another request may have remembered a customer first; use whichever is stored.
        customer_of(&mut conn, user_id).await
    };
    Ok(stored.await?.or(Some(created)))
}
