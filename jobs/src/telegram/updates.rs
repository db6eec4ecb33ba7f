//! The parts of a Bot API `Update` that we act on.
//!
//! Our own minimal structs rather than a library's complete ones: Telegram adds fields and
//! message kinds often, and a library type that fails on something new would turn a payment
//! into an unparsable update. Here unknown fields are ignored and unknown update kinds are
//! simply not one of the fields below. The whole update is stored as sent anyway. They
//! serialise too, so that the inbox can check what it reads of an update, and only that, for
//! what PostgreSQL cannot store.

use serde::{Deserialize, Serialize};

/// Update is one incoming update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub pre_checkout_query: Option<PreCheckoutQuery>,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
    #[serde(default)]
    pub my_chat_member: Option<ChatMemberUpdated>,
    /// A change of somebody's membership of a chat the bot administers.
    #[serde(default)]
    pub chat_member: Option<ChatMemberUpdated>,
    #[serde(default)]
    pub chat_join_request: Option<ChatJoinRequest>,
}

/// ChatJoinRequest is a user asking to join a chat the bot administers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatJoinRequest {
    pub chat: Chat,
    pub from: User,
    /// Unix time of the request.
    pub date: i64,
}

/// InviteLink is as much of an invite link as we read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteLink {
    pub invite_link: String,
}

/// User is who sent a message or a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_bot: bool,
}

/// Chat is where a message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl Chat {
    /// Whether this is a user's private chat with the bot (Telegram always says; a private
    /// chat's id is also the user's, and positive).
    pub fn is_private(&self) -> bool {
        self.kind.as_deref().map_or(self.id > 0, |kind| kind == "private")
    }
}

/// Message is a message in a chat; for us, a payment, a refund or a `/start` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default)]
    pub from: Option<User>,
    pub chat: Chat,
    /// Unix time the message was sent.
    pub date: i64,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub successful_payment: Option<SuccessfulPayment>,
    #[serde(default)]
    pub refunded_payment: Option<RefundedPayment>,
}

/// SuccessfulPayment is a payment Telegram has taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessfulPayment {
    pub currency: String,
    pub total_amount: i64,
    pub invoice_payload: String,
    pub telegram_payment_charge_id: String,
    /// Unix time the subscription's current period ends (recurring payments only).
    #[serde(default)]
    pub subscription_expiration_date: Option<i64>,
    #[serde(default)]
    pub is_recurring: bool,
    #[serde(default)]
    pub is_first_recurring: bool,
}

/// RefundedPayment is a payment Telegram has given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundedPayment {
    pub currency: String,
    pub total_amount: i64,
    pub invoice_payload: String,
    pub telegram_payment_charge_id: String,
}

/// PreCheckoutQuery asks whether a payment may go ahead; it must be answered within 10 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreCheckoutQuery {
    pub id: String,
    pub from: User,
    pub currency: String,
    pub total_amount: i64,
    pub invoice_payload: String,
}

/// CallbackQuery is a press of an inline button with callback data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackQuery {
    pub id: String,
    pub from: User,
    /// The message the button was on, when it is not too old for Telegram to include.
    #[serde(default)]
    pub message: Option<CallbackMessage>,
    #[serde(default)]
    pub data: Option<String>,
}

/// ChatMemberUpdated is a change of a membership: the bot's own (`my_chat_member`; in a private
/// chat, the user blocking the bot, `kicked`, or starting it again, `member`), or somebody's in a
/// chat the bot administers (`chat_member`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMemberUpdated {
    pub chat: Chat,
    /// Unix time of the change.
    pub date: i64,
    pub new_chat_member: ChatMember,
    /// What it was before (always sent; optional here for the bot's own updates' sake).
    #[serde(default)]
    pub old_chat_member: Option<ChatMember>,
    /// The link the member joined by, if they did.
    #[serde(default)]
    pub invite_link: Option<InviteLink>,
}

/// ChatMember is as much of a membership as we read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMember {
    /// `creator`, `administrator`, `member`, `restricted`, `left` or `kicked`.
    pub status: String,
    /// For `restricted`: whether they are in the chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_member: Option<bool>,
    /// Whose membership it is (always sent; optional here for the bot's own updates' sake).
    #[serde(default)]
    pub user: Option<User>,
}

impl ChatMember {
    /// Its status, with a restricted user who is not in the chat as `left`.
    pub fn presence(&self) -> &str {
        match (self.status.as_str(), self.is_member) {
            ("restricted", Some(false)) => "left",
            (status, _) => status,
        }
    }
}

/// CallbackMessage is as much of a button's message as we read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackMessage {
    pub chat: Chat,
}

/// The kind of a raw update: the name of its one field besides `update_id`, as Telegram names it
/// (`message`, `pre_checkout_query`, `message_reaction`, …).
pub fn kind_of(raw: &serde_json::Map<String, serde_json::Value>) -> String {
    raw.keys()
        .find(|key| key.as_str() != "update_id")
        .cloned()
        .unwrap_or_else(|| "empty".into())
}

impl Message {
    /// The payload of a `/start <payload>` command (a deep link `t.me/<bot>?start=<payload>`),
    /// also when addressed as `/start@<bot>`.
    pub fn start_payload(&self) -> Option<&str> {
        let text = self.text.as_deref()?;
        let (command, payload) = text.split_once(' ')?;
        let command = command.split_once('@').map_or(command, |(c, _)| c);
        (command == "/start").then(|| payload.trim()).filter(|p| !p.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Message {
        Message {
            message_id: 1,
            from: Some(User { id: 5, is_bot: false }),
            chat: Chat {
                id: 5,
                kind: Some("private".into()),
            },
            date: 0,
            text: Some(text.into()),
            successful_payment: None,
            refunded_payment: None,
        }
    }

    #[test]
    fn start_payloads_are_read_from_the_command() {
        assert_eq!(message("/start promo-spring-a").start_payload(), Some("promo-spring-a"));
        assert_eq!(
            message("/start@paygate_bot promo-x-y").start_payload(),
            Some("promo-x-y")
        );
        assert_eq!(message("/start").start_payload(), None);
        assert_eq!(message("/start ").start_payload(), None);
        assert_eq!(message("/started promo-x-y").start_payload(), None);
        assert_eq!(message("hello /start promo-x-y").start_payload(), None);
    }

    #[test]
    fn unknown_fields_and_kinds_are_ignored() {
        let raw = r#"{"update_id": 9, "message_reaction": {"chat": {"id": 1}, "future_field": 1}}"#;
        let update: Update = serde_json::from_str(raw).unwrap();
        assert_eq!(update.update_id, 9);
        assert!(update.message.is_none() && update.pre_checkout_query.is_none());
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).unwrap();
        assert_eq!(kind_of(&map), "message_reaction");
    }
}
