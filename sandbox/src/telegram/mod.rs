//! A fake Telegram Bot API on loopback. It speaks the real protocol (`POST /bot<token>/<method>`,
//! `{"ok": …}` envelopes, Telegram's error texts), keeps Telegram's limits the way Telegram does
//! (a 429 with `retry_after` when a chat or the bot goes too fast), and records what it was sent
//! so tests and the local run can see it at `GET /sandbox/messages`.
//!
//! Besides `sendMessage` it serves what paying in Telegram Stars needs: `sendInvoice` and
//! `createInvoiceLink` (checked as Telegram checks a Stars invoice; links at
//! `GET /sandbox/invoice_links`), `refundStarPayment` (of payments it was told of), and
//! `setWebhook` / `getWebhookInfo` (at `GET /sandbox/webhook`) and `setMyCommands`. Any method can
//! be made to fail on request ([`FakeTelegram::fail_next`]).
//!
//! A user talks to the bot through it as in Telegram: `POST /sandbox/write?user_id=&text=` posts
//! their message to the webhook, `POST /sandbox/press?user_id=&data=` their press of a button the
//! bot sent them ([`FakeTelegram::write`], [`FakeTelegram::press`]).
//!
//! Paying an invoice link is opening `GET /sandbox/pay/<slug>?user_id=<id>` (the slug is what
//! follows `https://t.me/$`): the fake then does what Telegram does once a user confirms the
//! payment form, posting the pre-checkout query and, if the bot agrees, the payment to the webhook.
//!
//! Parameters are read the ways Telegram reads them: JSON, a URL-encoded form, or
//! `multipart/form-data`, which teloxide uses for `setWebhook` because it may carry a certificate.
//! The updates Telegram sends the other way are built in [`crate::telegram_updates`].
//!
//! # Layout
//! - this module: the server, its state, the method dispatch and the `/sandbox/...` views.
//! - [`messages`]: `sendMessage`, `sendInvoice` and their limits.
//! - [`payments`]: Stars invoice links, refunds, and paying a link.
//! - [`webhook`]: `setWebhook`, `getWebhookInfo`, and posting updates.
//! - [`params`]: how a request's parameters are read.

mod chats;
mod messages;
mod params;
mod payments;
#[cfg(test)]
mod tests;
mod webhook;

#[allow(unused_imports)]
use chats::*;
#[allow(unused_imports)]
use messages::*;
#[allow(unused_imports)]
use params::*;
#[allow(unused_imports)]
use payments::*;
#[allow(unused_imports)]
use webhook::*;

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
    /// For an invoice (`sendInvoice`, whose description is `text`): its parameters, and under
    /// `link` the link that pays it at `GET /sandbox/pay/<slug>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice: Option<Value>,
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
    // Chats told to wait by a 429, until when: a send before then is refused again, as Telegram does.
    held_until: HashMap<i64, Instant>,
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
    // The bot's menu, as `setMyCommands` last set it.
    commands: Option<Value>,
    menu_button: Option<Value>,
    // Groups and channels by id.
    chats: HashMap<i64, FakeChat>,
    // The last failed delivery to the webhook: (Unix time, Telegram's description).
    webhook_error: Option<(u64, String)>,
}

#[derive(Debug)]
struct Shared {
    token: String,
    limits: Limits,
    started: Instant,
    state: Mutex<State>,
    // How long an accepted sendMessage waits before it is answered.
    answer_delay: Mutex<Duration>,
    // How long a call of a method (lowercase) waits before the fake acts on it.
    method_delays: Mutex<HashMap<String, Duration>>,
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
            answer_delay: Mutex::new(Duration::ZERO),
            method_delays: Mutex::new(HashMap::new()),
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
            .at("/sandbox/write", post(write_to_bot))
            .at("/sandbox/press", post(press_button))
            .at("/sandbox/join", post(join_chat))
            .at("/sandbox/request-join", post(ask_to_join))
            .at("/sandbox/chats", get(list_chats))
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

    /// The messages accepted for `chat_id`, in arrival order.
    pub fn messages_to(&self, chat_id: i64) -> Vec<SentMessage> {
        let state = self.shared.state.lock().unwrap();
        state.sent.iter().filter(|m| m.chat_id == chat_id).cloned().collect()
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

    /// How many requests were refused with 429 because they broke a limit or came while a chat
    /// was told to wait (not the scripted ones).
    pub fn rate_limited(&self) -> usize {
        self.shared.state.lock().unwrap().rate_limited
    }

    /// From now on `chat_id` has blocked the bot: sends to it get 403.
    pub fn block(&self, chat_id: i64) {
        self.shared.state.lock().unwrap().blocked.insert(chat_id);
    }

    /// From now on an accepted `sendMessage` is answered `delay` after it was accepted (and
    /// recorded as sent), as over a slow network: a worker killed in between never learns that its
    /// message went out.
    pub fn delay_answers(&self, delay: Duration) {
        *self.shared.answer_delay.lock().unwrap() = delay;
    }

    /// From now on a call of `method` waits `delay` before the fake acts on it and answers, as a
    /// slow Telegram would: what the bot does meanwhile races it.
    pub fn delay_method(&self, method: &str, delay: Duration) {
        let mut delays = self.shared.method_delays.lock().unwrap();
        delays.insert(method.to_ascii_lowercase(), delay);
    }

    /// The next send to `chat_id` gets a 429 asking to retry after `seconds`; a send to it before
    /// then is refused again and counted in [`FakeTelegram::rate_limited`].
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

    /// The bot's menu of commands as `setMyCommands` last set it (`[{"command", "description"}]`).
    pub fn commands(&self) -> Option<Value> {
        self.shared.state.lock().unwrap().commands.clone()
    }

    /// The bot's menu button as `setChatMenuButton` last set it (`{"type", "text", "web_app"}`).
    pub fn menu_button(&self) -> Option<Value> {
        self.shared.state.lock().unwrap().menu_button.clone()
    }

    /// `user_id` writes `text` to the bot in their private chat: the message is posted to the
    /// webhook. Returns what the webhook answered (`null` for nothing), or why it failed.
    pub async fn write(&self, user_id: i64, text: &str) -> Result<Value, String> {
        user_writes(&self.shared, user_id, text).await
    }

    /// `user_id` presses the button with callback data `data` under the latest of the bot's
    /// messages in their private chat that has one: the press is posted to the webhook. Fails
    /// when no message there has such a button.
    pub async fn press(&self, user_id: i64, data: &str) -> Result<Value, String> {
        user_presses(&self.shared, user_id, data).await
    }

    /// `user_id` opens the invite link `link`: joins its chat if the link allows it, and the
    /// `chat_member` update is posted to the webhook. Fails with Telegram's reason otherwise.
    pub async fn join(&self, user_id: i64, link: &str) -> Result<Value, String> {
        let update = join_by_link(&self.shared, user_id, link)?;
        post_to_webhook(&self.shared, &update).await
    }

    /// `user_id` asks to join `chat_id`: the `chat_join_request` is posted to the webhook.
    pub async fn request_join(&self, user_id: i64, chat_id: i64) -> Result<Value, String> {
        let update = request_to_join(&self.shared, user_id, chat_id)?;
        post_to_webhook(&self.shared, &update).await
    }

    /// The status of `user_id` in `chat_id` (`left` when never a member).
    pub fn status_in(&self, chat_id: i64, user_id: i64) -> String {
        let state = self.shared.state.lock().unwrap();
        let status = state.chats.get(&chat_id).and_then(|c| c.members.get(&user_id));
        status.cloned().unwrap_or_else(|| "left".into())
    }

    /// The users who are in `chat_id` now (members, restricted members and administrators).
    pub fn members(&self, chat_id: i64) -> Vec<i64> {
        let state = self.shared.state.lock().unwrap();
        let mut members: Vec<i64> = state
            .chats
            .get(&chat_id)
            .map(|c| {
                c.members
                    .iter()
                    .filter(|(_, s)| matches!(s.as_str(), "member" | "restricted" | "administrator" | "creator"))
                    .map(|(u, _)| *u)
                    .collect()
            })
            .unwrap_or_default();
        members.sort_unstable();
        members
    }

    /// Puts `user_id` in `chat_id` with `status` (`member`, `administrator` …) without telling the
    /// bot, as someone added before the bot administered the chat.
    pub fn put_member(&self, chat_id: i64, user_id: i64, status: &str) {
        let mut state = self.shared.state.lock().unwrap();
        let chat = state.chats.entry(chat_id).or_insert_with(|| FakeChat {
            bot_is_admin: true,
            ..FakeChat::default()
        });
        chat.members.insert(user_id, status.to_string());
    }

    /// The invite links made in `chat_id`: (link, revoked, users who joined by it).
    pub fn invite_links_of(&self, chat_id: i64) -> Vec<(String, bool, Vec<i64>)> {
        let state = self.shared.state.lock().unwrap();
        let links = state.chats.get(&chat_id).map(|c| c.links.clone()).unwrap_or_default();
        links.into_iter().map(|l| (l.link, l.revoked, l.joined)).collect()
    }

    /// From now on the bot is no administrator of `chat_id`: its link and member calls are refused.
    pub fn take_admin_rights(&self, chat_id: i64) {
        let mut state = self.shared.state.lock().unwrap();
        state.chats.entry(chat_id).or_default().bot_is_admin = false;
    }

    /// From now on the bot administers `chat_id` again.
    pub fn give_admin_rights(&self, chat_id: i64) {
        let mut state = self.shared.state.lock().unwrap();
        state.chats.entry(chat_id).or_default().bot_is_admin = true;
    }

    /// From now on `chat_id` does not exist: every call about it is refused.
    pub fn delete_chat(&self, chat_id: i64) {
        let mut state = self.shared.state.lock().unwrap();
        state.chats.entry(chat_id).or_default().deleted = true;
    }

    /// The buttons of the latest message to `chat_id`: (text, callback data or URL) by row.
    pub fn buttons_of_latest(&self, chat_id: i64) -> Vec<Vec<(String, String)>> {
        let state = self.shared.state.lock().unwrap();
        let Some(message) = state.sent.iter().rev().find(|m| m.chat_id == chat_id) else {
            return Vec::new();
        };
        buttons(message)
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
async fn bot_method(
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
    let delay = shared.method_delays.lock().unwrap().get(&method).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
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
            let answer = send_message(&shared, &params, user_agent);
            let delay = *shared.answer_delay.lock().unwrap();
            if answer.status().is_success() && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        }
        "sendinvoice" => {
            let user_agent = headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            send_invoice(&shared, &params, user_agent)
        }
        "createchatinvitelink" => create_chat_invite_link(&shared, &params),
        "revokechatinvitelink" => revoke_chat_invite_link(&shared, &params),
        // Telegram tells the bot of its own bans and unbans too, in order: the update is
        // delivered before the call is answered.
        "banchatmember" | "unbanchatmember" => {
            let (answer, update) = if method == "banchatmember" {
                ban_chat_member(&shared, &params)
            } else {
                unban_chat_member(&shared, &params)
            };
            if let Some(update) = update {
                let _ = post_to_webhook(&shared, &update).await;
            }
            answer
        }
        "getchatmember" => get_chat_member(&shared, &params),
        "declinechatjoinrequest" => match answer_join_request(&shared, &params, false) {
            Ok(_) => ok(json!(true)),
            Err(refusal) => error(400, refusal, None),
        },
        "approvechatjoinrequest" => match answer_join_request(&shared, &params, true) {
            Ok((chat_id, user_id)) => {
                // Telegram tells the bot of the new member, as of any join.
                let update = crate::telegram_updates::chat_member(
                    shared.next_update_id(),
                    chat_id,
                    user_id,
                    "left",
                    "member",
                    None,
                );
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = post_to_webhook(&shared, &update).await;
                });
                ok(json!(true))
            }
            Err(refusal) => error(400, refusal, None),
        },
        "setmycommands" => {
            let Some(commands) = params.json("commands").filter(Value::is_array) else {
                return error(400, "Bad Request: field \"commands\" must be an Array", None);
            };
            shared.state.lock().unwrap().commands = Some(commands);
            ok(json!(true))
        }
        "setchatmenubutton" => {
            let Some(button) = params.json("menu_button").filter(Value::is_object) else {
                return error(400, "Bad Request: field \"menu_button\" must be an Object", None);
            };
            shared.state.lock().unwrap().menu_button = Some(button);
            ok(json!(true))
        }
        "createinvoicelink" => create_invoice_link(&shared, &params),
        "refundstarpayment" => refund_star_payment(&shared, &params),
        "setwebhook" => set_webhook(&shared, &params),
        "getwebhookinfo" => get_webhook_info(&shared),
        _ => error(404, "Not Found: method not found", None),
    }
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

/// The inline buttons of `message`: (text, callback data or URL) by row.
fn buttons(message: &SentMessage) -> Vec<Vec<(String, String)>> {
    let rows = message
        .reply_markup
        .as_ref()
        .and_then(|m| m["inline_keyboard"].as_array().cloned())
        .unwrap_or_default();
    rows.iter()
        .map(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let action = b["callback_data"].as_str().or(b["url"].as_str()).unwrap_or_default();
                    (b["text"].as_str().unwrap_or_default().to_string(), action.to_string())
                })
                .collect()
        })
        .collect()
}

/// The webhook's URL and secret token, or why updates cannot be posted.
fn webhook_target(shared: &Shared) -> Result<(String, Option<String>), String> {
    let state = shared.state.lock().unwrap();
    let webhook = state
        .webhook
        .as_ref()
        .ok_or("no webhook set: run worker telegram set-webhook")?;
    Ok((
        webhook["url"].as_str().unwrap_or_default().to_string(),
        webhook["secret_token"].as_str().map(str::to_string),
    ))
}

async fn post_to_webhook(shared: &Shared, update: &Value) -> Result<Value, String> {
    let (url, secret) = webhook_target(shared)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    deliver(shared, &client, &url, secret.as_deref(), update).await
}

async fn user_writes(shared: &Shared, user_id: i64, text: &str) -> Result<Value, String> {
    let update = crate::telegram_updates::text_message(shared.next_update_id(), user_id, text);
    post_to_webhook(shared, &update).await
}

async fn user_presses(shared: &Shared, user_id: i64, data: &str) -> Result<Value, String> {
    let pressed = {
        let state = shared.state.lock().unwrap();
        state
            .sent
            .iter()
            .rev()
            .filter(|m| m.chat_id == user_id)
            .find(|m| buttons(m).iter().flatten().any(|(_, action)| action == data))
            .map(|m| m.message_id)
    };
    let Some(message_id) = pressed else {
        return Err(format!(
            "no message to {user_id} has a button with callback data {data:?}"
        ));
    };
    let update_id = shared.next_update_id();
    let mut update = crate::telegram_updates::callback_query(update_id, &update_id.to_string(), user_id, user_id, data);
    update["callback_query"]["message"]["message_id"] = json!(message_id);
    post_to_webhook(shared, &update).await
}

/// The `user_id` of a `/sandbox/…` request, if it is one.
fn sandbox_user(query: &HashMap<String, String>) -> Option<i64> {
    query
        .get("user_id")
        .and_then(|u| u.parse::<i64>().ok())
        .filter(|u| *u > 0)
}

/// `POST /sandbox/join?user_id=42&link=https://t.me/+…`: the user opens an invite link.
#[handler]
async fn join_chat(Query(query): Query<HashMap<String, String>>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let Some(user_id) = sandbox_user(&query) else {
        return page(400, "user_id must be a Telegram user id (a positive integer)".into());
    };
    // A `+` written unencoded in the query (as `curl ...&link=https://t.me/+abc` sends it) arrives
    // as a space; a link has none, so it is read back as the `+` it was.
    let link = query.get("link").map_or(String::new(), |l| l.replace(' ', "+"));
    let update = match join_by_link(&shared, user_id, &link) {
        Ok(update) => update,
        Err(why) => return page(409, format!("Not joined: {why}")),
    };
    match post_to_webhook(&shared, &update).await {
        Ok(_) => page(200, "Joined; the chat_member update was delivered.".into()),
        Err(why) => page(502, format!("Joined, but the update was not delivered: {why}")),
    }
}

/// `POST /sandbox/request-join?user_id=42&chat_id=-100…`: the user asks to join a chat.
#[handler]
async fn ask_to_join(Query(query): Query<HashMap<String, String>>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let Some(user_id) = sandbox_user(&query) else {
        return page(400, "user_id must be a Telegram user id (a positive integer)".into());
    };
    let Some(chat_id) = query
        .get("chat_id")
        .and_then(|c| c.parse::<i64>().ok())
        .filter(|c| *c < 0)
    else {
        return page(400, "chat_id must be a group or channel id (negative)".into());
    };
    let result = match request_to_join(&shared, user_id, chat_id) {
        Ok(update) => post_to_webhook(&shared, &update).await,
        Err(why) => Err(why),
    };
    match result {
        Ok(_) => page(200, "Asked; the chat_join_request was delivered.".into()),
        Err(why) => page(502, format!("Not asked: {why}")),
    }
}

/// `GET /sandbox/chats`: every chat's members and invite links.
#[handler]
fn list_chats(shared: Data<&Arc<Shared>>) -> Json<Value> {
    let state = shared.state.lock().unwrap();
    let chats: Map<String, Value> = state
        .chats
        .iter()
        .map(|(id, chat)| {
            let links: Vec<Value> = chat
                .links
                .iter()
                .map(|l| json!({"link": l.link, "revoked": l.revoked, "joined": l.joined}))
                .collect();
            (
                id.to_string(),
                json!({"members": chat.members, "links": links, "bot_is_admin": chat.bot_is_admin, "deleted": chat.deleted}),
            )
        })
        .collect();
    Json(Value::Object(chats))
}

/// `POST /sandbox/write?user_id=42&text=/start`: the user writes to the bot.
#[handler]
async fn write_to_bot(Query(query): Query<HashMap<String, String>>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let Some(user_id) = sandbox_user(&query) else {
        return page(400, "user_id must be a Telegram user id (a positive integer)".into());
    };
    let text = query.get("text").map_or("", String::as_str);
    match user_writes(&shared, user_id, text).await {
        Ok(answer) => page(200, format!("Delivered; the webhook answered {answer}.")),
        Err(why) => page(502, format!("Not delivered: {why}")),
    }
}

/// `POST /sandbox/press?user_id=42&data=plan:pro_monthly`: the user presses a button of the bot's.
#[handler]
async fn press_button(Query(query): Query<HashMap<String, String>>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let Some(user_id) = sandbox_user(&query) else {
        return page(400, "user_id must be a Telegram user id (a positive integer)".into());
    };
    let data = query.get("data").map_or("", String::as_str);
    match user_presses(&shared, user_id, data).await {
        Ok(answer) => page(200, format!("Pressed; the webhook answered {answer}.")),
        Err(why) => page(409, format!("Not pressed: {why}")),
    }
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
