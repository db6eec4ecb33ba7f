//! A fake Telegram Bot API on loopback. It speaks the real protocol (`POST /bot<token>/<method>`,
//! `{"ok": …}` envelopes, Telegram's error texts), keeps Telegram's limits the way Telegram does
//! (a 429 with `retry_after` when a chat or the bot goes too fast), and records what it was sent
//! so tests and the local run can see it at `GET /sandbox/messages`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json, Path};
use poem::{EndpointExt, Route, Server, get, handler, post};
use serde::Serialize;
use serde_json::{Value, json};

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
                ..State::default()
            }),
        });
        let acceptor = TcpListener::bind(addr).into_acceptor().await?;
        let port = acceptor.local_addr()[0].as_socket_addr().expect("a TCP address").port();
        let app = Route::new()
            .at("/:bot/:method", post(bot_method))
            .at("/sandbox/messages", get(list_messages))
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

#[handler]
fn bot_method(
    Path((bot, method)): Path<(String, String)>,
    headers: &poem::http::HeaderMap,
    body: Json<Value>,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return error(401, "Unauthorized", None);
    }
    match method.to_ascii_lowercase().as_str() {
        "sendmessage" => {
            let user_agent = headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            send_message(&shared, &body, user_agent)
        }
        _ => error(404, "Not Found: method not found", None),
    }
}

fn send_message(shared: &Shared, body: &Value, user_agent: Option<String>) -> poem::Response {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return error(400, "Bad Request: chat not found", None);
    };
    let Some(text) = body["text"].as_str().filter(|t| !t.is_empty()) else {
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
        parse_mode: body["parse_mode"].as_str().map(str::to_string),
        reply_markup: body.get("reply_markup").cloned(),
        user_agent,
        at_ms: now.duration_since(shared.started).as_millis() as u64,
    });
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
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
