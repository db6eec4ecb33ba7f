//! `sendMessage` and `sendInvoice`: the methods that send, with Telegram's per-chat and per-bot
//! limits.

#[allow(unused_imports)]
use super::*;

pub(super) fn send_message(shared: &Shared, params: &Params, user_agent: Option<String>) -> poem::Response {
    let Some(chat_id) = params.int("chat_id") else {
        return error(400, "Bad Request: chat not found", None);
    };
    let Some(text) = params.str("text").filter(|t| !t.is_empty()) else {
        return error(400, "Bad Request: message text is empty", None);
    };
    send(shared, params, chat_id, text, None, user_agent)
}

/// An invoice in Stars, checked as Telegram checks one; it is recorded as a message whose text
/// is its description and, like an invoice link, can be paid at `GET /sandbox/pay/<slug>`.
pub(super) fn send_invoice(shared: &Shared, params: &Params, user_agent: Option<String>) -> poem::Response {
    let Some(chat_id) = params.int("chat_id") else {
        return error(400, "Bad Request: chat not found", None);
    };
    let title_len = params.str("title").map_or(0, |t| t.chars().count());
    if !(1..=32).contains(&title_len) {
        return error(400, "Bad Request: INVOICE_TITLE_INVALID", None);
    }
    let Some(description) = params
        .str("description")
        .filter(|d| (1..=255).contains(&d.chars().count()))
    else {
        return error(400, "Bad Request: INVOICE_DESCRIPTION_INVALID", None);
    };
    if params.0.contains_key("subscription_period") {
        // Only invoice links sell subscriptions.
        return error(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID", None);
    }
    let invoice = match check_stars_invoice(params) {
        Ok(invoice) => invoice,
        Err(refusal) => return error(400, refusal, None),
    };
    send(shared, params, chat_id, description, Some(invoice), user_agent)
}

/// Sends `text` (or an invoice) to `chat_id` if Telegram's limits allow it now.
fn send(
    shared: &Shared,
    params: &Params,
    chat_id: i64,
    text: &str,
    invoice: Option<Map<String, Value>>,
    user_agent: Option<String>,
) -> poem::Response {
    let now = Instant::now();
    let mut state = shared.state.lock().unwrap();
    if let Some(seconds) = state
        .throttle_next
        .get_mut(&chat_id)
        .and_then(|q| (!q.is_empty()).then(|| q.remove(0)))
    {
        state.held_until.insert(chat_id, now + Duration::from_secs(seconds));
        return error(429, &format!("Too Many Requests: retry after {seconds}"), Some(seconds));
    }
    if let Some(wait) = state
        .held_until
        .get(&chat_id)
        .map(|until| until.saturating_duration_since(now))
        .filter(|wait| !wait.is_zero())
    {
        state.rate_limited += 1;
        let seconds = wait.as_secs_f64().ceil() as u64;
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
    let invoice = invoice.map(|mut invoice| {
        let link = format!("https://t.me/${}", uuid::Uuid::new_v4().simple());
        invoice.insert("link".into(), json!(link));
        state.invoice_links.push(Value::Object(invoice.clone()));
        Value::Object(invoice)
    });
    state.sent.push(SentMessage {
        message_id,
        chat_id,
        text: text.to_string(),
        parse_mode: params.str("parse_mode").map(str::to_string),
        reply_markup: params.json("reply_markup"),
        invoice,
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
