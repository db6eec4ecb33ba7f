//! `sendMessage`: the one method that sends, with Telegram's per-chat and per-bot limits.

#[allow(unused_imports)]
use super::*;

pub(super) fn send_message(shared: &Shared, params: &Params, user_agent: Option<String>) -> poem::Response {
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
