//! Paid chats: the Telegram groups and channels a plan opens (`PLANS` `chats`), opened to the
//! users its entitlements entitle and closed to the others.
//!
//! Every change of an entitlement that opens or closes it ([`follow`], in the change's
//! transaction) queues a [`SyncAccess`] job per chat of the plan. The job compares what the user
//! should have, from *all* their active entitlements (a user another entitlement still entitles
//! stays), with what the bot last did (`chat_access`) and who is in the chat (`chat_members`,
//! kept by Telegram's `chat_member` updates), and does what is missing:
//! - entitled and not in the chat: a single-use invite link (`createChatInviteLink` with
//!   `member_limit: 1`, valid [`LINK_TTL`]) sent in a message with a join button;
//! - not entitled: their unused link revoked and, if they are in the chat, a ban lifted at once
//!   (removed, free to come back by a later purchase), and they are told. An administrator is
//!   never removed.
//!
//! Single-use links rather than join requests: a link lets the user in with one tap and needs no
//! approval round trip, and a link used by somebody else is caught by its `chat_member` update
//! (the joiner is checked, the owner gets a new link). Join requests are still answered
//! ([`JoinRequest`]): approved for a user with access, declined for anyone else.
//!
//! Telegram is called before the effect transaction, with no connection held. A re-run after a
//! crash between a call and its record repeats it: a second link is made (the first is never
//! sent, and expires); a removal finds the user already out, and since the records still have
//! them in, they are told as if this attempt had removed them.
//!
//! # Layout
//! - this module: the jobs and what they do.
//! - [`store`]: `chat_access`, `chat_invite_links`, `chat_members`.
//! - [`audit`]: members without access and entitled users not in the chat.

pub mod audit;
pub mod store;

use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::billing::entitlements::{Changed, Status};
use crate::billing::{Billing, EntitlementsJob, Plans};
use crate::bot::{Choice, Text};
use crate::metrics::{self, counters};
use crate::queue::{Completed, Job, JobError, NewJob, apply_once, complete_unchanged, enqueue};
use crate::telegram::{self, Button, SendMessage};

/// How long an invite link may be used.
pub const LINK_TTL: TimeDelta = TimeDelta::days(7);

/// SyncAccess is the `entitlements` job that makes `user_id`'s presence in paid chat `chat_id`
/// what their entitlements say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAccess {
    pub user_id: i64,
    pub chat_id: i64,
}

/// JoinRequest is the `entitlements` job that answers `user_id`'s request to join `chat_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub chat_id: i64,
    pub user_id: i64,
}

/// Queues the access jobs a recorded change calls for: one per chat of its plan (and of the plan
/// before, if that changed), when the entitlement became or stopped being active, or changed
/// plan. Run it in the change's transaction.
pub async fn follow(conn: &mut PgConnection, plans: &Plans, change: &Changed) -> Result<(), sqlx::Error> {
    let now = &change.entitlement;
    let was_active = change.before.as_ref().is_some_and(|b| b.status == Status::Active);
    let before_plan = change.before.as_ref().map(|b| b.plan.as_str());
    let is_active = now.status == Status::Active;
    if was_active == is_active && before_plan == Some(now.plan.as_str()) {
        return Ok(());
    }
    let mut chats: Vec<i64> = plans.get(&now.plan).map(|p| p.chats.clone()).unwrap_or_default();
    if let Some(plan) = before_plan.and_then(|code| plans.get(code)) {
        chats.extend(&plan.chats);
    }
    chats.sort_unstable();
    chats.dedup();
    for chat_id in chats {
        let job = EntitlementsJob::SyncAccess(SyncAccess {
            user_id: now.user_id,
            chat_id,
        });
        enqueue(
            conn,
            &NewJob::new(&job, format!("access:{}:{chat_id}", change.change_id)),
        )
        .await?;
    }
    Ok(())
}

/// The plan of an active entitlement of `user_id` that opens `chat_id`, if they have one.
pub async fn entitling_plan(
    conn: &mut PgConnection,
    plans: &Plans,
    user_id: i64,
    chat_id: i64,
) -> Result<Option<String>, sqlx::Error> {
    let opening: Vec<String> = plans.opening(chat_id).map(|(code, _)| code.to_string()).collect();
    sqlx::query_scalar(
        "SELECT plan FROM entitlements WHERE user_id = $1 AND status = 'active' AND plan = ANY($2)
         ORDER BY expires_at DESC NULLS LAST LIMIT 1",
    )
    .bind(user_id)
    .bind(&opening)
    .fetch_optional(conn)
    .await
}

/// The plan of the entitlement of `user_id` that opens `chat_id` and changed last (the one whose
/// end is told), if any.
async fn latest_plan(
    conn: &mut PgConnection,
    plans: &Plans,
    user_id: i64,
    chat_id: i64,
) -> Result<Option<String>, sqlx::Error> {
    let opening: Vec<String> = plans.opening(chat_id).map(|(code, _)| code.to_string()).collect();
    sqlx::query_scalar(
        "SELECT plan FROM entitlements WHERE user_id = $1 AND plan = ANY($2) ORDER BY updated_at DESC, id DESC LIMIT 1",
    )
    .bind(user_id)
    .bind(&opening)
    .fetch_optional(conn)
    .await
}

/// Whether a status is one of somebody in the chat.
pub fn is_in(status: &str) -> bool {
    matches!(status, "creator" | "administrator" | "member" | "restricted")
}

/// Runs one attempt of a [`SyncAccess`] job.
pub async fn sync(billing: &Billing, job: &Job<EntitlementsJob>, access: &SyncAccess) -> Result<Completed, JobError> {
    let SyncAccess { user_id, chat_id } = *access;
    let (entitling, known, member, latest) = {
        let mut conn = billing.pool.acquire().await?;
        (
            entitling_plan(&mut conn, &billing.plans, user_id, chat_id).await?,
            store::access_of(&mut conn, user_id, chat_id).await?,
            store::member_status(&mut conn, chat_id, user_id).await?,
            latest_plan(&mut conn, &billing.plans, user_id, chat_id).await?,
        )
    };
    let in_chat = member.as_deref().is_some_and(is_in);
    let call = telegram::client::TIMEOUT;
    if let Some(plan) = entitling {
        if in_chat {
            return apply_once(&billing.pool, job, async |tx| {
                store::record(tx.conn(), user_id, chat_id, true, None, "member").await
            })
            .await;
        }
        let unused = known
            .as_ref()
            .and_then(|k| k.valid_link(Utc::now() + TimeDelta::hours(1)));
        if unused.is_some() {
            return complete_unchanged(&billing.pool, job).await;
        }
        if let Some(old) = known.as_ref().and_then(|k| k.invite_link.as_deref()) {
            billing.hold(job, call).await?;
            billing.telegram.revoke_invite_link(chat_id, old).await?;
        }
        let expires_at = Utc::now() + LINK_TTL;
        billing.hold(job, call).await?;
        let link = billing
            .telegram
            .create_invite_link(chat_id, &format!("paygate user {user_id}"), expires_at)
            .await?;
        return apply_once(&billing.pool, job, async |tx| {
            store::issue_link(tx.conn(), &link, chat_id, user_id).await?;
            store::record_link(tx.conn(), user_id, chat_id, &link, expires_at).await?;
            let plan_name = billing.plans.get(&plan).map_or(plan.as_str(), |p| p.name.as_str());
            let message = SendMessage {
                buttons: vec![vec![Button::url(billing.texts.get(Text::JoinButton), &link)]],
                ..to(user_id, billing.texts.render(Text::AccessLink, &[("plan", plan_name)]))
            };
            enqueue(tx.conn(), &NewJob::new(&message, format!("access_link:{link}"))).await?;
            counters::add(tx.conn(), metrics::ACCESS_CHANGES, "action=\"granted\",reason=\"link\"").await
        })
        .await;
    }
    // Not entitled: nothing to undo for a user the bot never let in and never saw in the chat.
    if known.is_none() && member.is_none() {
        return complete_unchanged(&billing.pool, job).await;
    }
    if let Some(link) = known.as_ref().and_then(|k| k.invite_link.as_deref()) {
        billing.hold(job, call).await?;
        billing.telegram.revoke_invite_link(chat_id, link).await?;
    }
    billing.hold(job, call).await?;
    let status = billing.telegram.member_status(chat_id, user_id).await?;
    // A user the records still have in the chat but Telegram has out was most likely removed by
    // an attempt that crashed before its record: they are told now, as they would have been.
    let (outcome, removed) = match status {
        "creator" | "administrator" => ("kept_admin", false),
        "member" | "restricted" => {
            billing.hold(job, call).await?;
            billing.telegram.remove_member(chat_id, user_id).await?;
            ("removed", true)
        }
        _ if in_chat => ("removed", true),
        _ => ("not_member", false),
    };
    apply_once(&billing.pool, job, async |tx| {
        store::record(tx.conn(), user_id, chat_id, false, None, outcome).await?;
        let now_status = if removed { "left" } else { status };
        store::note_member(tx.conn(), chat_id, user_id, now_status, Utc::now()).await?;
        if removed {
            // The plan whose end this is; for a user who never had one, the chat's first plan.
            let plan_name = latest
                .as_deref()
                .and_then(|code| billing.plans.get(code))
                .or_else(|| billing.plans.opening(chat_id).next().map(|(_, p)| p))
                .map_or(String::new(), |p| p.name.clone());
            let text = billing.texts.render(Text::AccessRemoved, &[("plan", &plan_name)]);
            let message = SendMessage {
                buttons: vec![vec![Button::callback(
                    billing.texts.get(Text::PlansButton),
                    Choice::Plans.data(),
                )]],
                ..to(user_id, text)
            };
            enqueue(
                tx.conn(),
                &NewJob::new(&message, format!("access_removed:{}", job.logical_key)),
            )
            .await?;
            counters::add(
                tx.conn(),
                metrics::ACCESS_CHANGES,
                "action=\"removed\",reason=\"no_access\"",
            )
            .await?;
        }
        Ok::<(), sqlx::Error>(())
    })
    .await
}

/// Runs one attempt of a [`JoinRequest`] job: approved for a user with access, declined (and
/// told how to get access) for anyone else.
pub async fn answer_join_request(
    billing: &Billing,
    job: &Job<EntitlementsJob>,
    request: &JoinRequest,
) -> Result<Completed, JobError> {
    let JoinRequest { chat_id, user_id } = *request;
    let entitling = entitling_plan(&mut *billing.pool.acquire().await?, &billing.plans, user_id, chat_id).await?;
    billing.hold(job, telegram::client::TIMEOUT).await?;
    billing
        .telegram
        .answer_join_request(chat_id, user_id, entitling.is_some())
        .await?;
    apply_once(&billing.pool, job, async |tx| {
        if entitling.is_some() {
            store::record(tx.conn(), user_id, chat_id, true, None, "member").await?;
            counters::add(
                tx.conn(),
                metrics::ACCESS_CHANGES,
                "action=\"granted\",reason=\"join_request\"",
            )
            .await
        } else {
            let message = SendMessage {
                buttons: vec![vec![Button::callback(
                    billing.texts.get(Text::PlansButton),
                    Choice::Plans.data(),
                )]],
                ..to(user_id, billing.texts.get(Text::JoinDeclined))
            };
            enqueue(
                tx.conn(),
                &NewJob::new(&message, format!("declined:{}", job.logical_key)),
            )
            .await?;
            counters::add(
                tx.conn(),
                metrics::ACCESS_CHANGES,
                "action=\"refused\",reason=\"join_request_without_access\"",
            )
            .await
        }
    })
    .await
}

fn to(chat_id: i64, text: String) -> SendMessage {
    SendMessage {
        chat_id,
        text,
        parse_mode: None,
        buttons: Vec::new(),
        invoice: None,
        broadcast_id: None,
    }
}
