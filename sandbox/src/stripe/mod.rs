//! A fake Stripe API on loopback. It speaks Stripe's protocol (form-encoded `POST /v1/…` with
//! bracketed keys, `Authorization: Bearer sk_…`, objects shaped like Stripe's own fixtures,
//! Stripe's error envelopes), keeps Stripe's idempotency rules (a repeated `Idempotency-Key`
//! replays the first answer byte for byte; the same key with other parameters or on another
//! endpoint is refused), fails or holds requests on request so that tests see retries and slowness,
//! and records what it was sent
//! so tests and the local run can see it at `GET /sandbox/requests`. What it sends back (webhook
//! deliveries, with the endpoint's answers) is at `GET /sandbox/webhooks`, and events of every type
//! billing handles can be sent on demand (`POST /sandbox/trigger/:type`).
//!
//! It also builds what Stripe sends the other way, for tests, the benchmark and the local run to
//! deliver: events around fixture objects ([`event`], [`fixture`]) and their `Stripe-Signature`
//! ([`sign_webhook`]).
//!
//! # Layout
//! - this module: the server, its state, authentication and the request dispatch.
//! - [`errors`]: error envelopes, scripted failures, idempotent replays.
//! - [`customers`]: customers and the Billing Portal.
//! - [`checkout`]: Checkout sessions and paying them.
//! - [`refunds`]: making refunds.
//! - [`webhooks`]: events, fixtures and webhook signatures.
//! - [`trigger`]: webhook deliveries with their answers, resends, and events sent on demand.

mod checkout;
mod customers;
mod errors;
mod refunds;
#[cfg(test)]
mod tests;
mod trigger;
mod webhooks;

#[allow(unused_imports)]
use checkout::*;
#[allow(unused_imports)]
use customers::*;
#[allow(unused_imports)]
use errors::*;
#[allow(unused_imports)]
use refunds::*;
#[allow(unused_imports)]
use trigger::*;
pub use trigger::{Delivery, TRIGGERS, Trigger, Triggered};
#[allow(unused_imports)]
use webhooks::*;
pub use webhooks::{event, fixture, sign_webhook};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    // The subscriptions paid or triggered, oldest first; the webhooks sent, and their events by id.
    lives: Vec<Life>,
    deliveries: Vec<Delivery>,
    events: HashMap<String, Value>,
}

#[derive(Debug)]
struct Shared {
    secret_key: String,
    url: String,
    state: Mutex<State>,
    // Where opening a Checkout URL sends the payment's events, and the signing secret.
    webhooks: Mutex<Option<(String, String)>>,
    // Paths whose requests wait, by `hold`, until the gate opens; and how many arrived.
    holds: Mutex<HashMap<String, Gate>>,
}

type Gate = (tokio::sync::watch::Receiver<bool>, Arc<AtomicUsize>);

/// Held keeps the requests to one path waiting, as a slow Stripe would, until it is dropped.
#[derive(Debug)]
pub struct Held {
    shared: Arc<Shared>,
    path: String,
    open: tokio::sync::watch::Sender<bool>,
    arrived: Arc<AtomicUsize>,
}

impl Held {
    /// How many requests arrived at the path while it was held.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.holds.lock().unwrap().remove(&self.path);
        let _ = self.open.send(true);
    }
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
            holds: Mutex::new(HashMap::new()),
        });
        let app = Route::new()
            .at("/v1/*rest", post(api).get(list))
            .at("/sandbox/requests", get(list_requests))
            .at("/sandbox/webhooks", get(list_deliveries))
            .at("/sandbox/webhooks/:event/resend", post(resend))
            .at("/sandbox/trigger/:type", post(send_trigger))
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

    /// Forgets every idempotency key, as Stripe does 24 hours after a key's first use.
    pub fn forget_idempotency_keys(&self) {
        self.shared.state.lock().unwrap().remembered.clear();
    }

    /// Requests to `path` wait, unanswered, until the returned [`Held`] is dropped.
    pub fn hold(&self, path: &str) -> Held {
        let (open, gate) = tokio::sync::watch::channel(false);
        let arrived = Arc::new(AtomicUsize::new(0));
        self.shared
            .holds
            .lock()
            .unwrap()
            .insert(path.to_string(), (gate, arrived.clone()));
        Held {
            shared: self.shared.clone(),
            path: path.to_string(),
            open,
            arrived,
        }
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

#[handler]
async fn api(
    Path(rest): Path<String>,
    headers: &poem::http::HeaderMap,
    body: String,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    let path = format!("/v1/{rest}");
    let gate = shared.holds.lock().unwrap().get(&path).cloned();
    if let Some((mut open, arrived)) = gate {
        arrived.fetch_add(1, Ordering::SeqCst);
        let _ = open.wait_for(|open| *open).await;
    }
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

/// `GET /v1/refunds?charge=…` or `?payment_intent=…`: the payment's refunds, newest first, as
/// a Stripe list (the fake has no pagination: `limit` is taken as given, `has_more` is false).
/// The fake lists nothing else.
#[handler]
fn list(
    Path(rest): Path<String>,
    headers: &poem::http::HeaderMap,
    query: poem::web::Query<HashMap<String, String>>,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    let mut state = shared.state.lock().unwrap();
    state.requests.push(StripeRequest {
        method: "GET".into(),
        path: format!("/v1/{rest}"),
        idempotency_key: None,
        form: query.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    });
    if let Some(refusal) = unauthorized(headers, &shared.secret_key) {
        let answer = Answer {
            status: refusal.status,
            body: refusal.error.to_string(),
        };
        return json_response(&answer, None, false);
    }
    if rest != "refunds" {
        let message = format!("Unrecognized request URL (GET: /v1/{rest}). Please see https://stripe.com/docs.");
        let answer = Answer {
            status: 404,
            body: stripe_error("invalid_request_error", None, &message, None).to_string(),
        };
        return json_response(&answer, None, false);
    }
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10);
    let of_payment = |refund: &&Value| {
        query.get("charge").is_none_or(|c| refund["charge"] == c.as_str())
            && query
                .get("payment_intent")
                .is_none_or(|p| refund["payment_intent"] == p.as_str())
    };
    let data: Vec<Value> = state
        .refunds
        .iter()
        .rev()
        .filter(of_payment)
        .take(limit)
        .cloned()
        .collect();
    let list = json!({"object": "list", "data": data, "has_more": false, "url": "/v1/refunds"});
    let answer = Answer {
        status: 200,
        body: list.to_string(),
    };
    json_response(&answer, None, false)
}

#[handler]
fn list_requests(shared: Data<&Arc<Shared>>) -> Json<Vec<StripeRequest>> {
    Json(shared.state.lock().unwrap().requests.clone())
}
