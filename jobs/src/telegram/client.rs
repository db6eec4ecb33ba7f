//! The Telegram Bot API client: teloxide-core's `Bot`, with a configurable base URL so that tests
//! and the local run point it at the fake Bot API, and a mapping of its errors to what the
//! pipeline should do about them.

use std::time::Duration;

use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::prelude::*;
use teloxide_core::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, ParseMode as TgParseMode};

use super::{Button, ParseMode, SendMessage};
use crate::config::Secret;

/// The Bot API's own address, used when no other is configured.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// TelegramClient sends Bot API requests for one bot.
#[derive(Debug, Clone)]
pub struct TelegramClient {
    bot: Bot,
}

/// SendError is why a message was not sent, sorted by what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The chat cannot be reached (blocked the bot, deactivated, kicked, not found): stop.
    #[error("chat unreachable: {0}")]
    Unreachable(String),
    /// Flood control: wait this long, then try again.
    #[error("rate limited by Telegram: retry after {0:?}")]
    RetryAfter(Duration),
    /// Telegram refused the request and will refuse it again.
    #[error("refused by Telegram: {0}")]
    Permanent(String),
    /// The network or Telegram failed; worth another attempt. When the request may have reached
    /// Telegram (a timeout), that attempt can duplicate the message.
    #[error("transient failure: {0}")]
    Transient(String),
}

impl TelegramClient {
    /// A client for the bot with `token`, talking to `api_url`, introducing itself as
    /// `user_agent` (the worker process's name, so that a request can be traced to its sender).
    pub fn new(token: &Secret, api_url: &str, user_agent: &str) -> Result<TelegramClient, String> {
        let url = reqwest::Url::parse(api_url.trim_end_matches('/')).map_err(|e| format!("{api_url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Telegram answers within a few seconds or not at all; a hung send must not hold a
            // worker slot for long.
            .timeout(Duration::from_secs(20))
            .tcp_nodelay(true)
            .user_agent(user_agent)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(TelegramClient {
            bot: Bot::with_client(token.expose(), http).set_api_url(url),
        })
    }

    /// Sends `message` and returns Telegram's message id.
    pub async fn send_message(&self, message: &SendMessage) -> Result<i64, SendError> {
        let mut request = self.bot.send_message(ChatId(message.chat_id), &message.text);
        if let Some(mode) = message.parse_mode {
            request = request.parse_mode(match mode {
                ParseMode::Html => TgParseMode::Html,
                ParseMode::MarkdownV2 => TgParseMode::MarkdownV2,
            });
        }
        if !message.buttons.is_empty() {
            let rows = message
                .buttons
                .iter()
                .map(|row| row.iter().map(inline_button).collect::<Result<Vec<_>, _>>())
                .collect::<Result<Vec<_>, _>>()?;
            request = request.reply_markup(InlineKeyboardMarkup::new(rows));
        }
        match request.send().await {
            Ok(sent) => Ok(i64::from(sent.id.0)),
            Err(e) => Err(classify(e)),
        }
    }
}

fn inline_button(button: &Button) -> Result<InlineKeyboardButton, SendError> {
    match (&button.url, &button.callback_data) {
        (Some(url), _) => {
            let url = reqwest::Url::parse(url).map_err(|e| SendError::Permanent(format!("button url {url:?}: {e}")))?;
            Ok(InlineKeyboardButton::url(&button.text, url))
        }
        (None, Some(data)) => Ok(InlineKeyboardButton::callback(&button.text, data)),
        (None, None) => Err(SendError::Permanent(format!("button {:?} has no action", button.text))),
    }
}

/// Sorts a teloxide error by what to do next.
pub fn classify(error: RequestError) -> SendError {
    match error {
        RequestError::RetryAfter(wait) => SendError::RetryAfter(wait.duration()),
        RequestError::Api(api) => match api {
            ApiError::BotBlocked
            | ApiError::UserDeactivated
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup
            | ApiError::BotKickedFromChannel
            | ApiError::CantInitiateConversation
            | ApiError::CantTalkWithBots
            | ApiError::ChatNotFound
            | ApiError::UserNotFound
            | ApiError::GroupDeactivated => SendError::Unreachable(api.to_string()),
            // Our misconfiguration, not the message's fault: retry while ops fix the token.
            ApiError::InvalidToken => SendError::Transient(api.to_string()),
            // Telegram words new refusals freely; any 403 means this chat is closed to us.
            ApiError::Unknown(text) if text.starts_with("Forbidden") => SendError::Unreachable(text),
            other => SendError::Permanent(other.to_string()),
        },
        RequestError::MigrateToChatId(to) => SendError::Permanent(format!("the group moved to chat {}", to.0)),
        // Network failures, HTML error pages from a proxy, I/O: all worth another try.
        other => SendError::Transient(other.to_string()),
    }
}
