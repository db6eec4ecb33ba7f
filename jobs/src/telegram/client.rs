//! The Telegram Bot API client: teloxide-core's `Bot`, with a configurable base URL so that tests
//! and the local run point it at the fake Bot API, and a mapping of its errors to what the
//! pipeline should do about them. Besides messages it makes Stars invoice links, refunds Stars
//! payments and registers the webhook.

use std::time::Duration;

use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::prelude::*;
pub use teloxide_core::types::AllowedUpdate;
use teloxide_core::types::{
    BotCommand, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, MenuButton, ParseMode as TgParseMode,
    Seconds, TelegramTransactionId, UserId, WebAppInfo,
};

use super::{Button, Invoice, ParseMode, SendMessage};
use crate::config::Secret;
use crate::queue::JobError;

/// The Bot API's own address, used when no other is configured.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// How long one request may take. Telegram answers within a few seconds or not at all; a hung
/// send must not hold a worker slot for long. A job checks its lease outlasts it before each call.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// TelegramClient sends Bot API requests for one bot.
#[derive(Debug, Clone)]
pub struct TelegramClient {
    bot: Bot,
}

/// Telegram Stars' currency code.
const STARS: &str = "XTR";

/// What Telegram says when a Stars payment was refunded before (by us, or by support).
const CHARGE_ALREADY_REFUNDED: &str = "CHARGE_ALREADY_REFUNDED";

/// The update kinds the bot's webhook asks for: messages (commands, and the
/// `successful_payment` and `refunded_payment` service messages), inline button presses,
/// pre-checkout queries, which Telegram cancels unless answered within 10 seconds, changes of
/// the bot's own membership (a user blocking or restarting it), and the members and join
/// requests of the paid chats it administers (which Telegram sends only when asked). Naming them
/// keeps the others (reactions, edits) from costing a webhook call each.
pub const BOT_UPDATES: [AllowedUpdate; 6] = [
    AllowedUpdate::Message,
    AllowedUpdate::CallbackQuery,
    AllowedUpdate::PreCheckoutQuery,
    AllowedUpdate::MyChatMember,
    AllowedUpdate::ChatMember,
    AllowedUpdate::ChatJoinRequest,
];

/// SendError is why a Bot API call failed, sorted by what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The chat cannot be reached (blocked the bot, deactivated, kicked, not found): stop. Only
    /// sending a message gives this; for other calls the same refusals are [`Permanent`].
    ///
    /// [`Permanent`]: SendError::Permanent
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

impl From<SendError> for JobError {
    /// The job outcome of a failed call: refusals (and unreachable chats, for a caller that has
    /// nothing better to do with them) are dead at once, failures retry, flood control waits.
    fn from(e: SendError) -> JobError {
        match e {
            SendError::Unreachable(reason) | SendError::Permanent(reason) => JobError::Terminal(reason),
            SendError::Transient(reason) => JobError::Retryable(reason),
            SendError::RetryAfter(delay) => JobError::RetryAfter {
                delay,
                reason: Some(format!("Telegram asked to wait {delay:?}")),
            },
        }
    }
}

/// StarsInvoice is what one Telegram Stars invoice link sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarsInvoice {
    /// The product's name, 1–32 characters; also the label of its one price.
    pub title: String,
    /// 1–255 characters.
    pub description: String,
    /// Ours, 1–128 bytes: it comes back in the pre-checkout query and the payment.
    pub payload: String,
    pub amount_stars: u32,
    /// Set for a subscription Telegram renews every period; Telegram accepts only 30 days.
    pub subscription_period: Option<Duration>,
}

/// StarRefund is how a refund of a Stars payment ended: either way the Stars are back with the
/// user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StarRefund {
    Refunded,
    /// Refunded before: by an earlier attempt whose answer was lost, or by Telegram's support.
    AlreadyRefunded,
}

impl TelegramClient {
    /// A client for the bot with `token`, talking to `api_url`, introducing itself as
    /// `user_agent` (the worker process's name, so that a request can be traced to its sender).
    pub fn new(token: &Secret, api_url: &str, user_agent: &str) -> Result<TelegramClient, String> {
        let url = reqwest::Url::parse(api_url.trim_end_matches('/')).map_err(|e| format!("{api_url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(TIMEOUT)
            .tcp_nodelay(true)
            // reqwest is built with HTTP/2 for a test elsewhere; the Bot API is spoken over
            // HTTP/1.1 as it always was, not whatever ALPN would pick.
            .http1_only()
            .user_agent(user_agent)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(TelegramClient {
            bot: Bot::with_client(token.expose(), http).set_api_url(url),
        })
    }

    /// Sends `message` (as an invoice when it is one) and returns Telegram's message id.
    pub async fn send_message(&self, message: &SendMessage) -> Result<i64, SendError> {
        if let Some(invoice) = &message.invoice {
            return self.send_invoice(message.chat_id, invoice, &message.text).await;
        }
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

    /// Sends `invoice` into chat `chat_id` with `description`; its button pays it in Stars.
    async fn send_invoice(&self, chat_id: i64, invoice: &Invoice, description: &str) -> Result<i64, SendError> {
        let price = LabeledPrice::new(&invoice.title, invoice.amount_stars);
        // No provider token: Stars need none, and teloxide leaves an unset one out.
        let request = self.bot.send_invoice(
            ChatId(chat_id),
            &invoice.title,
            description,
            &invoice.payload,
            STARS,
            [price],
        );
        match request.send().await {
            Ok(sent) => Ok(i64::from(sent.id.0)),
            Err(e) => Err(classify(e)),
        }
    }

    /// Sets the bot's menu of commands: (command without `/`, description).
    pub async fn set_my_commands(&self, commands: &[(&str, String)]) -> Result<(), SendError> {
        let commands = commands.iter().map(|(command, about)| BotCommand::new(*command, about));
        self.bot
            .set_my_commands(commands)
            .send()
            .await
            .map(|_| ())
            .map_err(classify_call)
    }

    /// Sets the bot's menu button (beside the message field in every private chat) to open the
    /// Mini App at `url`, labelled `text`.
    pub async fn set_menu_button(&self, text: &str, url: &str) -> Result<(), SendError> {
        let url = reqwest::Url::parse(url).map_err(|e| SendError::Permanent(format!("Mini App url {url:?}: {e}")))?;
        let button = MenuButton::WebApp {
            text: text.to_string(),
            web_app: WebAppInfo { url },
        };
        self.bot
            .set_chat_menu_button()
            .menu_button(button)
            .send()
            .await
            .map(|_| ())
            .map_err(classify_call)
    }

    /// Makes an invite link to `chat_id` that lets one user in until `expires_at`, named `name`
    /// (for the chat's admins, who see it in the chat's list of links).
    pub async fn create_invite_link(
        &self,
        chat_id: i64,
        name: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, SendError> {
        self.bot
            .create_chat_invite_link(ChatId(chat_id))
            .name(name)
            .expire_date(expires_at)
            .member_limit(1)
            .send()
            .await
            .map(|link| link.invite_link)
            .map_err(classify_call)
    }

    /// Revokes `link`; a link already revoked or expired is no error.
    pub async fn revoke_invite_link(&self, chat_id: i64, link: &str) -> Result<(), SendError> {
        match self.bot.revoke_chat_invite_link(ChatId(chat_id), link).send().await {
            Ok(_) => Ok(()),
            Err(RequestError::Api(ApiError::Unknown(text))) if text.contains("INVITE_HASH_EXPIRED") => Ok(()),
            Err(e) => Err(classify_call(e)),
        }
    }

    /// The status of `user_id` in `chat_id`: `creator`, `administrator`, `member`, `restricted`,
    /// `left` or `kicked`.
    pub async fn member_status(&self, chat_id: i64, user_id: i64) -> Result<&'static str, SendError> {
        use teloxide_core::types::ChatMemberKind;
        let user = user(user_id)?;
        let member = self
            .bot
            .get_chat_member(ChatId(chat_id), user)
            .send()
            .await
            .map_err(classify_call)?;
        Ok(match member.kind {
            ChatMemberKind::Owner(_) => "creator",
            ChatMemberKind::Administrator(_) => "administrator",
            ChatMemberKind::Member(_) => "member",
            // A restricted user may also have left: then they are not in the chat.
            ChatMemberKind::Restricted(r) if r.is_member => "restricted",
            ChatMemberKind::Restricted(_) => "left",
            ChatMemberKind::Left => "left",
            ChatMemberKind::Banned(_) => "kicked",
        })
    }

    /// Bans `user_id` from `chat_id`: the first half of removing a member ([`Self::unban`] is the
    /// second, which lets them come back by a new link later).
    pub async fn ban(&self, chat_id: i64, user_id: i64) -> Result<(), SendError> {
        self.bot
            .ban_chat_member(ChatId(chat_id), user(user_id)?)
            .send()
            .await
            .map(|_| ())
            .map_err(classify_call)
    }

    /// Lifts a ban of `user_id` in `chat_id`, if there is one (`only_if_banned`, so that a member
    /// is not removed by it).
    pub async fn unban(&self, chat_id: i64, user_id: i64) -> Result<(), SendError> {
        self.bot
            .unban_chat_member(ChatId(chat_id), user(user_id)?)
            .only_if_banned(true)
            .send()
            .await
            .map(|_| ())
            .map_err(classify_call)
    }

    /// Approves (or declines) `user_id`'s request to join `chat_id`. Returns whether the answer
    /// was given: a request no longer there (answered by an administrator, withdrawn, expired) is
    /// no error, but `false`.
    pub async fn answer_join_request(&self, chat_id: i64, user_id: i64, approve: bool) -> Result<bool, SendError> {
        let user = user(user_id)?;
        let sent = if approve {
            self.bot
                .approve_chat_join_request(ChatId(chat_id), user)
                .send()
                .await
                .map(|_| ())
        } else {
            self.bot
                .decline_chat_join_request(ChatId(chat_id), user)
                .send()
                .await
                .map(|_| ())
        };
        match sent {
            Ok(()) => Ok(true),
            Err(RequestError::Api(ApiError::Unknown(text)))
                if text.contains("HIDE_REQUESTER_MISSING") || text.contains("USER_ALREADY_PARTICIPANT") =>
            {
                Ok(false)
            }
            Err(e) => Err(classify_call(e)),
        }
    }

    /// Creates a `https://t.me/$…` link that opens a payment form for `invoice` in Stars.
    pub async fn create_invoice_link(&self, invoice: &StarsInvoice) -> Result<String, SendError> {
        let price = LabeledPrice::new(&invoice.title, invoice.amount_stars);
        // No provider token: Stars need none, and teloxide leaves an unset one out.
        let mut request =
            self.bot
                .create_invoice_link(&invoice.title, &invoice.description, &invoice.payload, STARS, [price]);
        if let Some(period) = invoice.subscription_period {
            let seconds = u32::try_from(period.as_secs())
                .map_err(|_| SendError::Permanent(format!("subscription period {period:?} is too long")))?;
            request = request.subscription_period(Seconds::from_seconds(seconds));
        }
        request.send().await.map_err(classify_call)
    }

    /// Gives the Stars of payment `telegram_payment_charge_id` back to `user_id`. Safe to retry:
    /// a refund that already happened is a success.
    pub async fn refund_star_payment(
        &self,
        user_id: i64,
        telegram_payment_charge_id: &str,
    ) -> Result<StarRefund, SendError> {
        let user = u64::try_from(user_id).map_err(|_| SendError::Permanent(format!("{user_id} is not a user id")))?;
        let charge = TelegramTransactionId(telegram_payment_charge_id.to_string());
        match self.bot.refund_star_payment(UserId(user), charge).send().await {
            Ok(_) => Ok(StarRefund::Refunded),
            Err(RequestError::Api(ApiError::Unknown(text))) if text.contains(CHARGE_ALREADY_REFUNDED) => {
                Ok(StarRefund::AlreadyRefunded)
            }
            Err(e) => Err(classify_call(e)),
        }
    }

    /// Makes Telegram post the `allowed_updates` kinds (usually [`BOT_UPDATES`]) to `url`, with
    /// `secret_token` in the `X-Telegram-Bot-Api-Secret-Token` header. Updates still waiting
    /// are kept: they may be payments.
    pub async fn set_webhook(
        &self,
        url: &str,
        secret_token: &str,
        allowed_updates: &[AllowedUpdate],
    ) -> Result<(), SendError> {
        let url = reqwest::Url::parse(url).map_err(|e| SendError::Permanent(format!("webhook url {url:?}: {e}")))?;
        self.bot
            .set_webhook(url)
            .secret_token(secret_token)
            .allowed_updates(allowed_updates.iter().copied())
            .drop_pending_updates(false)
            .send()
            .await
            .map(|_| ())
            .map_err(classify_call)
    }

    /// The webhook as Telegram sees it: its url (empty when none is set), how many updates wait
    /// for delivery, and why the last delivery failed, if it did.
    pub async fn webhook_info(&self) -> Result<(String, u32, Option<String>), SendError> {
        let info = self.bot.get_webhook_info().send().await.map_err(classify_call)?;
        let url = info.url.map(String::from).unwrap_or_default();
        Ok((url, info.pending_update_count, info.last_error_message))
    }
}

fn user(user_id: i64) -> Result<UserId, SendError> {
    u64::try_from(user_id)
        .map(UserId)
        .map_err(|_| SendError::Permanent(format!("{user_id} is not a user id")))
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
            // Telegram's own failures: teloxide drops the envelope's 5xx `error_code`, so the
            // description is all that tells them from a refusal.
            ApiError::Unknown(text) if is_server_error(&text) => SendError::Transient(text),
            // Telegram words new refusals freely; any 403 means this chat is closed to us.
            ApiError::Unknown(text) if text.starts_with("Forbidden") => SendError::Unreachable(text),
            other => SendError::Permanent(other.to_string()),
        },
        RequestError::MigrateToChatId(to) => SendError::Permanent(format!("the group moved to chat {}", to.0)),
        // Network failures, HTML error pages from a proxy, I/O: all worth another try.
        other => SendError::Transient(other.to_string()),
    }
}

/// Sorts the error of a call that is not a message, where a chat's refusal means nothing
/// different from any other refusal.
fn classify_call(error: RequestError) -> SendError {
    match classify(error) {
        SendError::Unreachable(text) => SendError::Permanent(text),
        other => other,
    }
}

/// Whether an error description is one Telegram gives with a 5xx status.
fn is_server_error(description: &str) -> bool {
    [
        "Internal Server Error",
        "Bad Gateway",
        "Service Unavailable",
        "Gateway Timeout",
    ]
    .iter()
    .any(|prefix| description.starts_with(prefix))
}
