//! A fake Stripe API on loopback. It speaks Stripe's protocol (form-encoded `POST /v1/…` with
//! bracketed keys, `Authorization: Bearer sk_…`, objects shaped like Stripe's own fixtures,
//! Stripe's error envelopes), keeps Stripe's idempotency rules (a repeated `Idempotency-Key`
//! replays the first answer byte for byte; the same key with other parameters or on another
//! endpoint is refused), fails on request so that tests see retries, and records what it was sent
//! so tests and the local run can see it at `GET /sandbox/requests`.
//!
//! It also builds what Stripe sends the other way, for tests, the benchmark and the local run to
//! deliver: events around fixture objects ([`event`], [`fixture`]) and their `Stripe-Signature`
//! ([`sign_webhook`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json, Path};
use poem::{EndpointExt, Route, Server, get, handler, post};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// The secret key the local run gives the fake and the processes alike.
pub const SECRET_KEY: &str = "sk_test_sandbox";

/// The API version async-stripe 1.0.0-rc.10 sends as `Stripe-Version`, stamped on events.
pub const API_VERSION: &str = "2026-09-30.endive";

/// The amount of every payment the fake knows, in cents of [`CURRENCY`]: what a refund without
/// an amount takes back.
pub const PAYMENT_AMOUNT: i64 = 2000;

/// The currency of every payment the fake knows.
pub const CURRENCY: &str = "usd";

/// StripeRequest is one request the fake received, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StripeRequest {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The form body as sent, bracketed keys kept flat: `("metadata[plan]", "pro")`.
    pub form: Vec<(String, String)>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

// A first answer, kept under its idempotency key with what it answered.
#[derive(Debug)]
struct Remembered {
    path: String,
    // Sorted: Stripe compares parameters, not their order (metadata maps reorder freely).
    params: Vec<(String, String)>,
    status: u16,
    body: String,
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<StripeRequest>,
    customers: Vec<Value>,
    checkout_sessions: Vec<Value>,
    portal_sessions: Vec<Value>,
    refunds: Vec<Value>,
    // Refunded so far, in cents, by charge.
    refunded: HashMap<String, i64>,
    remembered: HashMap<String, Remembered>,
    // Scripted failures by path: the statuses to answer next.
    fail_next: HashMap<String, VecDeque<u16>>,
    rejected_prices: HashSet<String>,
    // The price each checkout session sells, for the events its payment sends.
    session_prices: HashMap<String, String>,
}

#[derive(Debug)]
struct Shared {
    secret_key: String,
    url: String,
    state: Mutex<State>,
    // Where opening a Checkout URL sends the payment's events, and the signing secret.
    webhooks: Mutex<Option<(String, String)>>,
}

/// FakeStripe is a running fake Stripe API; it stops when dropped.
#[derive(Debug)]
pub struct FakeStripe {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeStripe {
    /// Starts a fake for the account with `secret_key` on a free loopback port.
    pub async fn start(secret_key: &str) -> FakeStripe {
        Self::start_on("127.0.0.1:0", secret_key)
            .await
            .expect("starting the fake Stripe API")
    }

    /// Starts a fake on `addr`.
    pub async fn start_on(addr: &str, secret_key: &str) -> std::io::Result<FakeStripe> {
        let acceptor = TcpListener::bind(addr).into_acceptor().await?;
        let port = acceptor.local_addr()[0].as_socket_addr().expect("a TCP address").port();
        let url = format!("http://127.0.0.1:{port}");
        let shared = Arc::new(Shared {
            secret_key: secret_key.to_string(),
            url: url.clone(),
            state: Mutex::new(State::default()),
            webhooks: Mutex::new(None),
        });
        let app = Route::new()
            .at("/v1/*rest", post(api))
            .at("/sandbox/requests", get(list_requests))
            .at("/pay/:id", get(pay))
            .at("/portal/:id", get(portal))
            .data(shared.clone());
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Ok(FakeStripe { url, shared, server })
    }

    /// Makes opening a Checkout Session's URL pay it: the fake then sends the events Stripe would
    /// (`checkout.session.completed`, `invoice.paid`, `invoice_payment.paid`) to `endpoint`,
    /// signed with `secret`. For the local run, where nobody can pay on stripe.com.
    pub fn send_webhooks_to(&self, endpoint: &str, secret: &str) {
        *self.shared.webhooks.lock().unwrap() = Some((endpoint.to_string(), secret.to_string()));
    }

    /// The base URL to configure as Stripe's (`STRIPE_API_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received so far, failures included, in arrival order.
    pub fn requests(&self) -> Vec<StripeRequest> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// How many requests were sent to `path` (`/v1/refunds`), failures and replays included.
    pub fn count(&self, path: &str) -> usize {
        let state = self.shared.state.lock().unwrap();
        state.requests.iter().filter(|r| r.path == path).count()
    }

    /// The customers created so far.
    pub fn customers(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().customers.clone()
    }

    /// The Checkout sessions created so far.
    pub fn checkout_sessions(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().checkout_sessions.clone()
    }

    /// The billing portal sessions created so far.
    pub fn portal_sessions(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().portal_sessions.clone()
    }

    /// The refunds created so far.
    pub fn refunds(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().refunds.clone()
    }

    /// The next `times` requests to `path` (`/v1/checkout/sessions`) get `status` with a body like
    /// Stripe's for it: 400 an unknown price, 402 a declined card, 409 a locked object, 429 the
    /// rate limit, 5xx an API error. As at Stripe, 5xx, 409 and 429 answers are not kept under
    /// the idempotency key; other 4xx answers are, and replay.
    pub fn fail_next(&self, path: &str, status: u16, times: usize) {
        let mut state = self.shared.state.lock().unwrap();
        let queue = state.fail_next.entry(path.to_string()).or_default();
        queue.extend(std::iter::repeat_n(status, times));
    }

    /// From now on `price_id` does not exist. Every other id starting with `price_` does.
    pub fn reject_price(&self, price_id: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .rejected_prices
            .insert(price_id.to_string());
    }
}

// An error answer: Stripe's envelope and the status that goes with it.
struct Refusal {
    status: u16,
    error: Value,
}

impl Refusal {
    fn invalid(code: Option<&str>, message: &str, param: Option<&str>) -> Refusal {
        Refusal {
            status: 400,
            error: stripe_error("invalid_request_error", code, message, param),
        }
    }

    fn missing(param: &str) -> Refusal {
        Refusal::invalid(
            Some("parameter_missing"),
            &format!("Missing required param: {param}."),
            Some(param),
        )
    }

    fn no_such(kind: &str, id: &str, param: &str) -> Refusal {
        Refusal::invalid(
            Some("resource_missing"),
            &format!("No such {kind}: '{id}'"),
            Some(param),
        )
    }
}

fn stripe_error(kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Value {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    json!({ "error": error })
}

/// The body Stripe sends with `status`, for scripted failures.
fn scripted(status: u16) -> Value {
    match status {
        400 => stripe_error(
            "invalid_request_error",
            Some("resource_missing"),
            "No such price: 'price_x'",
            Some("line_items[0][price]"),
        ),
        401 => stripe_error(
            "invalid_request_error",
            None,
            "Invalid API Key provided: sk_test_****",
            None,
        ),
        402 => {
            let mut body = stripe_error("card_error", Some("card_declined"), "Your card was declined.", None);
            body["error"]["decline_code"] = json!("generic_decline");
            body
        }
        409 => stripe_error(
            "invalid_request_error",
            Some("lock_timeout"),
            "This object cannot be accessed right now because another API request or Stripe process is \
             currently accessing it. If you see this error intermittently, retry the request.",
            None,
        ),
        429 => stripe_error(
            "invalid_request_error",
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
            None,
        ),
        500..=599 => stripe_error("api_error", None, "An unknown error occurred", None),
        _ => stripe_error(
            "invalid_request_error",
            None,
            "The request was refused (scripted).",
            None,
        ),
    }
}

// Stripe keeps an answer under its idempotency key once the endpoint started executing; not
// when it refused the caller at the door, was busy (409), throttled (429) or failed itself.
fn remembered_by_key(status: u16) -> bool {
    !matches!(status, 401 | 409 | 429 | 500..=599)
}

fn json_response(answer: &Answer, key: Option<&str>, replayed: bool) -> poem::Response {
    let mut response = poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(answer.status).expect("a valid status"))
        .content_type("application/json");
    if let Some(key) = key {
        response = response.header("Idempotency-Key", key);
    }
    if replayed {
        response = response.header("Idempotent-Replayed", "true");
    }
    response.body(answer.body.clone())
}

#[handler]
fn api(
    Path(rest): Path<String>,
    headers: &poem::http::HeaderMap,
    body: String,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    let path = format!("/v1/{rest}");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = serde_urlencoded::from_str::<Vec<(String, String)>>(&body);
    let form = parsed.as_ref().cloned().unwrap_or_default();
    let mut state = shared.state.lock().unwrap();
    state.requests.push(StripeRequest {
        method: "POST".into(),
        path: path.clone(),
        idempotency_key: key.clone(),
        form: form.clone(),
    });

    let refuse = |refusal: Refusal| Answer {
        status: refusal.status,
        body: refusal.error.to_string(),
    };
    if let Some(refusal) = unauthorized(headers, &shared.secret_key) {
        return json_response(&refuse(refusal), key.as_deref(), false);
    }
    let mut params = form.clone();
    params.sort();
    let answer = if let Some(status) = state.fail_next.get_mut(&path).and_then(VecDeque::pop_front) {
        Answer {
            status,
            body: scripted(status).to_string(),
        }
    } else if let Some(previous) = key.as_ref().and_then(|k| state.remembered.get(k)) {
        let key = key.as_deref().unwrap_or_default();
        let refusal = if previous.path != path {
            format!(
                "Keys for idempotent requests can only be used for the same endpoint they were first used for \
                 ('{}' vs '{path}'). Try using a key other than '{key}' if you meant to execute a different request.",
                previous.path
            )
        } else if previous.params != params {
            format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used \
                 with. Try using a key other than '{key}' if you meant to execute a different request."
            )
        } else {
            let replay = Answer {
                status: previous.status,
                body: previous.body.clone(),
            };
            return json_response(&replay, Some(key), true);
        };
        let error = stripe_error("idempotency_error", None, &refusal, None);
        return json_response(&refuse(Refusal { status: 400, error }), Some(key), false);
    } else if let Err(e) = &parsed {
        refuse(Refusal::invalid(None, &format!("Invalid request body: {e}"), None))
    } else {
        let created = match path.as_str() {
            "/v1/customers" => create_customer(&mut state, &form),
            "/v1/checkout/sessions" => create_checkout_session(&shared.url, &mut state, &form),
            "/v1/billing_portal/sessions" => create_portal_session(&shared.url, &mut state, &form),
            "/v1/refunds" => create_refund(&mut state, &form),
            _ => Err(Refusal {
                status: 404,
                error: stripe_error(
                    "invalid_request_error",
                    None,
                    &format!("Unrecognized request URL (POST: {path}). Please see https://stripe.com/docs."),
                    None,
                ),
            }),
        };
        match created {
            Ok(object) => Answer {
                status: 200,
                body: object.to_string(),
            },
            Err(refusal) => refuse(refusal),
        }
    };
    if let Some(key) = &key
        && remembered_by_key(answer.status)
    {
        state.remembered.entry(key.clone()).or_insert_with(|| Remembered {
            path,
            params,
            status: answer.status,
            body: answer.body.clone(),
        });
    }
    json_response(&answer, key.as_deref(), false)
}

fn unauthorized(headers: &poem::http::HeaderMap, secret_key: &str) -> Option<Refusal> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let message = match given {
        Some(key) if key == secret_key => return None,
        Some(key) => format!("Invalid API Key provided: {}", redacted(key)),
        None => "You did not provide an API key. You need to provide your API key in the Authorization header, \
                 using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            .to_string(),
    };
    Some(Refusal {
        status: 401,
        error: stripe_error("invalid_request_error", None, &message, None),
    })
}

// As Stripe shows a key it refuses: its prefix and last four characters.
fn redacted(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 12))
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The entries of a bracketed map parameter: `metadata[plan]=pro` is `{"plan": "pro"}`.
fn map_param(form: &[(String, String)], name: &str) -> Map<String, Value> {
    let prefix = format!("{name}[");
    form.iter()
        .filter_map(|(k, v)| {
            let field = k.strip_prefix(&prefix)?.strip_suffix(']')?;
            (!field.contains('[')).then(|| (field.to_string(), json!(v)))
        })
        .collect()
}

fn or_null(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |v| json!(v))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh id in Stripe's style: `prefix` and `len` random alphanumerics.
fn new_id(prefix: &str, len: usize) -> String {
    let mut random = String::new();
    while random.len() < len {
        random.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    random.truncate(len);
    format!("{prefix}{random}")
}

fn create_customer(state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let mut customer = fixture("customer");
    customer["id"] = json!(new_id("cus_", 14));
    customer["created"] = json!(now());
    customer["livemode"] = json!(false);
    customer["discount"] = Value::Null;
    customer["metadata"] = Value::Object(map_param(form, "metadata"));
    for field in ["email", "name", "description", "phone"] {
        customer[field] = or_null(param(form, field));
    }
    state.customers.push(customer.clone());
    Ok(customer)
}

fn create_checkout_session(url: &str, state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let mode = param(form, "mode").ok_or_else(|| Refusal::missing("mode"))?;
    if !matches!(mode, "payment" | "setup" | "subscription") {
        return Err(Refusal::invalid(
            None,
            &format!("Invalid mode: must be one of payment, setup, or subscription (got '{mode}')"),
            Some("mode"),
        ));
    }
    let prices: Vec<(&str, &str)> = form
        .iter()
        .filter(|(k, _)| k.starts_with("line_items[") && k.ends_with("][price]"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if prices.is_empty() && mode != "setup" {
        return Err(Refusal::missing("line_items"));
    }
    if let Some((name, price)) = prices
        .iter()
        .find(|(_, price)| !price.starts_with("price_") || state.rejected_prices.contains(*price))
    {
        return Err(Refusal::no_such("price", price, name));
    }
    let customer = param(form, "customer");
    if let Some(id) = customer.filter(|id| !id.starts_with("cus_")) {
        return Err(Refusal::no_such("customer", id, "customer"));
    }
    let id = new_id("cs_test_", 58);
    let created = now();
    let mut session = fixture("checkout.session");
    session["id"] = json!(id);
    session["url"] = json!(format!("{url}/pay/{id}"));
    session["mode"] = json!(mode);
    session["client_reference_id"] = or_null(param(form, "client_reference_id"));
    session["customer"] = or_null(customer);
    session["customer_email"] = or_null(param(form, "customer_email"));
    session["metadata"] = Value::Object(map_param(form, "metadata"));
    session["success_url"] = or_null(param(form, "success_url"));
    session["cancel_url"] = or_null(param(form, "cancel_url"));
    session["status"] = json!("open");
    session["payment_status"] = json!("unpaid");
    session["subscription"] = Value::Null;
    session["payment_intent"] = Value::Null;
    session["invoice"] = Value::Null;
    session["customer_details"] = Value::Null;
    session["collected_information"] = Value::Null;
    session["currency"] = json!(CURRENCY);
    session["currency_conversion"] = Value::Null;
    session["amount_subtotal"] = json!(PAYMENT_AMOUNT);
    session["amount_total"] = json!(PAYMENT_AMOUNT);
    session["shipping_cost"] = Value::Null;
    session["shipping_address_collection"] = Value::Null;
    session["total_details"] = json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0});
    session["created"] = json!(created);
    session["expires_at"] = json!(created + 24 * 60 * 60);
    session["livemode"] = json!(false);
    if let Some((_, price)) = prices.first() {
        state.session_prices.insert(id.clone(), price.to_string());
    }
    state.checkout_sessions.push(session.clone());
    Ok(session)
}

fn create_portal_session(url: &str, state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let customer = param(form, "customer").ok_or_else(|| Refusal::missing("customer"))?;
    if !customer.starts_with("cus_") {
        return Err(Refusal::no_such("customer", customer, "customer"));
    }
    let id = new_id("bps_", 24);
    let mut session = fixture("billing_portal.session");
    session["id"] = json!(id);
    session["url"] = json!(format!("{url}/portal/{id}"));
    session["customer"] = json!(customer);
    session["return_url"] = or_null(param(form, "return_url"));
    session["flow"] = Value::Null;
    session["created"] = json!(now());
    session["livemode"] = json!(false);
    state.portal_sessions.push(session.clone());
    Ok(session)
}

/// The other half of a payment, so that tests can predict it: charge `ch_X` (or `py_X`) belongs
/// to payment intent `pi_X`, and `pi_X`'s charge is `ch_X`.
fn payment_pair(form: &[(String, String)]) -> Result<(String, String), Refusal> {
    match (param(form, "charge"), param(form, "payment_intent")) {
        (Some(_), Some(_)) => Err(Refusal::invalid(
            None,
            "You cannot specify both `charge` and `payment_intent`.",
            Some("payment_intent"),
        )),
        (Some(charge), None) => {
            let suffix = charge
                .strip_prefix("ch_")
                .or_else(|| charge.strip_prefix("py_"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::no_such("charge", charge, "charge"))?;
            Ok((charge.to_string(), format!("pi_{suffix}")))
        }
        (None, Some(intent)) => {
            let suffix = intent
                .strip_prefix("pi_")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::no_such("payment_intent", intent, "payment_intent"))?;
            Ok((format!("ch_{suffix}"), intent.to_string()))
        }
        (None, None) => Err(Refusal::invalid(
            Some("parameter_missing"),
            "One of the following params should be provided for this request: payment_intent or charge.",
            None,
        )),
    }
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn create_refund(state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let (charge, payment_intent) = payment_pair(form)?;
    let refunded = state.refunded.get(&charge).copied().unwrap_or(0);
    let left = PAYMENT_AMOUNT - refunded;
    let amount = match param(form, "amount") {
        None => left,
        Some(raw) => match raw.parse::<i64>() {
            Ok(amount) if amount > 0 => amount,
            _ => {
                return Err(Refusal::invalid(
                    None,
                    &format!("Invalid positive integer: {raw}"),
                    Some("amount"),
                ));
            }
        },
    };
    if left == 0 {
        return Err(Refusal::invalid(
            Some("charge_already_refunded"),
            &format!("Charge {charge} has already been refunded."),
            None,
        ));
    }
    if amount > left {
        return Err(Refusal::invalid(
            Some("amount_too_large"),
            &format!(
                "Refund amount ({}) is greater than unrefunded amount on charge ({})",
                dollars(amount),
                dollars(left)
            ),
            Some("amount"),
        ));
    }
    let reason = param(form, "reason");
    if let Some(reason) = reason.filter(|r| !matches!(*r, "duplicate" | "fraudulent" | "requested_by_customer")) {
        return Err(Refusal::invalid(
            None,
            &format!("Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer (got '{reason}')"),
            Some("reason"),
        ));
    }
    let mut refund = fixture("refund");
    refund["id"] = json!(new_id("re_", 24));
    refund["amount"] = json!(amount);
    refund["charge"] = json!(charge);
    refund["payment_intent"] = json!(payment_intent);
    refund["currency"] = json!(CURRENCY);
    refund["status"] = json!("succeeded");
    refund["reason"] = or_null(reason);
    refund["metadata"] = Value::Object(map_param(form, "metadata"));
    refund["created"] = json!(now());
    state.refunded.insert(charge, refunded + amount);
    state.refunds.push(refund.clone());
    Ok(refund)
}

/// The hosted Checkout page: paying is opening it. Sends the payment's events to the configured
/// webhook endpoint, as Stripe would once the customer paid.
#[handler]
async fn pay(Path(id): Path<String>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let page = |status: u16, text: String| {
        poem::Response::builder()
            .status(poem::http::StatusCode::from_u16(status).unwrap_or_default())
            .content_type("text/plain; charset=utf-8")
            .body(text)
    };
    let (session, price) = {
        let state = shared.state.lock().unwrap();
        let session = state.checkout_sessions.iter().find(|s| s["id"] == id.as_str()).cloned();
        (session, state.session_prices.get(&id).cloned())
    };
    let Some(session) = session else {
        return page(404, format!("No such checkout session: {id}"));
    };
    let Some((endpoint, secret)) = shared.webhooks.lock().unwrap().clone() else {
        return page(
            200,
            "Paid (this fake sends no webhooks: send_webhooks_to was not called).".into(),
        );
    };
    let user_id: i64 = session["client_reference_id"]
        .as_str()
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    let plan = session["metadata"]["plan"].as_str().unwrap_or("unknown");
    let tag: String = id.trim_start_matches("cs_test_").chars().take(14).collect();
    let subscription =
        crate::stripe_events::Subscription::new(&tag, user_id, plan, price.as_deref().unwrap_or("price_sandbox"));
    let now = now();
    let events = [
        subscription.checkout_session("checkout.session.completed", "paid", now),
        subscription.invoice_paid(1, now + 30 * 24 * 60 * 60, now),
        subscription.invoice_payment_paid(1, now),
    ];
    let client = reqwest::Client::new();
    for event in events {
        let payload = event.to_string();
        let sent = client
            .post(&endpoint)
            .header("Stripe-Signature", sign_webhook(&payload, &secret, now))
            .header("Content-Type", "application/json")
            .body(payload)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => return page(502, format!("The webhook endpoint answered {}", r.status())),
            Err(e) => return page(502, format!("The webhook endpoint is unreachable: {e}")),
        }
    }
    page(
        200,
        format!(
            "Paid: subscription {} of user {user_id} to {plan}. You can close this page.",
            subscription.id
        ),
    )
}

/// The hosted Billing Portal page.
#[handler]
fn portal(Path(id): Path<String>, shared: Data<&Arc<Shared>>) -> String {
    let state = shared.state.lock().unwrap();
    match state.portal_sessions.iter().find(|s| s["id"] == id.as_str()) {
        Some(session) => format!("Fake billing portal of customer {}", session["customer"]),
        None => format!("No such portal session: {id}"),
    }
}

#[handler]
fn list_requests(shared: Data<&Arc<Shared>>) -> Json<Vec<StripeRequest>> {
    Json(shared.state.lock().unwrap().requests.clone())
}

/// The `Stripe-Signature` header Stripe would send with `payload` at `timestamp`, signed with the
/// endpoint's signing `secret` (`whsec_…`).
pub fn sign_webhook(payload: &str, secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An event of `event_type` (`checkout.session.completed`) about `object`, as Stripe delivers it
/// to a webhook endpoint, with a fresh id.
pub fn event(event_type: &str, object: Value, created: i64) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(new_id("evt_", 24));
    event["object"] = json!("event");
    event["api_version"] = json!(API_VERSION);
    event["created"] = json!(created);
    event["data"] = json!({ "object": object });
    event["livemode"] = json!(false);
    event["pending_webhooks"] = json!(1);
    event["request"] = json!({"id": null, "idempotency_key": null});
    event["type"] = json!(event_type);
    event
}

/// A copy of Stripe's example object `name`: one of `billing_portal.session`, `charge`,
/// `checkout.session`, `customer`, `dispute`, `event`, `invoice`, `refund`, `subscription`.
///
/// # Panics
/// When there is no fixture called `name`.
pub fn fixture(name: &str) -> Value {
    static FIXTURES: OnceLock<Map<String, Value>> = OnceLock::new();
    let fixtures = FIXTURES.get_or_init(|| {
        let file: Value =
            serde_json::from_str(include_str!("../fixtures/stripe.json")).expect("fixtures/stripe.json is JSON");
        file["resources"]
            .as_object()
            .expect("fixtures/stripe.json has resources")
            .clone()
    });
    match fixtures.get(name) {
        Some(object) => object.clone(),
        None => panic!(
            "no Stripe fixture {name:?}; there are {:?}",
            fixtures.keys().collect::<Vec<_>>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_stripes_hmac_of_the_timestamped_payload() {
        // Computed independently: HMAC-SHA256("whsec_test", "1700000000.{\"id\":\"evt_1\"}").
        assert_eq!(
            sign_webhook(r#"{"id":"evt_1"}"#, "whsec_test", 1_700_000_000),
            "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
        );
    }

    #[test]
    fn an_event_wraps_its_object_with_a_fresh_id() {
        let session = fixture("checkout.session");
        let first = event("checkout.session.completed", session.clone(), 1_700_000_000);
        let second = event("checkout.session.completed", session.clone(), 1_700_000_000);
        assert_eq!(first["type"], "checkout.session.completed");
        assert_eq!(first["data"]["object"], session);
        assert_eq!(first["api_version"], API_VERSION);
        assert_eq!(first["created"], 1_700_000_000);
        assert!(first["id"].as_str().unwrap().starts_with("evt_"));
        assert_ne!(first["id"], second["id"]);
    }

    #[test]
    fn every_named_fixture_is_there() {
        for name in [
            "billing_portal.session",
            "charge",
            "checkout.session",
            "customer",
            "dispute",
            "event",
            "invoice",
            "refund",
            "subscription",
        ] {
            assert_eq!(fixture(name)["object"], name);
        }
    }

    #[test]
    fn bracketed_maps_are_read_one_level_deep() {
        let form = vec![
            ("metadata[plan]".to_string(), "pro".to_string()),
            ("subscription_data[metadata][plan]".to_string(), "pro".to_string()),
            ("metadata[a][b]".to_string(), "x".to_string()),
        ];
        assert_eq!(Value::Object(map_param(&form, "metadata")), json!({"plan": "pro"}));
    }

    #[test]
    fn a_refused_key_shows_only_its_ends() {
        assert_eq!(redacted("sk_test_wrong_key_1234"), "sk_test_**********1234");
        assert_eq!(redacted("short"), "*****");
    }
}
