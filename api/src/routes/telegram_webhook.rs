//! `POST /webhooks/telegram`: Telegram's update deliveries, into the inbox.
//!
//! Check the secret token (401 and nothing stored when it does not match) → [`inbox::accept`]
//! (the update row, what it records and the jobs that act on it, in one transaction) → 204, or
//! 200 with the one Bot API method Telegram lets a webhook response carry: the answer to a
//! `pre_checkout_query` (decided here, since Telegram wants it within 10 s) or the
//! acknowledgement of a button press. Telegram itself is never called here.

use jobs::billing::Plans;
use jobs::bot::{Bot, Texts};
use jobs::inbox::telegram::{self as inbox, InboxError, Reply};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::{ApiResponse, Object, OpenApi, Union};
use sqlx::PgPool;

use super::Tag;
use super::extract::{RawBody, RawBodyDoc};
use crate::auth::TelegramAuth;
use crate::error::Problem;
use crate::metrics::{self, WebhookOutcome};
use crate::startup::MAX_BODY_BYTES;

/// TelegramWebhookApi serves `/webhooks/telegram`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TelegramWebhookApi;

/// RawUpdate is an update's body as it arrived, stored as sent; it documents itself as an
/// object (Telegram's `Update`).
pub type RawUpdate = RawBody<UpdateBody>;

/// UpdateBody documents a [`RawUpdate`].
pub struct UpdateBody;

impl RawBodyDoc for UpdateBody {
    const MAX_BYTES: usize = MAX_BODY_BYTES;
    const DESCRIPTION: &'static str =
        "A Bot API `Update` (https://core.telegram.org/bots/api#update), as Telegram sends it.";

    /// Only `update_id` is required: every other field depends on the update's kind, and kinds
    /// this version does not know are stored and acknowledged too.
    fn schema_ref() -> MetaSchemaRef {
        let update_id = MetaSchema {
            description: Some("The update's id: a repeat of one already stored writes nothing."),
            ..MetaSchema::new_with_format("integer", "int64")
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            required: vec!["update_id"],
            properties: vec![("update_id", MetaSchemaRef::Inline(Box::new(update_id)))],
            ..MetaSchema::new("object")
        }))
    }
}

/// AnswerPreCheckoutQuery is Telegram's `answerPreCheckoutQuery`, returned for Telegram to call.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AnswerPreCheckoutQuery {
    pub pre_checkout_query_id: String,
    /// Whether the payment may go ahead.
    pub ok: bool,
    /// Shown to the user when `ok` is false.
    pub error_message: Option<String>,
}

/// AnswerCallbackQuery is Telegram's `answerCallbackQuery`: it stops the button's spinner.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AnswerCallbackQuery {
    pub callback_query_id: String,
}

/// BotMethod is the Bot API call a webhook response carries, named by `method`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "method")]
pub enum BotMethod {
    #[oai(mapping = "answerPreCheckoutQuery")]
    AnswerPreCheckoutQuery(AnswerPreCheckoutQuery),
    #[oai(mapping = "answerCallbackQuery")]
    AnswerCallbackQuery(AnswerCallbackQuery),
}

/// TelegramWebhookResponse is the answer to a delivery.
#[derive(ApiResponse)]
pub enum TelegramWebhookResponse {
    /// The update is stored (now or by an earlier delivery); the body is the method Telegram is
    /// to call in reply.
    #[oai(status = 200)]
    Reply(Json<BotMethod>),
    /// The update is stored (now or by an earlier delivery); nothing to reply.
    #[oai(status = 204)]
    Stored,
}

impl From<Reply> for BotMethod {
    fn from(reply: Reply) -> BotMethod {
        match reply {
            Reply::AnswerPreCheckoutQuery {
                query_id,
                ok,
                error_message,
            } => BotMethod::AnswerPreCheckoutQuery(AnswerPreCheckoutQuery {
                pre_checkout_query_id: query_id,
                ok,
                error_message,
            }),
            Reply::AnswerCallbackQuery { query_id } => BotMethod::AnswerCallbackQuery(AnswerCallbackQuery {
                callback_query_id: query_id,
            }),
        }
    }
}

#[OpenApi(tag = "Tag::Webhooks")]
impl TelegramWebhookApi {
    /// Receive a Telegram update
    ///
    /// The bot's webhook (set with `worker telegram set-webhook`). The
    /// `X-Telegram-Bot-Api-Secret-Token` header must match; else 401 and nothing is stored. An
    /// update is stored once by its `update_id` (a repeat writes nothing); Stars payments once by
    /// their charge id. A `pre_checkout_query` is answered in the response body (the plan in the
    /// invoice payload is on sale, the currency is `XTR`, the amount is the plan's Stars price,
    /// the user is not banned); a repeat of it gets the same answer. A `callback_query` is
    /// acknowledged in the body. Kinds we do not act on are stored and acknowledged. An update
    /// that is not one, or holds U+0000 in a field read here, is 400 `invalid-request` and
    /// nothing is stored (Telegram gives up on it after a bounded number of deliveries).
    #[oai(
        path = "/webhooks/telegram",
        method = "post",
        operation_id = "receive_telegram_update"
    )]
    async fn receive(
        &self,
        _auth: TelegramAuth,
        pool: Data<&PgPool>,
        plans: Data<&Plans>,
        texts: Data<&Texts>,
        body: RawUpdate,
    ) -> Result<TelegramWebhookResponse, Problem> {
        let update = String::from_utf8(body.0).map_err(|_| Problem::invalid_request("the body is not UTF-8 text"))?;
        let accepted = match inbox::accept(
            &pool,
            Bot {
                plans: &plans,
                texts: &texts,
            },
            &update,
        )
        .await
        {
            Ok(accepted) => accepted,
            Err(InboxError::Malformed(reason)) => {
                metrics::telegram_update(None, WebhookOutcome::Rejected);
                return Err(Problem::invalid_request(reason));
            }
            Err(InboxError::Database(e)) => return Err(e.into()),
        };
        let outcome = if accepted.duplicate {
            WebhookOutcome::Duplicate
        } else {
            WebhookOutcome::Verified
        };
        metrics::telegram_update(Some(&accepted.kind), outcome);
        tracing::info!(kind = %accepted.kind, duplicate = accepted.duplicate, "telegram update received");
        Ok(match accepted.reply {
            Some(reply) => TelegramWebhookResponse::Reply(Json(reply.into())),
            None => TelegramWebhookResponse::Stored,
        })
    }
}
