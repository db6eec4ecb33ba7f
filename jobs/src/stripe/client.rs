//! The Stripe API client: async-stripe's client, with a configurable base URL so that tests and
//! the local run point it at the fake Stripe, exactly one attempt per call under the caller's
//! idempotency key (the job queue retries, durably), and a mapping of its errors to what the
//! pipeline should do about them.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use stripe::{ApiErrors, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;
use stripe_core::refund::{CreateRefund, CreateRefundReason, ListRefund};

use crate::config::Secret;
use crate::queue::JobError;

/// The Stripe API's own address, used when no other is configured.
pub const DEFAULT_API_URL: &str = "https://api.stripe.com/";

/// How long one request may take, connecting included. Stripe answers creates within a couple
/// of seconds; a hung request must not hold a worker slot for long, and the queue retries it
/// under the same idempotency key. A job checks its lease outlasts it before each call.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// StripeClient sends Stripe API requests for one account. Every create is sent once, with the
/// caller's idempotency key, so that a retry by the queue replays Stripe's first answer instead
/// of creating a second object.
#[derive(Clone)]
pub struct StripeClient {
    client: stripe::Client,
    api_url: String,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// CheckoutSessionParams is a hosted Checkout page for one subscription to one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutSessionParams<'a> {
    /// The Telegram user who subscribes; Stripe's `client_reference_id`.
    pub user_id: i64,
    /// The user's Stripe customer, when they have one; otherwise Checkout creates one.
    pub customer: Option<&'a str>,
    pub price_id: &'a str,
    /// Our name for the plan, echoed back in webhooks through the metadata.
    pub plan: &'a str,
    /// Our checkout request, echoed back in webhooks through the session's metadata.
    pub request_id: i64,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// HostedSession is a page on Stripe's site to send the user to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedSession {
    pub id: String,
    pub url: String,
}

/// PaymentRef is the payment a refund takes money back from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentRef<'a> {
    PaymentIntent(&'a str),
    /// A charge: `ch_…` for cards, `py_…` for other payment methods.
    Charge(&'a str),
}

impl<'a> PaymentRef<'a> {
    /// Reads a payment id by its prefix: `pi_…` is a payment intent, `ch_…` and `py_…` charges.
    pub fn parse(id: &'a str) -> Option<PaymentRef<'a>> {
        let (prefix, rest) = id.split_once('_')?;
        if rest.is_empty() {
            return None;
        }
        match prefix {
            "pi" => Some(PaymentRef::PaymentIntent(id)),
            "ch" | "py" => Some(PaymentRef::Charge(id)),
            _ => None,
        }
    }
}

/// RefundParams is a refund of all or part of one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundParams<'a> {
    pub payment: PaymentRef<'a>,
    /// In the currency's smallest unit; `None` refunds whatever is left of the payment.
    pub amount: Option<i64>,
    /// One of `duplicate`, `fraudulent`, `requested_by_customer`.
    pub reason: Option<&'a str>,
    /// Our refund request, recorded in the refund's metadata.
    pub refund_request_id: i64,
}

/// CreatedRefund is Stripe's record of a refund it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRefund {
    pub id: String,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
}

/// StripeError is why a Stripe request did not succeed, sorted by what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// The network or Stripe failed (timeout, 5xx, 429, a 409 on a busy object or idempotency
    /// key): worth another attempt with the same idempotency key. `retry_after` is a wait Stripe
    /// asked for; async-stripe does not expose response headers, so today it is always `None`
    /// and the queue's backoff decides.
    #[error("Stripe request failed, worth retrying: {reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Stripe refused the request (card, parameter or authentication errors) and will refuse it
    /// again; `reason` is Stripe's message with its error type, code and parameter.
    #[error("refused by Stripe: {reason}")]
    Permanent { reason: String },
}

impl From<StripeError> for JobError {
    /// The job outcome of a failed request: a refusal is dead at once; anything else retries on
    /// the queue's backoff (`retry_after` is never known, see above).
    fn from(e: StripeError) -> JobError {
        match e {
            StripeError::Permanent { reason } => JobError::Terminal(reason),
            StripeError::Retryable { reason, .. } => JobError::Retryable(reason),
        }
    }
}

impl StripeClient {
    /// A client for the account with `secret_key`, talking to `api_url` ([`DEFAULT_API_URL`] in
    /// production).
    pub fn new(secret_key: &Secret, api_url: &str) -> Result<StripeClient, String> {
        // async-stripe appends `v1/...` to the base verbatim, so the base must end with a slash.
        let api_url = format!("{}/", api_url.trim_end_matches('/'));
        reqwest::Url::parse(&api_url).map_err(|e| format!("{api_url:?}: {e}"))?;
        let client = stripe::ClientBuilder::new(secret_key.expose())
            .url(api_url.as_str())
            .timeout(TIMEOUT)
            // Our default; every call overrides it with its idempotency key. Never async-stripe's
            // Retry strategies: they retry in memory with a random key, and a crash loses them.
            .request_strategy(RequestStrategy::Once)
            .app_info("paygate", Some(env!("CARGO_PKG_VERSION").to_string()), None)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(StripeClient { client, api_url })
    }

    /// Creates a customer for a Telegram user (metadata `telegram_user_id`), returns its id `cus_…`.
    pub async fn create_customer(&self, user_id: i64, idempotency_key: &str) -> Result<String, StripeError> {
        let request =
            CreateCustomer::new().metadata(HashMap::from([("telegram_user_id".to_string(), user_id.to_string())]));
        let customer = request
            .customize()
            .request_strategy(once_with(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(customer.id.as_str().to_string())
    }

    /// Creates a hosted Checkout page for a subscription to `params.price_id`.
    pub async fn create_checkout_session(
        &self,
        params: &CheckoutSessionParams<'_>,
        idempotency_key: &str,
    ) -> Result<HostedSession, StripeError> {
        let user_id = params.user_id.to_string();
        let mut line = CreateCheckoutSessionLineItems::new();
        line.price = Some(params.price_id.to_string());
        line.quantity = Some(1);
        // The subscription outlives the session: its own metadata is what its webhooks carry.
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(HashMap::from([
            ("telegram_user_id".to_string(), user_id.clone()),
            ("plan".to_string(), params.plan.to_string()),
        ]));
        let mut request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .client_reference_id(user_id.clone())
            .line_items(vec![line])
            .metadata(HashMap::from([
                ("telegram_user_id".to_string(), user_id),
                ("plan".to_string(), params.plan.to_string()),
                ("request_id".to_string(), params.request_id.to_string()),
            ]))
            .subscription_data(subscription)
            .success_url(params.success_url)
            .cancel_url(params.cancel_url);
        if let Some(customer) = params.customer {
            request = request.customer(customer);
        }
        let session = request
            .customize()
            .request_strategy(once_with(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(classify)?;
        let id = session.id.as_str().to_string();
        let url = session.url.ok_or_else(|| StripeError::Permanent {
            reason: format!("checkout session {id} came back without a url"),
        })?;
        Ok(HostedSession { id, url })
    }

    /// Creates a billing portal page where `customer` manages their subscription, leading back
    /// to `return_url`.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<HostedSession, StripeError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .customize()
            .request_strategy(once_with(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(HostedSession {
            id: session.id.as_str().to_string(),
            url: session.url,
        })
    }

    /// Refunds all or part of a payment.
    pub async fn create_refund(
        &self,
        params: &RefundParams<'_>,
        idempotency_key: &str,
    ) -> Result<CreatedRefund, StripeError> {
        let mut request = CreateRefund::new().metadata(HashMap::from([(
            "refund_request_id".to_string(),
            params.refund_request_id.to_string(),
        )]));
        request = match params.payment {
            PaymentRef::PaymentIntent(id) => request.payment_intent(id),
            PaymentRef::Charge(id) => request.charge(id),
        };
        if let Some(amount) = params.amount {
            request = request.amount(amount);
        }
        if let Some(reason) = params.reason {
            request = request.reason(refund_reason(reason)?);
        }
        let refund = request
            .customize()
            .request_strategy(once_with(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(created_refund(refund))
    }

    /// The refund of `payment` made for our refund request `refund_request_id` (by its
    /// metadata) that has not failed or been cancelled, if Stripe has one: how a retry that
    /// Stripe's key memory no longer covers finds out whether an earlier attempt made it. Looks
    /// at the payment's latest 100 refunds.
    pub async fn find_refund(
        &self,
        payment: PaymentRef<'_>,
        refund_request_id: i64,
    ) -> Result<Option<CreatedRefund>, StripeError> {
        let request = match payment {
            PaymentRef::PaymentIntent(id) => ListRefund::new().payment_intent(id),
            PaymentRef::Charge(id) => ListRefund::new().charge(id),
        };
        let refunds = request.limit(100).send(&self.client).await.map_err(classify)?;
        let ours = refund_request_id.to_string();
        Ok(refunds
            .data
            .into_iter()
            .filter(|r| r.metadata.as_ref().and_then(|m| m.get("refund_request_id")) == Some(&ours))
            .map(created_refund)
            .find(|r| !matches!(r.status.as_str(), "failed" | "canceled")))
    }
}

fn created_refund(refund: stripe_core::Refund) -> CreatedRefund {
    CreatedRefund {
        id: refund.id.as_str().to_string(),
        status: refund.status.unwrap_or_default(),
        amount: refund.amount,
        currency: refund.currency.to_string(),
        charge: refund.charge.map(|c| c.id().as_str().to_string()),
        payment_intent: refund.payment_intent.map(|p| p.id().as_str().to_string()),
    }
}

/// One attempt, carrying `key` as the `Idempotency-Key` header.
fn once_with(key: &str) -> Result<RequestStrategy, StripeError> {
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| StripeError::Permanent {
            reason: format!("idempotency key {key:?}: {e}"),
        })
}

fn refund_reason(reason: &str) -> Result<CreateRefundReason, StripeError> {
    match reason {
        "duplicate" => Ok(CreateRefundReason::Duplicate),
        "fraudulent" => Ok(CreateRefundReason::Fraudulent),
        "requested_by_customer" => Ok(CreateRefundReason::RequestedByCustomer),
        other => Err(StripeError::Permanent {
            reason: format!("refund reason {other:?} is not one of duplicate, fraudulent, requested_by_customer"),
        }),
    }
}

// The texts async-stripe puts in `JSONDeserialize`: the first when a non-2xx answer is not
// Stripe's error envelope, the second when a 2xx answer does not match the expected object.
const UNREADABLE_ERROR: &str = "error deserializing Stripe error";
const UNREADABLE_OBJECT: &str = "error deserializing request data";

/// Sorts an async-stripe error by what to do next.
pub fn classify(error: stripe::StripeError) -> StripeError {
    use stripe::StripeError as E;
    let retryable = |reason: String| StripeError::Retryable {
        reason,
        retry_after: None,
    };
    match error {
        // Stripe's documented transient statuses: 409 (a concurrent request holds the object or
        // the idempotency key), 424 (a dependency failed), 429 and 5xx.
        E::Stripe(api, status) if matches!(status, 409 | 424 | 429 | 500..=599) => retryable(describe(&api, status)),
        E::Stripe(api, status) => StripeError::Permanent {
            reason: describe(&api, status),
        },
        E::ClientError(e) => retryable(format!("network: {e}")),
        E::Timeout => retryable(format!("no answer within {TIMEOUT:?}")),
        // A 2xx whose body does not fit async-stripe's types: Stripe most likely did what was
        // asked, and a retry would only replay the same body under the same key. It takes a fix
        // here (an API version mismatch, most likely), not another attempt.
        E::JSONDeserialize(e) if e == UNREADABLE_OBJECT => StripeError::Permanent {
            reason: format!(
                "Stripe's answer did not match the expected object (the request probably took effect): {e}"
            ),
        },
        // A non-2xx that is not Stripe's JSON is a proxy or load balancer page, which are
        // transient; an unreadable body of unknown status is treated the same.
        E::JSONDeserialize(e) if e == UNREADABLE_ERROR => retryable(format!("an error answer not from Stripe: {e}")),
        E::JSONDeserialize(e) => retryable(format!("unreadable answer: {e}")),
        E::ConfigError(e) => StripeError::Permanent {
            reason: format!("client configuration: {e}"),
        },
    }
}

/// Stripe's message, then its error type, code, decline code and parameter when present.
fn describe(api: &ApiErrors, status: u16) -> String {
    let mut details = vec![api.type_.as_str().to_string()];
    if let Some(code) = &api.code {
        details.push(format!("code {}", code.as_str()));
    }
    if let Some(decline) = &api.decline_code {
        details.push(format!("decline_code {decline}"));
    }
    if let Some(param) = &api.param {
        details.push(format!("param {param}"));
    }
    details.push(format!("HTTP {status}"));
    let message = api.message.as_deref().unwrap_or("no message");
    format!("{message} ({})", details.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stripe::{ApiErrorsCode, ApiErrorsType};

    fn api_error(type_: ApiErrorsType, code: Option<&str>, message: &str, param: Option<&str>) -> Box<ApiErrors> {
        Box::new(ApiErrors {
            advice_code: None,
            charge: None,
            code: code.map(|c| c.parse::<ApiErrorsCode>().unwrap()),
            decline_code: None,
            doc_url: None,
            message: Some(message.to_string()),
            network_advice_code: None,
            network_decline_code: None,
            param: param.map(str::to_string),
            payment_intent: None,
            payment_method: None,
            payment_method_type: None,
            request_log_url: None,
            setup_intent: None,
            source: None,
            type_,
        })
    }

    #[test]
    fn transient_statuses_are_retryable_and_the_rest_permanent() {
        for status in [409, 424, 429, 500, 502, 503] {
            let error = stripe::StripeError::Stripe(api_error(ApiErrorsType::ApiError, None, "boom", None), status);
            assert!(matches!(classify(error), StripeError::Retryable { .. }), "{status}");
        }
        for status in [400, 401, 402, 403, 404] {
            let error =
                stripe::StripeError::Stripe(api_error(ApiErrorsType::InvalidRequestError, None, "no", None), status);
            assert!(matches!(classify(error), StripeError::Permanent { .. }), "{status}");
        }
    }

    #[test]
    fn a_refusal_reads_as_stripe_wrote_it() {
        let error = stripe::StripeError::Stripe(
            api_error(
                ApiErrorsType::InvalidRequestError,
                Some("resource_missing"),
                "No such price: 'price_x'",
                Some("line_items[0][price]"),
            ),
            400,
        );
        assert_eq!(
            classify(error),
            StripeError::Permanent {
                reason: "No such price: 'price_x' (invalid_request_error, code resource_missing, \
                         param line_items[0][price], HTTP 400)"
                    .into()
            }
        );
    }

    #[test]
    fn network_failures_retry_but_a_mismatched_object_does_not() {
        let retryable = |e| matches!(classify(e), StripeError::Retryable { .. });
        assert!(retryable(stripe::StripeError::Timeout));
        assert!(retryable(stripe::StripeError::ClientError("connection refused".into())));
        assert!(retryable(stripe::StripeError::JSONDeserialize(UNREADABLE_ERROR.into())));
        assert!(!retryable(stripe::StripeError::JSONDeserialize(
            UNREADABLE_OBJECT.into()
        )));
        assert!(!retryable(stripe::StripeError::ConfigError("bad account".into())));
    }

    #[test]
    fn payment_ids_are_read_by_prefix() {
        assert_eq!(PaymentRef::parse("pi_123"), Some(PaymentRef::PaymentIntent("pi_123")));
        assert_eq!(PaymentRef::parse("ch_123"), Some(PaymentRef::Charge("ch_123")));
        assert_eq!(PaymentRef::parse("py_123"), Some(PaymentRef::Charge("py_123")));
        assert_eq!(PaymentRef::parse("re_123"), None);
        assert_eq!(PaymentRef::parse("pi_"), None);
        assert_eq!(PaymentRef::parse("pi123"), None);
    }

    #[test]
    fn unknown_refund_reasons_and_bad_keys_are_refused_before_sending() {
        assert!(matches!(
            refund_reason("changed_mind"),
            Err(StripeError::Permanent { .. })
        ));
        assert!(matches!(once_with(""), Err(StripeError::Permanent { .. })));
        assert!(matches!(
            once_with(&"k".repeat(256)),
            Err(StripeError::Permanent { .. })
        ));
        assert!(once_with("checkout:42").is_ok());
    }

    #[test]
    fn the_client_never_prints_its_key() {
        let client = StripeClient::new(&Secret::new("sk_test_hunter2"), DEFAULT_API_URL).unwrap();
        let printed = format!("{client:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
