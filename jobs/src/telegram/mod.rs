//! Telegram: the messages we send, the Bot API client, and what we record about chats.
//!
//! # Layout
//! - [`SendMessage`]: the `notifications` queue's payload.
//! - [`client`]: the Bot API client (teloxide-core) and how its errors map to job outcomes.
//! - [`pace`]: the send-rate limiter shared by every worker process.
//! - [`store`]: deliveries and unreachable chats.
//! - [`updates`]: the parts of incoming updates we act on.
//!
//! This is the provider only: it imports nothing of `billing`. What the webhook does with an
//! update is [`crate::inbox::telegram`]; users' profiles and bans are [`crate::billing::users`].

pub mod client;
pub mod pace;
pub mod store;
pub mod updates;

use serde::{Deserialize, Serialize};

use crate::queue::{JobPayload, Queue};

/// SendMessage is one Telegram message to one chat: the `notifications` queue's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    pub chat_id: i64,
    pub text: String,
    #[serde(default)]
    pub parse_mode: Option<ParseMode>,
    /// Rows of inline buttons under the message.
    #[serde(default)]
    pub buttons: Vec<Vec<Button>>,
    /// Makes the message a Stars invoice (`sendInvoice`) whose description is `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<Invoice>,
    /// The broadcast this message is part of, whose recipient outcome its delivery records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_id: Option<i64>,
}

impl JobPayload for SendMessage {
    const QUEUE: Queue = Queue::Notifications;
}

/// ParseMode is how Telegram reads a message's formatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseMode {
    Html,
    MarkdownV2,
}

/// Button is an inline button: it opens `url` or sends `callback_data` back to the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub text: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub callback_data: Option<String>,
}

impl Button {
    /// A button that opens `url`.
    pub fn url(text: impl Into<String>, url: impl Into<String>) -> Button {
        Button {
            text: text.into(),
            url: Some(url.into()),
            callback_data: None,
        }
    }

    /// A button that sends `data` back to the bot.
    pub fn callback(text: impl Into<String>, data: impl Into<String>) -> Button {
        Button {
            text: text.into(),
            url: None,
            callback_data: Some(data.into()),
        }
    }
}

/// Invoice is a one-off payment in Telegram Stars, sent into the chat as a message with a pay
/// button (`sendInvoice`). Telegram posts the pre-checkout query and the payment with `payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The product's name, 1 to 32 characters; also its one price's label.
    pub title: String,
    /// Ours, 1 to 128 bytes.
    pub payload: String,
    pub amount_stars: u32,
}

/// The longest invoice description Telegram accepts, in characters.
pub const MAX_INVOICE_DESCRIPTION_CHARS: usize = 255;
/// The longest invoice title Telegram accepts, in characters.
pub const MAX_INVOICE_TITLE_CHARS: usize = 32;

/// The longest message text Telegram accepts, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// The longest callback data Telegram accepts, in bytes.
pub const MAX_CALLBACK_DATA_BYTES: usize = 64;

impl SendMessage {
    /// Checks what Telegram would refuse, so that a bad request is refused at the door rather
    /// than dying in the queue; and U+0000 anywhere, which the queue's `jsonb` payload cannot
    /// hold (Telegram has no use for it either).
    pub fn validate(&self) -> Result<(), String> {
        if crate::db::holds_nul(self) {
            return Err(format!(
                "the text, a button's text, url or callback_data holds {}",
                crate::db::NUL
            ));
        }
        if self.text.trim().is_empty() {
            return Err("text must not be empty".into());
        }
        if self.text.chars().count() > MAX_TEXT_CHARS {
            return Err(format!("text is longer than {MAX_TEXT_CHARS} characters"));
        }
        if let Some(invoice) = &self.invoice {
            if self.text.chars().count() > MAX_INVOICE_DESCRIPTION_CHARS {
                return Err(format!(
                    "an invoice's description is longer than {MAX_INVOICE_DESCRIPTION_CHARS} characters"
                ));
            }
            if invoice.title.trim().is_empty() || invoice.title.chars().count() > MAX_INVOICE_TITLE_CHARS {
                return Err(format!(
                    "an invoice's title must be 1 to {MAX_INVOICE_TITLE_CHARS} characters"
                ));
            }
            if invoice.payload.is_empty() || invoice.payload.len() > 128 || invoice.amount_stars == 0 {
                return Err("an invoice needs a payload of 1 to 128 bytes and a price".into());
            }
        }
        if self.chat_id == 0 {
            return Err("chat_id must not be 0".into());
        }
        for button in self.buttons.iter().flatten() {
            if button.text.trim().is_empty() {
                return Err("every button needs a text".into());
            }
            match (&button.url, &button.callback_data) {
                (Some(url), None) => {
                    let parsed = reqwest::Url::parse(url).map_err(|e| format!("button url {url:?}: {e}"))?;
                    if !matches!(parsed.scheme(), "https" | "http" | "tg") {
                        return Err(format!("button url {url:?} must be https, http or tg"));
                    }
                }
                (None, Some(data)) if !data.is_empty() && data.len() <= MAX_CALLBACK_DATA_BYTES => {}
                (None, Some(_)) => return Err(format!("callback_data must be 1 to {MAX_CALLBACK_DATA_BYTES} bytes")),
                _ => return Err("every button needs exactly one of url and callback_data".into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> SendMessage {
        SendMessage {
            chat_id: 42,
            text: "hello".into(),
            parse_mode: None,
            buttons: vec![],
            invoice: None,
            broadcast_id: None,
        }
    }

    #[test]
    fn a_plain_message_is_valid() {
        assert_eq!(message().validate(), Ok(()));
    }

    #[test]
    fn empty_and_oversized_texts_are_refused() {
        assert!(
            SendMessage {
                text: " ".into(),
                ..message()
            }
            .validate()
            .is_err()
        );
        assert!(
            SendMessage {
                text: "x".repeat(4097),
                ..message()
            }
            .validate()
            .is_err()
        );
        assert_eq!(
            SendMessage {
                text: "é".repeat(4096),
                ..message()
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn nul_is_refused_in_the_text_and_every_part_of_a_button() {
        let button = |text: &str, url: Option<&str>, data: Option<&str>| SendMessage {
            buttons: vec![vec![Button {
                text: text.into(),
                url: url.map(Into::into),
                callback_data: data.map(Into::into),
            }]],
            ..message()
        };
        let nul = |m: SendMessage| m.validate().is_err_and(|e| e.contains("U+0000"));
        assert!(nul(SendMessage {
            text: "hi\0".into(),
            ..message()
        }));
        assert!(nul(button("G\0o", None, Some("x"))));
        assert!(nul(button("Go", Some("https://t.me/x\0"), None)));
        assert!(nul(button("Go", None, Some("promo:\0"))));
        assert_eq!(button("Go", Some("https://t.me/x"), None).validate(), Ok(()));
    }

    #[test]
    fn a_button_needs_exactly_one_action() {
        let with = |url: Option<&str>, data: Option<&str>| SendMessage {
            buttons: vec![vec![Button {
                text: "Go".into(),
                url: url.map(Into::into),
                callback_data: data.map(Into::into),
            }]],
            ..message()
        };
        assert_eq!(with(Some("https://t.me/bot?start=promo1"), None).validate(), Ok(()));
        assert_eq!(with(None, Some("promo:1")).validate(), Ok(()));
        assert!(with(None, None).validate().is_err());
        assert!(with(Some("https://x"), Some("y")).validate().is_err());
        assert!(with(Some("javascript:alert(1)"), None).validate().is_err());
        assert!(with(None, Some(&"d".repeat(65))).validate().is_err());
    }

    #[test]
    fn payloads_from_before_a_deploy_still_decode() {
        let old: SendMessage = serde_json::from_str(r#"{"chat_id": 1, "text": "hi"}"#).unwrap();
        assert_eq!(old.parse_mode, None);
        assert!(old.buttons.is_empty());
    }
}
