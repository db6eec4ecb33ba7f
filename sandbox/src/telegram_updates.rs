//! Bot API updates as Telegram posts them to a webhook, for tests and the local run to deliver:
//! the pre-checkout query and the payment messages of a Stars purchase, a refund, a button press,
//! a `/start` deep link, plain text, and a kind the bot did not ask for.
//!
//! Shaped like Telegram's (<https://core.telegram.org/bots/api#update>): a user has `id`,
//! `is_bot`, `first_name`, `username` and `language_code`; a message has `message_id`, `from`,
//! `chat` and `date`; optional fields that would be false are left out, as Telegram leaves them.
//! Dates are the current time; message ids are the update's id.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The header Telegram sends the webhook's `secret_token` in.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// The bot the updates are addressed to, as the author of the messages buttons are on.
pub const BOT_ID: i64 = 7_000_000_001;

/// Whom [`unknown_kind`]'s reaction comes from.
const REACTING_USER: i64 = 42;

/// Recurring marks a Stars subscription payment: its period ends at `expiration` (Unix time), and
/// `is_first` says whether it started the subscription rather than renewed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurring {
    pub expiration: i64,
    pub is_first: bool,
}

/// A `pre_checkout_query`: the user confirmed the payment form and Telegram asks the bot whether
/// to take the money (it must be answered within 10 seconds).
pub fn pre_checkout_query(
    update_id: i64,
    query_id: &str,
    user_id: i64,
    payload: &str,
    currency: &str,
    total_amount: u32,
) -> Value {
    json!({
        "update_id": update_id,
        "pre_checkout_query": {
            "id": query_id,
            "from": user(user_id),
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": payload,
        },
    })
}

/// A `successful_payment` service message: Telegram took `total_amount` Stars from `user_id`.
pub fn successful_payment(
    update_id: i64,
    user_id: i64,
    payload: &str,
    total_amount: u32,
    charge_id: &str,
    recurring: Option<Recurring>,
) -> Value {
    let mut payment = json!({
        "currency": "XTR",
        "total_amount": total_amount,
        "invoice_payload": payload,
        "telegram_payment_charge_id": charge_id,
        // Stars have no payment provider; Telegram sends the field empty.
        "provider_payment_charge_id": "",
    });
    if let Some(recurring) = recurring {
        payment["subscription_expiration_date"] = json!(recurring.expiration);
        payment["is_recurring"] = json!(true);
        if recurring.is_first {
            payment["is_first_recurring"] = json!(true);
        }
    }
    private_message(update_id, user_id, "successful_payment", payment)
}

/// A `refunded_payment` service message: the Stars of `charge_id` went back to `user_id`.
pub fn refunded_payment(update_id: i64, user_id: i64, payload: &str, total_amount: u32, charge_id: &str) -> Value {
    let refund = json!({
        "currency": "XTR",
        "total_amount": total_amount,
        "invoice_payload": payload,
        "telegram_payment_charge_id": charge_id,
    });
    private_message(update_id, user_id, "refunded_payment", refund)
}

/// A `callback_query`: `user_id` pressed the button with `data` under one of the bot's messages
/// in `chat_id`.
pub fn callback_query(update_id: i64, query_id: &str, user_id: i64, chat_id: i64, data: &str) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": query_id,
            "from": user(user_id),
            "message": {
                "message_id": update_id,
                "from": bot(),
                "chat": chat(chat_id),
                "date": now(),
                "text": "Choose one:",
                "reply_markup": {"inline_keyboard": [[{"text": "Choose", "callback_data": data}]]},
            },
            // Telegram's opaque id of the chat the message is in, the same for every button in it.
            "chat_instance": chat_id.wrapping_mul(7_919).wrapping_sub(4_000_000_000_000_000_000).to_string(),
            "data": data,
        },
    })
}

/// `/start <payload>`, what `https://t.me/<bot>?start=<payload>` makes the user send; plain
/// `/start` when `payload` is empty.
pub fn start_command(update_id: i64, user_id: i64, payload: &str) -> Value {
    let text = if payload.is_empty() {
        "/start".to_string()
    } else {
        format!("/start {payload}")
    };
    text_message(update_id, user_id, &text)
}

/// A `my_chat_member` update of `user_id`'s private chat: `status` `kicked` when the user blocked
/// the bot, `member` when they started (or restarted) it, at `date`.
pub fn my_chat_member(update_id: i64, user_id: i64, status: &str, date: i64) -> Value {
    let old = if status == "kicked" { "member" } else { "kicked" };
    json!({
        "update_id": update_id,
        "my_chat_member": {
            "chat": chat(user_id),
            "from": user(user_id),
            "date": date,
            "old_chat_member": {"user": bot(), "status": old, "until_date": 0},
            "new_chat_member": {"user": bot(), "status": status, "until_date": 0},
        },
    })
}

/// A text message from `user_id` in its private chat with the bot; a command (`/name…`) carries
/// its `bot_command` entity, as Telegram marks it.
pub fn text_message(update_id: i64, user_id: i64, text: &str) -> Value {
    let mut update = private_message(update_id, user_id, "text", json!(text));
    if text.starts_with('/') {
        let command = text.split(char::is_whitespace).next().unwrap_or_default();
        let length = command.encode_utf16().count();
        update["message"]["entities"] = json!([{"offset": 0, "length": length, "type": "bot_command"}]);
    }
    update
}

/// A `message_reaction` update: a kind of update the bot does not ask for, but may still get
/// (from before its `allowed_updates` changed, or from a Telegram that added kinds).
pub fn unknown_kind(update_id: i64) -> Value {
    json!({
        "update_id": update_id,
        "message_reaction": {
            "chat": chat(REACTING_USER),
            "message_id": 1,
            "user": user(REACTING_USER),
            "date": now(),
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}],
        },
    })
}

/// Posts `update` to the webhook at `url` as Telegram does, with `secret` in
/// [`SECRET_HEADER`] when given. Panics when nothing answers at `url`.
pub async fn post_update(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    update: &Value,
) -> reqwest::Response {
    let mut request = client.post(url).json(update);
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("posting update {} to {url}: {e}", update["update_id"]))
}

fn private_message(update_id: i64, user_id: i64, field: &str, content: Value) -> Value {
    let mut message = json!({
        "message_id": update_id,
        "from": user(user_id),
        "chat": chat(user_id),
        "date": now(),
    });
    message[field] = content;
    json!({"update_id": update_id, "message": message})
}

/// A `User` as Telegram sends it.
pub fn user_json(user_id: i64) -> Value {
    user(user_id)
}

/// The bot's own `User`.
pub fn bot_user() -> Value {
    bot()
}

/// A `chat_member` update: `user_id`'s membership of the group or channel `chat_id` went from
/// `old` to `new` (`left`, `member`, `kicked` …), through `invite_link` when they joined by one.
pub fn chat_member(
    update_id: i64,
    chat_id: i64,
    user_id: i64,
    old: &str,
    new: &str,
    invite_link: Option<Value>,
) -> Value {
    let mut change = json!({
        "chat": chat(chat_id),
        "from": user(user_id),
        "date": now(),
        "old_chat_member": {"user": user(user_id), "status": old},
        "new_chat_member": {"user": user(user_id), "status": new},
    });
    if let Some(link) = invite_link {
        change["invite_link"] = link;
    }
    json!({"update_id": update_id, "chat_member": change})
}

/// A `chat_join_request`: `user_id` asks to join `chat_id`.
pub fn chat_join_request(update_id: i64, chat_id: i64, user_id: i64) -> Value {
    json!({
        "update_id": update_id,
        "chat_join_request": {
            "chat": chat(chat_id),
            "from": user(user_id),
            "user_chat_id": user_id,
            "date": now(),
        },
    })
}

fn user(user_id: i64) -> Value {
    json!({
        "id": user_id,
        "is_bot": false,
        "first_name": "Sandbox",
        "username": format!("sandbox_user_{user_id}"),
        "language_code": "en",
    })
}

fn bot() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Paygate", "username": "paygate_sandbox_bot"})
}

/// A user's private chat with the bot (its id is the user's) or, for a negative id, a group.
fn chat(chat_id: i64) -> Value {
    if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": "Sandbox", "username": format!("sandbox_user_{chat_id}")})
    } else {
        json!({"id": chat_id, "type": "supergroup", "title": "Sandbox group"})
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The update's fields besides `update_id`: Telegram sends exactly one.
    fn kinds(update: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = update.as_object().unwrap().keys().map(String::as_str).collect();
        keys.retain(|k| *k != "update_id");
        keys
    }

    #[test]
    fn every_update_has_one_kind() {
        for (update, kind) in [
            (pre_checkout_query(1, "q", 5, "pro", "XTR", 250), "pre_checkout_query"),
            (successful_payment(2, 5, "pro", 250, "c", None), "message"),
            (refunded_payment(3, 5, "pro", 250, "c"), "message"),
            (callback_query(4, "q", 5, 5, "plan:pro"), "callback_query"),
            (start_command(5, 5, "promo"), "message"),
            (text_message(6, 5, "hi"), "message"),
            (unknown_kind(7), "message_reaction"),
        ] {
            assert_eq!(kinds(&update), [kind], "{update}");
        }
    }

    #[test]
    fn only_a_recurring_payment_says_so() {
        let once = &successful_payment(1, 5, "pro", 250, "c1", None)["message"]["successful_payment"];
        assert_eq!(once.get("is_recurring"), None);
        assert_eq!(once.get("subscription_expiration_date"), None);
        assert_eq!(once["provider_payment_charge_id"], "");

        let renewal = Recurring {
            expiration: 1_800_000_000,
            is_first: false,
        };
        let paid = &successful_payment(2, 5, "pro", 250, "c2", Some(renewal))["message"]["successful_payment"];
        assert_eq!(paid["is_recurring"], true);
        assert_eq!(paid["subscription_expiration_date"], 1_800_000_000);
        assert_eq!(paid.get("is_first_recurring"), None);

        let first = Recurring {
            is_first: true,
            ..renewal
        };
        let paid = &successful_payment(3, 5, "pro", 250, "c3", Some(first))["message"]["successful_payment"];
        assert_eq!(paid["is_first_recurring"], true);
    }

    #[test]
    fn the_start_command_entity_covers_the_command() {
        let message = &start_command(1, 5, "promo-spring")["message"];
        let text = message["text"].as_str().unwrap();
        let entity = &message["entities"][0];
        let (offset, length) = (entity["offset"].as_u64().unwrap(), entity["length"].as_u64().unwrap());
        assert_eq!(&text[offset as usize..(offset + length) as usize], "/start");
        assert_eq!(text, "/start promo-spring");
        assert_eq!(start_command(2, 5, "")["message"]["text"], "/start");
    }

    #[test]
    fn a_button_press_names_the_chat_of_its_message() {
        let query = &callback_query(1, "q1", 5, -100_200, "plan:pro")["callback_query"];
        assert_eq!(query["message"]["chat"]["id"], -100_200);
        assert_eq!(query["message"]["chat"]["type"], "supergroup");
        assert_eq!(query["from"]["id"], 5);
        assert_eq!(query["data"], "plan:pro");
        assert_eq!(
            query["message"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
            "plan:pro"
        );
    }
}
