//! `POST /v1/ops/notifications`: an operator sends one Telegram message through the
//! `notifications` queue.
//!
//! Parse → [`SendMessage::validate`] → enqueue in one transaction → 202. The `Idempotency-Key`
//! becomes the job's logical key (`ops:<key>`), so a repeat finds the first job and enqueues
//! nothing; without one, every request is a new job.

use jobs::queue::{Enqueued, NewJob, enqueue};
use jobs::telegram::{self as tg, SendMessage};
use poem::web::Data;
use poem_openapi::param::Header;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use super::extract::IdempotencyKey;
use super::json_string::JsonString;
use crate::auth::AdminAuth;
use crate::error::{Problem, ProblemKind};

/// NotificationsApi serves `/v1/ops/notifications`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotificationsApi;

/// Notification is one Telegram message to one chat.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct Notification {
    /// The chat to send to (for a private chat, the user's id). Not 0.
    pub chat_id: i64,
    /// The message text: not blank, at most 4096 characters.
    pub text: JsonString,
    /// How Telegram reads the text's formatting; plain text when absent.
    pub parse_mode: Option<ParseMode>,
    /// Rows of inline buttons under the message.
    #[oai(default)]
    pub buttons: Vec<Vec<Button>>,
}

/// ParseMode is how Telegram reads a message's formatting.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ParseMode {
    Html,
    MarkdownV2,
}

impl ParseMode {
    /// The queue payload's parse mode.
    pub fn into_telegram(self) -> tg::ParseMode {
        match self {
            ParseMode::Html => tg::ParseMode::Html,
            ParseMode::MarkdownV2 => tg::ParseMode::MarkdownV2,
        }
    }

    /// The parse mode of a queue payload.
    pub fn from_telegram(mode: tg::ParseMode) -> ParseMode {
        match mode {
            tg::ParseMode::Html => ParseMode::Html,
            tg::ParseMode::MarkdownV2 => ParseMode::MarkdownV2,
        }
    }
}

/// Button is an inline button: it opens `url` or sends `callback_data` back to the bot; exactly
/// one of the two.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct Button {
    /// The button's label.
    pub text: JsonString,
    /// An `https`, `http` or `tg` URL to open.
    pub url: Option<JsonString>,
    /// 1 to 64 bytes sent back to the bot when pressed.
    pub callback_data: Option<JsonString>,
}

/// NotificationAccepted says which job carries the notification.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NotificationAccepted {
    /// The job's id. Absent only for a repeat whose job has already run and been pruned.
    pub job_id: Option<i64>,
    /// Whether this request repeated an earlier one with the same `Idempotency-Key`; if so,
    /// nothing new was enqueued.
    pub duplicate: bool,
}

/// EnqueueResponse is the answer to a notification request.
#[derive(ApiResponse)]
pub enum EnqueueResponse {
    /// The notification is queued, now or by an earlier request with the same key.
    #[oai(status = 202)]
    Accepted(Json<NotificationAccepted>),
}

impl From<Notification> for SendMessage {
    fn from(n: Notification) -> SendMessage {
        SendMessage {
            chat_id: n.chat_id,
            text: n.text.into(),
            parse_mode: n.parse_mode.map(ParseMode::into_telegram),
            buttons: n
                .buttons
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|b| tg::Button {
                            text: b.text.into(),
                            url: b.url.map(Into::into),
                            callback_data: b.callback_data.map(Into::into),
                        })
                        .collect()
                })
                .collect(),
            invoice: None,
            broadcast_id: None,
        }
    }
}

/// The job's logical key: the caller's idempotency key, or a fresh one.
fn logical_key(idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(key) => format!("ops:{key}"),
        None => format!("ops:{}", uuid::Uuid::new_v4()),
    }
}

#[OpenApi(tag = "Tag::Notifications")]
impl NotificationsApi {
    /// Send a Telegram message
    ///
    /// Queues one message on the `notifications` queue. It is checked here as Telegram would
    /// (text length, buttons; no U+0000 anywhere, which the queue cannot store either), so that
    /// a bad message is refused now (400 `invalid-notification`) rather than dying in the queue.
    #[oai(
        path = "/v1/ops/notifications",
        method = "post",
        operation_id = "enqueue_notification"
    )]
    async fn enqueue(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// Makes the request safe to repeat: 1 to 200 visible ASCII characters. A repeat with the
        /// same key answers with the first request's job and enqueues nothing, whatever its body.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
        body: Json<Notification>,
    ) -> Result<EnqueueResponse, Problem> {
        let message = SendMessage::from(body.0);
        message
            .validate()
            .map_err(|reason| Problem::new(ProblemKind::InvalidNotification, reason))?;
        let job = NewJob::new(
            &message,
            logical_key(idempotency_key.0.as_ref().map(IdempotencyKey::as_str)),
        );

        let mut tx = pool.begin().await?;
        let enqueued = enqueue(&mut tx, &job).await?;
        tx.commit().await?;

        let duplicate = matches!(enqueued, Enqueued::Duplicate(_));
        tracing::info!(job_id = enqueued.id(), duplicate, "notification enqueued");
        Ok(EnqueueResponse::Accepted(Json(NotificationAccepted {
            job_id: enqueued.id(),
            duplicate,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_is_the_logical_key() {
        assert_eq!(logical_key(Some("abc-1")), "ops:abc-1");
        let fresh = logical_key(None);
        assert!(fresh.starts_with("ops:") && fresh.len() == 4 + 36, "{fresh}");
        assert_ne!(logical_key(None), fresh);
    }

    #[test]
    fn a_notification_becomes_the_queue_payload() {
        let n = Notification {
            chat_id: 42,
            text: JsonString("hi".into()),
            parse_mode: Some(ParseMode::MarkdownV2),
            buttons: vec![vec![Button {
                text: JsonString("Go".into()),
                url: Some(JsonString("https://t.me/x".into())),
                callback_data: None,
            }]],
        };
        let message = SendMessage::from(n);
        assert_eq!(message.parse_mode, Some(tg::ParseMode::MarkdownV2));
        assert_eq!(message.buttons[0][0].url.as_deref(), Some("https://t.me/x"));
        assert_eq!(message.validate(), Ok(()));
    }
}
