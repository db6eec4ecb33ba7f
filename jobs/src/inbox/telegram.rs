//! The Telegram webhook's inbox: what it does with an update: store it by `update_id`, record what it tells
//! (a payment, a refund, a click) with the jobs that act on it, all in one transaction, and say
//! what to answer inline. A repeat of a stored update writes nothing.
//!
//! A promo click is stored here rather than by a job, so that it is in the database before any
//! later update (a payment) can be attributed to it.
//!
//! A `pre_checkout_query` is decided here, because Telegram wants its answer within 10 s; that
//! answer and a callback query's acknowledgement ride in the webhook's HTTP response. Commands
//! and presses of the bot's own buttons in private chats are handed to [`crate::bot`], which
//! queues its answers (and billing requests) in the same transaction.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;

use crate::access;
use crate::billing::{EntitlementsJob, stars};
use crate::bot::{self, Bot, Choice};
use crate::db::{NUL, holds_nul};
use crate::queue::{NewJob, enqueue};
use crate::telegram::store;
use crate::telegram::updates::{Update, kind_of};
use crate::tracking::{self, Promo, RecordClick, Via};

/// Reply is the Bot API method call to return in the webhook's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    AnswerPreCheckoutQuery {
        query_id: String,
        ok: bool,
        error_message: Option<String>,
    },
    AnswerCallbackQuery {
        query_id: String,
    },
}

/// Accepted is what became of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The update was stored before: nothing was written.
    pub duplicate: bool,
    /// The update's kind, as Telegram names its field.
    pub kind: String,
    pub reply: Option<Reply>,
}

/// InboxError is an update that cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("the body is not a Telegram update: {0}")]
    Malformed(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Takes one update, as sent (`raw`), for `bot`.
pub async fn accept(pool: &PgPool, bot: Bot<'_>, raw: &str) -> Result<Accepted, InboxError> {
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|e| InboxError::Malformed(e.to_string()))?;
    let update: Update = serde_json::from_str(raw).map_err(|e| InboxError::Malformed(e.to_string()))?;
    let kind = kind_of(&fields);
    // U+0000 in what we read (a query id, a charge id, a payload, a command) or in the kind would
    // fail a statement below: refused before anything is written. The webhook answers 400, and
    // Telegram gives up on an update after "a reasonable amount of attempts" (Bot API,
    // setWebhook), so it is not retried forever. Elsewhere the update is stored as sent: the
    // payload column is text, which holds the escape, and a name nobody reads must not cost a
    // payment.
    if holds_nul(&update) || holds_nul(&kind) {
        return Err(InboxError::Malformed(format!(
            "a field we read, or the update's kind, holds {NUL}"
        )));
    }

    let mut tx = pool.begin().await?;
    let stored: Option<i64> = sqlx::query_scalar(
        "INSERT INTO telegram_updates (update_id, kind, payload) VALUES ($1, $2, $3)
         ON CONFLICT (update_id) DO NOTHING RETURNING update_id",
    )
    .bind(update.update_id)
    .bind(&kind)
    .bind(raw)
    .fetch_optional(&mut *tx)
    .await?;
    let duplicate = stored.is_none();

    let mut reply = None;
    if let Some(query) = &update.pre_checkout_query {
        // Recorded with the update, so a repeat finds the first answer and gives it again.
        let answer = stars::answer_pre_checkout(&mut tx, bot.plans, query).await?;
        reply = Some(Reply::AnswerPreCheckoutQuery {
            query_id: query.id.clone(),
            ok: answer.ok,
            error_message: answer.error_message,
        });
    }
    if let Some(callback) = &update.callback_query {
        reply = Some(Reply::AnswerCallbackQuery {
            query_id: callback.id.clone(),
        });
        // A press of one of the bot's own buttons, in its private chat, is answered there.
        let private = callback.message.as_ref().is_none_or(|m| m.chat.is_private());
        if let (false, true, Some(choice)) = (duplicate, private, callback.data.as_deref().and_then(Choice::parse)) {
            bot::on_choice(&mut tx, bot, update.update_id, callback.from.id, choice).await?;
        }
        if let (false, Some(promo)) = (duplicate, callback.data.as_deref().and_then(Promo::from_callback_data)) {
            let click = RecordClick {
                update_id: update.update_id,
                user_id: callback.from.id,
                chat_id: callback.message.as_ref().map(|m| m.chat.id),
                promo,
                via: Via::Callback,
                // Callback queries carry no time of their own: the click is now, in whole
                // seconds like the dates Telegram gives messages (and payments), so that a
                // payment in the same second as the click still comes after it.
                clicked_at: Utc::now().trunc_subsecs(0),
            };
            tracking::record(&mut tx, &click).await?;
        }
    }
    if let (false, Some(change)) = (duplicate, &update.my_chat_member)
        && change.chat.id > 0
    {
        // The user blocked the bot, or started it again; a later message also unblocks.
        let at = DateTime::from_timestamp(change.date, 0).unwrap_or_else(Utc::now);
        match change.new_chat_member.status.as_str() {
            "kicked" => store::blocked_by_user(&mut tx, change.chat.id, at).await?,
            "member" => store::saw_chat(&mut tx, change.chat.id, at, true).await?,
            _ => {}
        }
    }
    if let (false, Some(change)) = (duplicate, &update.chat_member)
        && bot.plans.is_paid_chat(change.chat.id)
        && let Some(user) = &change.new_chat_member.user
    {
        let (chat_id, at) = (
            change.chat.id,
            DateTime::from_timestamp(change.date, 0).unwrap_or_else(Utc::now),
        );
        let status = change.new_chat_member.presence();
        access::store::note_member(&mut tx, chat_id, user.id, status, at).await?;
        // Whoever comes in (by our link, somebody else's, an administrator's, a join request) is
        // checked: removed without access of their own; with it, their links are revoked. The
        // owner of one of our links used by somebody else is sent a new one. A change inside
        // the chat (a demotion, a restriction) is no entry, and bots are the administrators'.
        let was_in = (change.old_chat_member.as_ref()).is_some_and(|old| access::is_in(old.presence()));
        if matches!(status, "member" | "restricted") && !was_in && !user.is_bot {
            let owner = match &change.invite_link {
                Some(link) => access::store::link_used(&mut tx, &link.invite_link, chat_id, user.id).await?,
                None => None,
            };
            let relink = owner
                .filter(|owner| *owner != user.id)
                .map(|owner| (owner, "access_relink"));
            for (whom, key) in std::iter::once((user.id, "access_join")).chain(relink) {
                let job = EntitlementsJob::SyncAccess(access::SyncAccess::check(whom, chat_id));
                enqueue(&mut tx, &NewJob::new(&job, format!("{key}:{}", update.update_id))).await?;
            }
        }
    }
    if let (false, Some(request)) = (duplicate, &update.chat_join_request)
        && bot.plans.is_paid_chat(request.chat.id)
    {
        let job = EntitlementsJob::JoinRequest(access::JoinRequest {
            chat_id: request.chat.id,
            user_id: request.from.id,
        });
        enqueue(
            &mut tx,
            &NewJob::new(&job, format!("join_request:{}", update.update_id)),
        )
        .await?;
    }
    if let (false, Some(message)) = (duplicate, &update.message) {
        let sent_at = DateTime::from_timestamp(message.date, 0).unwrap_or_else(Utc::now);
        let user_id = message.from.as_ref().map_or(message.chat.id, |u| u.id);
        if message.chat.id > 0 {
            // A user who writes to the bot has it unblocked: in the audience, reachable again.
            store::saw_chat(&mut tx, message.chat.id, sent_at, true).await?;
        }
        if let Some(payment) = &message.successful_payment {
            if payment.currency == stars::CURRENCY {
                stars::record_payment(&mut tx, user_id, sent_at, payment).await?;
            } else {
                tracing::warn!(currency = payment.currency, "a payment in a currency we do not sell in");
            }
        }
        if let Some(refund) = &message.refunded_payment {
            stars::record_refund_notice(&mut tx, sent_at, refund).await?;
        }
        if let Some(promo) = message.start_payload().and_then(Promo::from_start_payload) {
            let click = RecordClick {
                update_id: update.update_id,
                user_id,
                chat_id: Some(message.chat.id),
                promo,
                via: Via::Start,
                clicked_at: sent_at,
            };
            tracking::record(&mut tx, &click).await?;
        }
        // Commands and words in the private chat are answered; in groups the bot stays quiet.
        if let (true, Some(text)) = (message.chat.is_private(), message.text.as_deref()) {
            bot::on_message(&mut tx, bot, update.update_id, user_id, text).await?;
        }
    }
    tx.commit().await?;
    Ok(Accepted { duplicate, kind, reply })
}

/// How long a stored update is kept at the least: Telegram gives up redelivering an update after
/// about a day, so after two no repeat can come that the update row would have to recognise.
/// (What an update brought has its own key besides: the charge id, the job's ledger row, the
/// click's update id.)
pub const MIN_UPDATE_RETENTION: Duration = Duration::from_secs(2 * 24 * 3600);

/// Deletes updates received more than `retention` (at least [`MIN_UPDATE_RETENTION`]) ago, in
/// batches; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    crate::db::delete_in_batches(
        pool,
        "DELETE FROM telegram_updates WHERE update_id IN (
             SELECT update_id FROM telegram_updates
             WHERE received_at < now() - make_interval(secs => $1)
             LIMIT $2)",
        retention.max(MIN_UPDATE_RETENTION),
    )
    .await
}
