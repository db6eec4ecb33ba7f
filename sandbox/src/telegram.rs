//! A fake Telegram Bot API on loopback. It speaks the real protocol (`POST /bot<token>/<method>`,
//! `{"ok": …}` envelopes, Telegram's error texts), keeps Telegram's limits the way Telegram does
//! (a 429 with `retry_after` when a chat or the bot goes too fast), and records what it was sent
//! so tests and the local run can see it at `GET /sandbox/messages`.
//!
//! Besides `sendMessage` it serves what paying in Telegram Stars needs: `createInvoiceLink`
//! (checked as Telegram checks a Stars invoice; links at `GET /sandbox/invoice_links`),
//! `refundStarPayment` (of payments it was told of), and `setWebhook` / `getWebhookInfo`
//! (at `GET /sandbox/webhook`). Any method can be made to fail on request ([`FakeTelegram::fail_next`]).
//!
//! Paying an invoice link is opening `GET /sandbox/pay/<slug>?user_id=<id>` (the slug is what
//! follows `https://t.me/$`): the fake then does what Telegram does once a user confirms the
//! payment form, posting the pre-checkout query and, if the bot agrees, the payment to the webhook.
//!
//! Parameters are read the ways Telegram reads them: JSON, a URL-encoded form, or
//! `multipart/form-data`, which teloxide uses for `setWebhook` because it may carry a certificate.
//! The updates Telegram sends the other way are built in [`crate::telegram_updates`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json, Path, Query};
use poem::{EndpointExt, Route, Server, get, handler, post};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// SentMessage is one message the fake accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    pub reply_markup: Option<Value>,
    /// The sender's `User-Agent`.
    pub user_agent: Option<String>,
    /// Milliseconds since the fake started.
    pub at_ms: u64,
}

/// Limits are the rates the fake enforces, as Telegram does: about 30 messages a second from one
/// bot, one a second to a chat, 20 a minute to a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub per_second: f64,
    /// Slack for clocks and network jitter: a gap may be this much shorter than the limit.
    pub tolerance: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_second: 30.0,
            tolerance: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    sent: Vec<SentMessage>,
    blocked: HashSet<i64>,
    // Scripted failures, served before anything else for that chat: (retry_after seconds).
    throttle_next: HashMap<i64, Vec<u64>>,
    last_to_chat: HashMap<i64, Instant>,
    // Send times within the last second, for the bot-wide limit.
    recent: Vec<Instant>,
    rate_limited: usize,
    next_message_id: i64,
    // The `update_id` of the next update posted to the webhook.
    next_update_id: i64,
    // Scripted answers by lowercased method name, served before anything else: (HTTP status).
    fail_next: HashMap<String, VecDeque<u16>>,
    invoice_links: Vec<Value>,
    // Stars payments the fake was told of, by charge id: (user id, refunded).
    star_payments: HashMap<String, (i64, bool)>,
    star_refunds: Vec<(i64, String)>,
    webhook: Option<Value>,
    // The last failed delivery to the webhook: (Unix time, Telegram's description).
    webhook_error: Option<(u64, String)>,
}

#[derive(Debug)]
struct Shared {
    token: String,
    limits: Limits,
    started: Instant,
    state: Mutex<State>,
}

/// FakeTelegram is a running fake Bot API; it stops when dropped.
#[derive(Debug)]
pub struct FakeTelegram {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTelegram {
    /// Starts a fake for the bot with `token` on a free loopback port.
    pub async fn start(token: &str, limits: Limits) -> FakeTelegram {
        Self::start_on("127.0.0.1:0", token, limits)
            .await
            .expect("starting the fake Bot API")
    }

    /// Starts a fake on `addr`.
    pub async fn start_on(addr: &str, token: &str, limits: Limits) -> std::io::Result<FakeTelegram> {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            limits,
            started: Instant::now(),
            state: Mutex::new(State {
                next_message_id: 1,
                // Counted on from the start time, as Telegram's ids only grow, so that a run on a
                // database an earlier run used does not repeat update ids it stored.
                next_update_id: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as i64),
                ..State::default()
            }),
        });
        let acceptor = TcpListener::bind(addr).into_acceptor().await?;
        let port = acceptor.local_addr()[0].as_socket_addr().expect("a TCP address").port();
        let app = Route::new()
            .at("/:bot/:method", post(bot_method))
            .at("/sandbox/messages", get(list_messages))
            .at("/sandbox/invoice_links", get(list_invoice_links))
            .at("/sandbox/webhook", get(show_webhook))
            .at("/sandbox/pay/:slug", get(pay_invoice))
            .data(shared.clone());
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Ok(FakeTelegram {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            server,
        })
    }

    /// The base URL to configure as the Bot API's (`TELEGRAM_API_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.shared.state.lock().unwrap().sent.clone()
    }

    /// The texts of the messages accepted for `chat_id`, in arrival order.
    pub fn texts_to(&self, chat_id: i64) -> Vec<String> {
        let state = self.shared.state.lock().unwrap();
        state
            .sent
            .iter()
            .filter(|m| m.chat_id == chat_id)
            .map(|m| m.text.clone())
            .collect()
    }

    /// How many requests were refused with 429 because they broke a limit (not scripted ones).
    pub fn rate_limited(&self) -> usize {
        self.shared.state.lock().unwrap().rate_limited
    }

    /// From now on `chat_id` has blocked the bot: sends to it get 403.
    pub fn block(&self, chat_id: i64) {
        self.shared.state.lock().unwrap().blocked.insert(chat_id);
    }

    /// The next send to `chat_id` gets a 429 asking to retry after `seconds`.
    pub fn throttle_next(&self, chat_id: i64, seconds: u64) {
        self.shared
            .state
            .lock()
            .unwrap()
            .throttle_next
            .entry(chat_id)
            .or_default()
            .push(seconds);
    }

    /// The next `count` calls of `method` (any Bot API method, in any case) get `status` in
    /// Telegram's envelope, e.g. 500 `Internal Server Error`, or 429 asking to retry after 1 s.
    pub fn fail_next(&self, method: &str, status: u16, count: usize) {
        let mut state = self.shared.state.lock().unwrap();
        let queue = state.fail_next.entry(method.to_ascii_lowercase()).or_default();
        queue.extend(std::iter::repeat_n(status, count));
    }

    /// Every invoice link created so far: the parameters it was asked with (`prices` and
    /// `subscription_period` decoded however they came) and, under `link`, the link returned.
    pub fn invoice_links(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().invoice_links.clone()
    }

    /// Tells the fake that `user_id` paid, with `charge_id` as the payment's
    /// `telegram_payment_charge_id`, so that it can be refunded.
    pub fn record_star_payment(&self, user_id: i64, charge_id: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .star_payments
            .insert(charge_id.to_string(), (user_id, false));
    }

    /// Every refund made so far: (user id, charge id).
    pub fn star_refunds(&self) -> Vec<(i64, String)> {
        self.shared.state.lock().unwrap().star_refunds.clone()
    }

    /// The webhook as last set (`url`, `secret_token`, `allowed_updates`,
    /// `drop_pending_updates`), or `None` when none is.
    pub fn webhook(&self) -> Option<Value> {
        self.shared.state.lock().unwrap().webhook.clone()
    }

    /// From now on `getWebhookInfo` reports that the last delivery failed with `message` (as in
    /// Telegram's `Wrong response from the webhook: 500 Internal Server Error`).
    pub fn set_webhook_error(&self, message: &str) {
        self.shared.state.lock().unwrap().webhook_error = Some((unix_now(), message.to_string()));
    }
}

fn error(code: u16, description: &str, retry_after: Option<u64>) -> poem::Response {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(secs) = retry_after {
        body["parameters"] = json!({"retry_after": secs});
    }
    poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(code).expect("a valid status"))
        .content_type("application/json")
        .body(body.to_string())
}

fn ok(result: Value) -> poem::Response {
    poem::Response::builder()
        .content_type("application/json")
        .body(json!({"ok": true, "result": result}).to_string())
}

/// The description Telegram gives with each status, for scripted failures.
fn scripted(status: u16) -> poem::Response {
    let description = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests: retry after 1",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    error(status, description, (status == 429).then_some(1))
}

#[handler]
fn bot_method(
    Path((bot, method)): Path<(String, String)>,
    headers: &poem::http::HeaderMap,
    body: Vec<u8>,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return error(401, "Unauthorized", None);
    }
    // Telegram's method names are case-insensitive.
    let method = method.to_ascii_lowercase();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(params) = Params::parse(content_type, &body) else {
        // The fake's own wording; Telegram's depends on what was wrong with the body.
        return error(400, "Bad Request: can't parse request parameters", None);
    };
    let scripted_status = {
        let mut state = shared.state.lock().unwrap();
        state.fail_next.get_mut(&method).and_then(VecDeque::pop_front)
    };
    if let Some(status) = scripted_status {
        return scripted(status);
    }
    match method.as_str() {
        "sendmessage" => {
            let user_agent = headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            send_message(&shared, &params, user_agent)
        }
        "createinvoicelink" => create_invoice_link(&shared, &params),
        "refundstarpayment" => refund_star_payment(&shared, &params),
        "setwebhook" => set_webhook(&shared, &params),
        "getwebhookinfo" => get_webhook_info(&shared),
        _ => error(404, "Not Found: method not found", None),
    }
}

fn send_message(shared: &Shared, params: &Params, user_agent: Option<String>) -> poem::Response {
    let Some(chat_id) = params.int("chat_id") else {
        return error(400, "Bad Request: chat not found", None);
    };
    let Some(text) = params.str("text").filter(|t| !t.is_empty()) else {
        return error(400, "Bad Request: message text is empty", None);
    };
    let now = Instant::now();
    let mut state = shared.state.lock().unwrap();
    if let Some(seconds) = state
        .throttle_next
        .get_mut(&chat_id)
        .and_then(|q| (!q.is_empty()).then(|| q.remove(0)))
    {
        return error(429, &format!("Too Many Requests: retry after {seconds}"), Some(seconds));
    }
    if state.blocked.contains(&chat_id) {
        return error(403, "Forbidden: bot was blocked by the user", None);
    }
    let chat_gap = if chat_id < 0 {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(1)
    };
    let tolerance = shared.limits.tolerance;
    let too_soon_for_chat = state
        .last_to_chat
        .get(&chat_id)
        .is_some_and(|last| now.duration_since(*last) + tolerance < chat_gap);
    state
        .recent
        .retain(|t| now.duration_since(*t) < Duration::from_secs(1) - tolerance);
    let too_many_for_bot = state.recent.len() as f64 >= shared.limits.per_second.ceil();
    if too_soon_for_chat || too_many_for_bot {
        state.rate_limited += 1;
        return error(429, "Too Many Requests: retry after 1", Some(1));
    }
    state.last_to_chat.insert(chat_id, now);
    state.recent.push(now);
    let message_id = state.next_message_id;
    state.next_message_id += 1;
    state.sent.push(SentMessage {
        message_id,
        chat_id,
        text: text.to_string(),
        parse_mode: params.str("parse_mode").map(str::to_string),
        reply_markup: params.json("reply_markup"),
        user_agent,
        at_ms: now.duration_since(shared.started).as_millis() as u64,
    });
    let date = unix_now();
    let chat = if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": "Sandbox"})
    } else {
        json!({"id": chat_id, "type": "supergroup", "title": "Sandbox group"})
    };
    ok(json!({"message_id": message_id, "date": date, "chat": chat, "text": text}))
}

#[handler]
fn list_messages(shared: Data<&Arc<Shared>>) -> Json<Vec<SentMessage>> {
    Json(shared.state.lock().unwrap().sent.clone())
}

#[handler]
fn list_invoice_links(shared: Data<&Arc<Shared>>) -> Json<Vec<Value>> {
    Json(shared.state.lock().unwrap().invoice_links.clone())
}

#[handler]
fn show_webhook(shared: Data<&Arc<Shared>>) -> Json<Option<Value>> {
    Json(shared.state.lock().unwrap().webhook.clone())
}

/// The only subscription period Telegram accepts: 30 days.
const SUBSCRIPTION_PERIOD: i64 = 2_592_000;
/// The most Stars one period of a subscription may cost.
const MAX_SUBSCRIPTION_STARS: i64 = 10_000;
/// The most Stars a one-off invoice may ask for.
const MAX_ONE_OFF_STARS: i64 = 100_000;

/// Checks a Stars invoice as Telegram does (the fake knows no payment providers, so other
/// currencies are refused), records it and answers with a `https://t.me/$…` link.
fn create_invoice_link(shared: &Shared, params: &Params) -> poem::Response {
    if params.str("currency") != Some("XTR") {
        return error(400, "Bad Request: CURRENCY_INVALID", None);
    }
    let prices = params
        .json("prices")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default();
    match prices.len() {
        0 => return error(400, "Bad Request: there must be at least one price", None),
        1 => {}
        // A Stars invoice has exactly one price.
        _ => return error(400, "Bad Request: STARS_INVOICE_INVALID", None),
    }
    let amount = prices[0]["amount"].as_i64().unwrap_or(0);
    if amount <= 0 {
        return error(400, "Bad Request: total price must be positive", None);
    }
    let payload_len = params.str("payload").map_or(0, str::len);
    if !(1..=128).contains(&payload_len) {
        return error(400, "Bad Request: INVOICE_PAYLOAD_INVALID", None);
    }
    let period = match params.0.get("subscription_period") {
        None => None,
        Some(_) => match params.int("subscription_period") {
            Some(SUBSCRIPTION_PERIOD) => Some(SUBSCRIPTION_PERIOD),
            _ => return error(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID", None),
        },
    };
    if period.is_some() && amount > MAX_SUBSCRIPTION_STARS {
        return error(400, "Bad Request: SUBSCRIPTION_AMOUNT_INVALID", None);
    }
    if amount > MAX_ONE_OFF_STARS {
        return error(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID", None);
    }
    let link = format!("https://t.me/${}", uuid::Uuid::new_v4().simple());
    let mut record = params.0.clone();
    record.insert("prices".into(), Value::Array(prices));
    if let Some(seconds) = period {
        record.insert("subscription_period".into(), json!(seconds));
    }
    record.insert("link".into(), json!(link));
    shared.state.lock().unwrap().invoice_links.push(Value::Object(record));
    ok(json!(link))
}

/// Refunds a payment the fake was told of ([`FakeTelegram::record_star_payment`]), once.
fn refund_star_payment(shared: &Shared, params: &Params) -> poem::Response {
    let Some(user_id) = params.int("user_id") else {
        return error(400, "Bad Request: USER_ID_INVALID", None);
    };
    let charge_id = params.str("telegram_payment_charge_id").unwrap_or_default();
    if charge_id.is_empty() {
        return error(400, "Bad Request: CHARGE_ID_EMPTY", None);
    }
    let mut state = shared.state.lock().unwrap();
    match state.star_payments.get_mut(charge_id) {
        // Telegram does not say whether the charge is unknown or another user's.
        None => error(400, "Bad Request: CHARGE_ID_INVALID", None),
        Some((payer, _)) if *payer != user_id => error(400, "Bad Request: CHARGE_ID_INVALID", None),
        Some((_, true)) => error(400, "Bad Request: CHARGE_ALREADY_REFUNDED", None),
        Some((_, refunded)) => {
            *refunded = true;
            state.star_refunds.push((user_id, charge_id.to_string()));
            ok(json!(true))
        }
    }
}

/// Records the webhook. An empty `url` removes it, as on Telegram. Unlike Telegram, plain
/// `http` is accepted, so that the local run can register a loopback address.
fn set_webhook(shared: &Shared, params: &Params) -> poem::Response {
    let url = params.str("url").unwrap_or_default();
    let mut state = shared.state.lock().unwrap();
    if url.is_empty() {
        state.webhook = None;
        state.webhook_error = None;
        return ok(json!(true));
    }
    let scheme_ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
    if !scheme_ok {
        return error(
            400,
            "Bad Request: bad webhook: HTTPS url must be provided for webhook",
            None,
        );
    }
    let secret_token = params.str("secret_token");
    let secret_ok = secret_token.is_none_or(|t| {
        (1..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !secret_ok {
        return error(400, "Bad Request: secret token contains unallowed characters", None);
    }
    // Without `allowed_updates` Telegram keeps the previous list.
    let allowed_updates = params
        .json("allowed_updates")
        .or_else(|| state.webhook.as_ref().map(|w| w["allowed_updates"].clone()))
        .unwrap_or(Value::Null);
    state.webhook = Some(json!({
        "url": url,
        "secret_token": secret_token,
        "allowed_updates": allowed_updates,
        "drop_pending_updates": params.bool("drop_pending_updates").unwrap_or(false),
    }));
    state.webhook_error = None;
    ok(json!(true))
}

/// A `WebhookInfo` with every field Telegram always sends (and teloxide requires).
fn get_webhook_info(shared: &Shared) -> poem::Response {
    let state = shared.state.lock().unwrap();
    let Some(webhook) = &state.webhook else {
        return ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}));
    };
    let mut info = json!({
        "url": webhook["url"],
        "has_custom_certificate": false,
        "pending_update_count": 0,
        "max_connections": 40,
    });
    if webhook["allowed_updates"].is_array() {
        info["allowed_updates"] = webhook["allowed_updates"].clone();
    }
    if let Some((date, message)) = &state.webhook_error {
        info["last_error_date"] = json!(date);
        info["last_error_message"] = json!(message);
    }
    ok(info)
}

/// Whom an invoice is paid by when `/sandbox/pay` is not told (the local run's user).
const DEFAULT_PAYER: i64 = 42;

/// How long Telegram waits for the answer to a pre-checkout query before it cancels the payment.
const PRE_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Paying an invoice link, for the local run and tests, where nobody can pay in Telegram:
/// `user_id` (default [`DEFAULT_PAYER`]) confirms the payment form, Telegram posts a
/// `pre_checkout_query` to the webhook, and only if the bot answers it with `ok: true` takes the
/// Stars and posts the `successful_payment` (of a subscription's first period when the invoice
/// has one). Answers in plain text what happened.
#[handler]
async fn pay_invoice(
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    let user_id = match query.get("user_id").map(|u| u.trim().parse::<i64>()) {
        None => DEFAULT_PAYER,
        Some(Ok(id)) if id > 0 => id,
        Some(_) => return page(400, "user_id must be a Telegram user id (a positive integer)".into()),
    };
    // Tolerates the `$` of the link being pasted with the slug.
    let link = format!("https://t.me/${}", slug.trim_start_matches('$'));
    let (invoice, webhook) = {
        let state = shared.state.lock().unwrap();
        let invoice = state.invoice_links.iter().find(|i| i["link"] == link.as_str()).cloned();
        (invoice, state.webhook.clone())
    };
    let Some(invoice) = invoice else {
        return page(404, format!("No such invoice link: {link}"));
    };
    let Some(webhook) = webhook else {
        return page(409, "no webhook set: run worker telegram set-webhook".into());
    };
    let url = webhook["url"].as_str().unwrap_or_default().to_string();
    let secret = webhook["secret_token"].as_str().map(str::to_string);
    let payload = invoice["payload"].as_str().unwrap_or_default();
    let amount = invoice["prices"][0]["amount"].as_u64().unwrap_or(0) as u32;
    let currency = invoice["currency"].as_str().unwrap_or("XTR");
    let client = reqwest::Client::builder()
        .timeout(PRE_CHECKOUT_TIMEOUT)
        .build()
        .expect("a reqwest client");

    let query_id = uuid::Uuid::new_v4().as_u64_pair().0.to_string();
    let asked = crate::telegram_updates::pre_checkout_query(
        shared.next_update_id(),
        &query_id,
        user_id,
        payload,
        currency,
        amount,
    );
    let answer = match deliver(&shared, &client, &url, secret.as_deref(), &asked).await {
        Ok(body) => body,
        Err(why) => {
            return page(
                502,
                format!("Not paid: the pre-checkout query was not delivered ({why})."),
            );
        }
    };
    let answered = answer["method"] == "answerPreCheckoutQuery" && answer["pre_checkout_query_id"] == query_id.as_str();
    if !answered {
        return page(
            502,
            format!(
                "Not paid: the bot did not answer the pre-checkout query (its response: {answer}), so Telegram cancels the payment."
            ),
        );
    }
    if answer["ok"] != true {
        let reason = answer["error_message"].as_str().unwrap_or("no error_message");
        return page(402, format!("Not paid: the bot refused the payment: {reason}"));
    }

    let charge_id = format!("stx{}", uuid::Uuid::new_v4().simple());
    shared
        .state
        .lock()
        .unwrap()
        .star_payments
        .insert(charge_id.clone(), (user_id, false));
    let recurring = invoice["subscription_period"]
        .as_i64()
        .map(|period| crate::telegram_updates::Recurring {
            expiration: unix_now() as i64 + period,
            is_first: true,
        });
    let paid = crate::telegram_updates::successful_payment(
        shared.next_update_id(),
        user_id,
        payload,
        amount,
        &charge_id,
        recurring,
    );
    if let Err(why) = deliver(&shared, &client, &url, secret.as_deref(), &paid).await {
        return page(
            502,
            format!("Paid (charge {charge_id}), but the successful_payment update was not delivered ({why})."),
        );
    }
    page(
        200,
        format!("Paid: {amount} {currency} for {payload} by user {user_id}, charge {charge_id}."),
    )
}

/// Posts `update` to the webhook at `url` and returns the JSON it answered with (`null` for an
/// empty body). A failure is recorded for `getWebhookInfo`, in Telegram's words.
async fn deliver(
    shared: &Shared,
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    update: &Value,
) -> Result<Value, String> {
    let mut request = client.post(url).json(update);
    if let Some(secret) = secret {
        request = request.header(crate::telegram_updates::SECRET_HEADER, secret);
    }
    let outcome = match request.send().await {
        Err(e) => Err(format!("Connection failed: {e}")),
        Ok(response) if !response.status().is_success() => {
            Err(format!("Wrong response from the webhook: {}", response.status()))
        }
        Ok(response) => match response.bytes().await {
            Err(e) => Err(format!("Connection failed: {e}")),
            Ok(body) if body.is_empty() => Ok(Value::Null),
            Ok(body) => serde_json::from_slice(&body).map_err(|_| "Wrong response from the webhook: not JSON".into()),
        },
    };
    if let Err(why) = &outcome {
        shared.state.lock().unwrap().webhook_error = Some((unix_now(), why.clone()));
    }
    outcome
}

fn page(status: u16, text: String) -> poem::Response {
    poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(status).expect("a valid status"))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{text}\n"))
}

impl Shared {
    fn next_update_id(&self) -> i64 {
        let mut state = self.state.lock().unwrap();
        let id = state.next_update_id;
        state.next_update_id += 1;
        id
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Params are a request's parameters however they came. In a form every value is text, numbers
/// and booleans included, and arrays and objects are JSON inside it; the getters read both.
#[derive(Debug, Default)]
struct Params(Map<String, Value>);

impl Params {
    /// The parameters of a body of `content_type`, or `None` when it cannot be read.
    fn parse(content_type: &str, body: &[u8]) -> Option<Params> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if body.is_empty() {
            return Some(Params::default());
        }
        match media_type {
            "application/json" => serde_json::from_slice(body).ok().map(Params),
            "application/x-www-form-urlencoded" => {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
                Some(Params(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
            }
            "multipart/form-data" => multipart_fields(content_type, body).map(Params),
            _ => None,
        }
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.as_str()
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name)? {
            Value::String(text) => text.trim().parse().ok(),
            value => value.as_i64(),
        }
    }

    fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            Value::String(text) => text.parse().ok(),
            value => value.as_bool(),
        }
    }

    fn json(&self, name: &str) -> Option<Value> {
        match self.0.get(name)? {
            Value::String(text) => serde_json::from_str(text).ok(),
            value => Some(value.clone()),
        }
    }
}

/// The fields of a `multipart/form-data` body, as text (a file's bytes too, lossily: the fake
/// has no use for certificates).
fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Map<String, Value>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let body = String::from_utf8_lossy(body);
    let mut fields = Map::new();
    for part in body.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (headers, value) = part.strip_prefix("\r\n")?.split_once("\r\n\r\n")?;
        let name = headers
            .split("\r\n")
            .find(|h| h.to_ascii_lowercase().starts_with("content-disposition:"))?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))?
            .trim_matches('"');
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_string(), Value::String(value.to_string()));
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123:unit";

    async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    fn post(fake: &FakeTelegram, token: &str, method: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().post(format!("{}/bot{token}/{method}", fake.url()))
    }

    #[test]
    fn multipart_bodies_are_read_field_by_field() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\nhttps://example.com/hook\r\n\
                    --XyZ\r\ncontent-disposition: form-data; name=\"allowed_updates\"\r\n\r\n[\"message\"]\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"drop_pending_updates\"\r\n\r\nfalse\r\n--XyZ--\r\n";
        let params = Params::parse("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(params.str("url"), Some("https://example.com/hook"));
        assert_eq!(params.json("allowed_updates"), Some(json!(["message"])));
        assert_eq!(params.bool("drop_pending_updates"), Some(false));
        assert_eq!(params.0.len(), 3);
    }

    #[tokio::test]
    async fn form_parameters_are_read_like_json_ones() {
        let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
        let form = [
            ("title", "Pro"),
            ("description", "Pro for 30 days"),
            ("payload", "pro"),
            ("currency", "XTR"),
            ("prices", r#"[{"label":"Pro","amount":250}]"#),
            ("subscription_period", "2592000"),
        ];

        let (status, body) = call(post(&fake, TOKEN, "createInvoiceLink").form(&form)).await;

        assert_eq!(status, 200, "{body}");
        let link = &fake.invoice_links()[0];
        assert_eq!(link["prices"][0]["amount"], 250);
        assert_eq!(link["subscription_period"], SUBSCRIPTION_PERIOD);
        assert_eq!(body["result"], link["link"]);
    }

    #[tokio::test]
    async fn a_scripted_failure_is_served_the_given_times_then_the_method_works() {
        let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
        fake.fail_next("getWebhookInfo", 500, 2);

        for _ in 0..2 {
            let (status, body) = call(post(&fake, TOKEN, "getwebhookinfo").json(&json!({}))).await;
            assert_eq!(status, 500);
            assert_eq!(
                body,
                json!({"ok": false, "error_code": 500, "description": "Internal Server Error"})
            );
        }
        let (status, body) = call(post(&fake, TOKEN, "getWebhookInfo").json(&json!({}))).await;
        assert_eq!((status, &body["result"]["url"]), (200, &json!("")));
    }

    /// The updates a stub webhook got, each with its secret token header.
    type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

    /// A bot's webhook that records the updates it gets and refuses the pre-checkout queries of
    /// user 13.
    async fn stub_webhook() -> (String, Received) {
        #[handler]
        fn hook(headers: &poem::http::HeaderMap, Json(update): Json<Value>, got: Data<&Received>) -> poem::Response {
            let secret = headers
                .get(crate::telegram_updates::SECRET_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            got.lock().unwrap().push((secret, update.clone()));
            let Some(query) = update.get("pre_checkout_query") else {
                return poem::Response::builder()
                    .status(poem::http::StatusCode::NO_CONTENT)
                    .finish();
            };
            let mut answer =
                json!({"method": "answerPreCheckoutQuery", "pre_checkout_query_id": query["id"], "ok": true});
            if query["from"]["id"] == 13 {
                answer["ok"] = json!(false);
                answer["error_message"] = json!("Banned.");
            }
            poem::Response::builder()
                .content_type("application/json")
                .body(answer.to_string())
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let app = Route::new().at("/hook", poem::post(hook)).data(got.clone());
        tokio::spawn(async move { Server::new_with_acceptor(acceptor).run(app).await });
        (format!("http://127.0.0.1:{port}/hook"), got)
    }

    #[tokio::test]
    async fn paying_a_link_asks_the_webhook_first_and_pays_only_if_it_agrees() {
        let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
        let invoice = json!({"title": "Pro", "description": "Pro", "payload": "pro", "currency": "XTR",
            "prices": [{"label": "Pro", "amount": 250}], "subscription_period": SUBSCRIPTION_PERIOD});
        let (_, body) = call(post(&fake, TOKEN, "createInvoiceLink").json(&invoice)).await;
        let slug = body["result"]
            .as_str()
            .unwrap()
            .strip_prefix("https://t.me/$")
            .unwrap()
            .to_string();
        let pay = |path: String| {
            let url = format!("{}/sandbox/pay/{path}", fake.url());
            async move {
                let response = reqwest::get(url).await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };

        assert_eq!(pay("nope".into()).await.0, 404);
        let (status, text) = pay(slug.clone()).await;
        assert_eq!(
            (status, text.as_str()),
            (409, "no webhook set: run worker telegram set-webhook\n")
        );

        let (hook, got) = stub_webhook().await;
        let webhook = json!({"url": hook, "secret_token": "s3cret"});
        call(post(&fake, TOKEN, "setWebhook").json(&webhook)).await;
        let (status, text) = pay(format!("{slug}?user_id=13")).await;
        assert_eq!(status, 402, "{text}");
        assert!(text.contains("refused") && text.contains("Banned."), "{text}");
        assert_eq!(got.lock().unwrap().len(), 1, "nothing more after a refusal");

        let (status, text) = pay(slug).await;
        assert_eq!(status, 200, "{text}");
        let got = got.lock().unwrap().clone();
        let ids: Vec<i64> = got.iter().map(|(_, u)| u["update_id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [ids[0], ids[0] + 1, ids[0] + 2], "fresh, growing update ids");
        assert!(got.iter().all(|(secret, _)| secret.as_deref() == Some("s3cret")));
        let query = &got[1].1["pre_checkout_query"];
        assert_eq!(
            (&query["from"]["id"], &query["invoice_payload"]),
            (&json!(DEFAULT_PAYER), &json!("pro"))
        );
        assert_eq!(
            (&query["currency"], &query["total_amount"]),
            (&json!("XTR"), &json!(250))
        );
        let paid = &got[2].1["message"]["successful_payment"];
        let charge = paid["telegram_payment_charge_id"].as_str().unwrap();
        assert!(charge.starts_with("stx") && text.contains(charge), "{text}");
        assert_eq!(
            (&paid["total_amount"], &paid["is_first_recurring"]),
            (&json!(250), &json!(true))
        );
        let expires_in = paid["subscription_expiration_date"].as_i64().unwrap() - unix_now() as i64;
        assert!((SUBSCRIPTION_PERIOD - 60..=SUBSCRIPTION_PERIOD).contains(&expires_in));
        // The charge is one the fake can refund.
        let refund = json!({"user_id": DEFAULT_PAYER, "telegram_payment_charge_id": charge});
        let (status, _) = call(post(&fake, TOKEN, "refundStarPayment").json(&refund)).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn the_payment_methods_check_the_token() {
        let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
        fake.record_star_payment(5, "charge-1");
        let refund = json!({"user_id": 5, "telegram_payment_charge_id": "charge-1"});

        let (status, body) = call(post(&fake, "123:other", "refundStarPayment").json(&refund)).await;

        assert_eq!((status, &body["description"]), (401, &json!("Unauthorized")));
        assert!(fake.star_refunds().is_empty());
    }
}
