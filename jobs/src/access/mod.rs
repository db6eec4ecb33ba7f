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
use crate::bot::{self, Choice, Text};
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
    /// Whether an unused link still valid is sent again (the user asked for their links).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
}

impl SyncAccess {
    /// The job that checks `user_id` in `chat_id` and acts (a link kept unused is not sent again).
    pub fn check(user_id: i64, chat_id: i64) -> SyncAccess {
        SyncAccess {
            user_id,
            chat_id,
            resend: false,
        }
    }
}

/// JoinRequest is the `entitlements` job that answers `user_id`'s request to join `chat_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub chat_id: i64,
    pub user_id: i64,
}

/// Queues the access jobs a recorded change calls for: one per chat of its plan (and of the plan
/// before, if that changed) and user (and the user before, if the entitlement changed hands),
/// when the entitlement became or stopped being active, or changed plan or user. Run it in the
/// change's transaction.
pub async fn follow(conn: &mut PgConnection, plans: &Plans, change: &Changed) -> Result<(), sqlx::Error> {
    let now = &change.entitlement;
    let before = change.before.as_ref();
    let was_active = before.is_some_and(|b| b.status == Status::Active);
    let is_active = now.status == Status::Active;
    let same_holder = before.is_some_and(|b| b.plan == now.plan && b.user_id == now.user_id);
    if was_active == is_active && same_holder {
        return Ok(());
    }
    // Every chat of the plan now and of the plan before, for the holder now and the one before.
    let mut pairs: Vec<(i64, i64)> = Vec::new();
    for (user_id, code) in [(now.user_id, &now.plan)]
        .into_iter()
        .chain(before.map(|b| (b.user_id, &b.plan)))
    {
        let chats = plans.get(code).map_or(&[][..], |p| p.chats.as_slice());
        pairs.extend(chats.iter().map(|chat| (user_id, *chat)));
    }
    pairs.sort_unstable();
    pairs.dedup();
    for (user_id, chat_id) in pairs {
        let job = EntitlementsJob::SyncAccess(SyncAccess::check(user_id, chat_id));
        let key = format!("access:{}:{user_id}:{chat_id}", change.change_id);
        enqueue(conn, &NewJob::new(&job, key)).await?;
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
         ORDER BY expires_at DESC NULLS LAST, plan LIMIT 1",
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

/// The statuses of somebody in a chat (Telegram's `ChatMember` kinds).
pub const IN_CHAT: [&str; 4] = ["creator", "administrator", "member", "restricted"];

/// Whether a status is one of somebody in the chat.
pub fn is_in(status: &str) -> bool {
    IN_CHAT.contains(&status)
}

/// Seen is what one access job knows of a user and a chat before it calls Telegram; its effect
/// is recorded only if, under the pair's lock, nothing of it changed meanwhile ([`Seen::same`]).
#[derive(Debug, Clone)]
struct Seen {
    /// The plan of an active entitlement that opens the chat, if any.
    entitling: Option<String>,
    access: Option<store::Access>,
    member: Option<String>,
    /// The links made for the user in the chat and not revoked, oldest first.
    links: Vec<String>,
}

impl Seen {
    async fn read(conn: &mut PgConnection, plans: &Plans, user_id: i64, chat_id: i64) -> Result<Seen, sqlx::Error> {
        Ok(Seen {
            entitling: entitling_plan(conn, plans, user_id, chat_id).await?,
            access: store::access_of(conn, user_id, chat_id).await?,
            member: store::member_status(conn, chat_id, user_id).await?,
            links: store::unrevoked_links(conn, user_id, chat_id).await?,
        })
    }

    fn in_chat(&self) -> bool {
        self.member.as_deref().is_some_and(is_in)
    }

    /// Whether `now` is what this was, once the job's own writes (`revoked` links, a link it
    /// made, its note of the membership) are allowed for. Which plan entitles does not matter,
    /// only whether one does.
    fn same(&self, now: &Seen, revoked: &[String], made: Option<&str>, noted_member: bool) -> bool {
        let mut then = self.clone();
        then.links.retain(|l| !revoked.contains(l));
        if let Some(access) = then.access.as_mut()
            && access.invite_link.as_ref().is_some_and(|l| revoked.contains(l))
        {
            access.invite_link = None;
            access.link_expires_at = None;
        }
        let links: Vec<&String> = now.links.iter().filter(|l| Some(l.as_str()) != made).collect();
        then.entitling.is_some() == now.entitling.is_some()
            && then.access == now.access
            && (noted_member || then.member == now.member)
            && then.links.iter().collect::<Vec<_>>() == links
    }
}

/// Done is what an access job did at Telegram.
enum Done {
    /// Nothing: the user is where they should be, holding what they need.
    Nothing,
    /// The user is in the chat and entitled to be.
    Member,
    /// A new invite link, valid until the time given.
    Link(String, chrono::DateTime<Utc>),
    /// The unused link, to be sent again.
    Resend(String),
    /// Out of the chat (`status` as Telegram now has it: `left`, or an administrator kept);
    /// `removed` when they were in it, as Telegram or the records had it: they are told.
    Out { status: &'static str, removed: bool },
}

/// Runs one attempt of a [`SyncAccess`] job: revokes the links the user no longer needs, then
/// gives a link to a user entitled and not in the chat, or removes one in it without access.
pub async fn sync(billing: &Billing, job: &Job<EntitlementsJob>, access: &SyncAccess) -> Result<Completed, JobError> {
    let SyncAccess {
        user_id,
        chat_id,
        resend,
    } = *access;
    let plans = &billing.plans;
    let (mut seen, latest) = {
        let mut conn = billing.pool.acquire().await?;
        (
            Seen::read(&mut conn, plans, user_id, chat_id).await?,
            latest_plan(&mut conn, plans, user_id, chat_id).await?,
        )
    };
    let call = telegram::client::TIMEOUT;
    // The one link worth keeping: unused, not revoked, valid for another hour, of a user to be
    // let in.
    let keep = match (&seen.entitling, &seen.access) {
        (Some(_), Some(known)) if !seen.in_chat() => known
            .valid_link(Utc::now() + TimeDelta::hours(1))
            .filter(|link| seen.links.iter().any(|l| l == link))
            .map(str::to_string),
        _ => None,
    };
    // Every other link goes: used (a link lets a removed user back in), superseded, or of a user
    // who is in the chat or has no access.
    let revoke: Vec<String> = seen
        .links
        .iter()
        .filter(|l| Some(*l) != keep.as_ref())
        .cloned()
        .collect();
    for link in &revoke {
        billing.hold(job, call).await?;
        billing.telegram.revoke_invite_link(chat_id, link).await?;
    }
    let removing = seen.access.as_ref().is_some_and(|a| a.outcome == "removing");
    let done = match (&seen.entitling, seen.in_chat()) {
        (Some(_), true) => Done::Member,
        (Some(_), false) => match keep.clone() {
            Some(link) if resend => Done::Resend(link),
            Some(_) => Done::Nothing,
            None => {
                if removing {
                    // A removal of the bot's that was cut short may have left its ban.
                    billing.hold(job, call).await?;
                    billing.telegram.unban(chat_id, user_id).await?;
                }
                let expires_at = Utc::now() + LINK_TTL;
                billing.hold(job, call).await?;
                let link = billing
                    .telegram
                    .create_invite_link(chat_id, &format!("paygate user {user_id}"), expires_at)
                    .await?;
                Done::Link(link, expires_at)
            }
        },
        // Nothing to undo for a user the bot never let in and never saw in the chat.
        (None, _) if seen.access.is_none() && seen.member.is_none() => Done::Nothing,
        (None, in_chat) => {
            billing.hold(job, call).await?;
            match billing.telegram.member_status(chat_id, user_id).await? {
                status @ ("creator" | "administrator") => Done::Out { status, removed: false },
                "member" | "restricted" => {
                    if !removing {
                        let mut conn = billing.pool.acquire().await?;
                        seen.access = Some(store::mark_removing(&mut conn, user_id, chat_id).await?);
                    }
                    billing.hold(job, call).await?;
                    billing.telegram.ban(chat_id, user_id).await?;
                    billing.hold(job, call).await?;
                    billing.telegram.unban(chat_id, user_id).await?;
                    Done::Out {
                        status: "left",
                        removed: true,
                    }
                }
                // The bot's own ban, of an attempt whose unban never came: lifted, and told.
                "kicked" if removing => {
                    billing.hold(job, call).await?;
                    billing.telegram.unban(chat_id, user_id).await?;
                    Done::Out {
                        status: "left",
                        removed: true,
                    }
                }
                // An administrator's ban stays.
                "kicked" => Done::Out {
                    status: "kicked",
                    removed: false,
                },
                // Out already. Removed by an attempt that was cut short after the calls, or in
                // the chat as far as the records knew: told now, as they would have been.
                _ => Done::Out {
                    status: "left",
                    removed: removing || in_chat,
                },
            }
        }
    };
    apply_once(&billing.pool, job, async |tx| {
        lock(tx.conn(), user_id, chat_id).await?;
        store::revoked(tx.conn(), &revoke).await?;
        if let Done::Link(link, _) = &done {
            store::issue_link(tx.conn(), link, chat_id, user_id).await?;
        }
        if let Done::Out { status, .. } = &done {
            store::note_by_bot(tx.conn(), chat_id, user_id, status).await?;
        }
        // Changed meanwhile (a payment, a refund, a join, another job): what was done is recorded
        // above, and a new job acts on what is true now, with nothing sent by this one. (A join
        // after a removal queues its own job.)
        let now = Seen::read(tx.conn(), plans, user_id, chat_id).await?;
        let made = match &done {
            Done::Link(link, _) => Some(link.as_str()),
            _ => None,
        };
        if !seen.same(&now, &revoke, made, matches!(done, Done::Out { .. })) {
            let again = EntitlementsJob::SyncAccess(SyncAccess { resend, ..*access });
            return tx
                .enqueue(&NewJob::new(&again, format!("resync:{}", job.logical_key)))
                .await
                .map(drop);
        }
        let plan = seen.entitling.as_deref().unwrap_or_default();
        match done {
            Done::Nothing => Ok(()),
            Done::Member => store::record(tx.conn(), user_id, chat_id, true, None, "member").await,
            Done::Resend(link) => {
                let message = link_message(billing, plan, user_id, &link);
                let key = format!("access_link:{link}:{}", job.logical_key);
                tx.enqueue(&NewJob::new(&message, key)).await.map(drop)
            }
            Done::Link(link, expires_at) => {
                store::record_link(tx.conn(), user_id, chat_id, &link, expires_at).await?;
                let message = link_message(billing, plan, user_id, &link);
                enqueue(tx.conn(), &NewJob::new(&message, format!("access_link:{link}"))).await?;
                counters::add(tx.conn(), metrics::ACCESS_CHANGES, "action=\"granted\",reason=\"link\"").await
            }
            Done::Out { status, removed } => {
                let outcome = match (status, removed) {
                    ("creator" | "administrator", _) => "kept_admin",
                    ("kicked", _) => "banned",
                    (_, true) => "removed",
                    (_, false) => "not_member",
                };
                store::record(tx.conn(), user_id, chat_id, false, None, outcome).await?;
                if !removed {
                    return Ok(());
                }
                // The plan whose end this is; for a user who never had one, the chat's first plan.
                let plan_name = latest
                    .as_deref()
                    .and_then(|code| plans.get(code))
                    .or_else(|| plans.opening(chat_id).next().map(|(_, p)| p))
                    .map_or(String::new(), |p| p.name.clone());
                let text = billing.texts.render(Text::AccessRemoved, &[("plan", &plan_name)]);
                let message = with_plans_button(billing, user_id, text);
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
                .await
            }
        }
    })
    .await
}

/// Takes the transaction-scoped lock of one user in one chat, which every access job's effect
/// holds while it compares what it saw with what is true and records what it did.
async fn lock(conn: &mut PgConnection, user_id: i64, chat_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("chat_access:{user_id}:{chat_id}"))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Runs one attempt of a [`JoinRequest`] job: approved for a user with access, declined (and
/// told how to get access) for anyone else. A request no longer there changes nothing. An
/// approved user's join comes as a `chat_member` update, which checks them again.
pub async fn answer_join_request(
    billing: &Billing,
    job: &Job<EntitlementsJob>,
    request: &JoinRequest,
) -> Result<Completed, JobError> {
    let JoinRequest { chat_id, user_id } = *request;
    let entitling = entitling_plan(&mut *billing.pool.acquire().await?, &billing.plans, user_id, chat_id).await?;
    billing.hold(job, telegram::client::TIMEOUT).await?;
    let approve = entitling.is_some();
    if !billing.telegram.answer_join_request(chat_id, user_id, approve).await? {
        return complete_unchanged(&billing.pool, job).await;
    }
    apply_once(&billing.pool, job, async |tx| {
        if approve {
            return counters::add(
                tx.conn(),
                metrics::ACCESS_CHANGES,
                "action=\"granted\",reason=\"join_request\"",
            )
            .await;
        }
        let message = with_plans_button(billing, user_id, billing.texts.get(Text::JoinDeclined));
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
    })
    .await
}

/// `text` to `user_id`, above a button that lists the plans: what a user without access is told.
fn with_plans_button(billing: &Billing, user_id: i64, text: String) -> SendMessage {
    SendMessage {
        buttons: vec![vec![Button::callback(
            billing.texts.get(Text::PlansButton),
            Choice::Plans.data(),
        )]],
        ..bot::text_message(user_id, text)
    }
}

/// The message that gives `user_id` their invite `link`, opened by `plan`.
fn link_message(billing: &Billing, plan: &str, user_id: i64, link: &str) -> SendMessage {
    let plan_name = billing.plans.get(plan).map_or(plan, |p| p.name.as_str());
    SendMessage {
        buttons: vec![vec![Button::url(billing.texts.get(Text::JoinButton), link)]],
        ..bot::text_message(user_id, billing.texts.render(Text::AccessLink, &[("plan", plan_name)]))
    }
}

/// The chats among `chats` that `user_id` is in, as the membership records say.
pub async fn joined(conn: &mut PgConnection, user_id: i64, chats: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT chat_id FROM chat_members WHERE user_id = $1 AND chat_id = ANY($2) AND status = ANY($3)")
        .bind(user_id)
        .bind(chats)
        .bind(&IN_CHAT[..])
        .fetch_all(conn)
        .await
}
