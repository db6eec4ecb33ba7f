//! Paid chats: the groups and channels the bot administers, their members and invite links, as
//! Telegram keeps them. `createChatInviteLink`, `revokeChatInviteLink`, `banChatMember`,
//! `unbanChatMember`, `getChatMember`, `approveChatJoinRequest`, `declineChatJoinRequest`;
//! joining by a link (`POST /sandbox/join`) and asking to join (`POST /sandbox/request-join`),
//! each posted to the webhook as Telegram posts `chat_member` and `chat_join_request`.
//!
//! A chat the fake has not heard of exists, with the bot as its administrator, the first time it
//! is named (a test or `dev` configures chat ids, not chats); [`FakeTelegram::delete_chat`] and
//! [`FakeTelegram::take_admin_rights`] make it refuse as Telegram would.

#[allow(unused_imports)]
use super::*;

/// FakeChat is one group or channel.
#[derive(Debug, Default)]
pub(super) struct FakeChat {
    /// Members by user id: `creator`, `administrator`, `member`, `restricted`, `left`, `kicked`.
    pub(super) members: HashMap<i64, String>,
    pub(super) links: Vec<FakeLink>,
    /// Users waiting for approval.
    pub(super) join_requests: HashSet<i64>,
    /// Whether the bot may manage links and members here.
    pub(super) bot_is_admin: bool,
    pub(super) deleted: bool,
}

/// FakeLink is an invite link the bot made.
#[derive(Debug, Clone)]
pub(super) struct FakeLink {
    pub(super) link: String,
    pub(super) name: Option<String>,
    pub(super) expire_date: Option<i64>,
    pub(super) member_limit: Option<i64>,
    pub(super) joined: Vec<i64>,
    pub(super) revoked: bool,
}

impl FakeLink {
    fn json(&self) -> Value {
        let mut link = json!({
            "invite_link": self.link,
            "creator": crate::telegram_updates::bot_user(),
            "creates_join_request": false,
            "is_primary": false,
            "is_revoked": self.revoked,
        });
        if let Some(name) = &self.name {
            link["name"] = json!(name);
        }
        if let Some(date) = self.expire_date {
            link["expire_date"] = json!(date);
        }
        if let Some(limit) = self.member_limit {
            link["member_limit"] = json!(limit);
        }
        link
    }
}

/// The chat `chat_id` for a method that needs the bot to administer it, or Telegram's
/// description of the refusal (a 400).
fn managed(state: &mut State, chat_id: Option<i64>) -> Result<&mut FakeChat, &'static str> {
    let Some(chat_id) = chat_id.filter(|id| *id < 0) else {
        return Err("Bad Request: chat not found");
    };
    let chat = state.chats.entry(chat_id).or_insert_with(|| FakeChat {
        bot_is_admin: true,
        ..FakeChat::default()
    });
    if chat.deleted {
        return Err("Bad Request: chat not found");
    }
    if !chat.bot_is_admin {
        return Err("Bad Request: not enough rights to manage chat invite link");
    }
    Ok(chat)
}

pub(super) fn create_chat_invite_link(shared: &Shared, params: &Params) -> poem::Response {
    let mut state = shared.state.lock().unwrap();
    let chat = match managed(&mut state, params.int("chat_id")) {
        Ok(chat) => chat,
        Err(refusal) => return error(400, refusal, None),
    };
    let member_limit = params.int("member_limit");
    if member_limit.is_some_and(|n| !(1..=99_999).contains(&n)) {
        return error(400, "Bad Request: MEMBER_LIMIT_INVALID", None);
    }
    let link = FakeLink {
        link: format!("https://t.me/+{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        name: params.str("name").map(str::to_string),
        expire_date: params.int("expire_date"),
        member_limit,
        joined: Vec::new(),
        revoked: false,
    };
    let answer = link.json();
    chat.links.push(link);
    ok(answer)
}

pub(super) fn revoke_chat_invite_link(shared: &Shared, params: &Params) -> poem::Response {
    let mut state = shared.state.lock().unwrap();
    let chat = match managed(&mut state, params.int("chat_id")) {
        Ok(chat) => chat,
        Err(refusal) => return error(400, refusal, None),
    };
    let wanted = params.str("invite_link").unwrap_or_default();
    match chat.links.iter_mut().find(|l| l.link == wanted) {
        Some(link) => {
            link.revoked = true;
            ok(link.json())
        }
        None => error(400, "Bad Request: INVITE_HASH_EXPIRED", None),
    }
}

/// The managed chat and the user a member method names (`chat_id`, `user_id`), or Telegram's
/// description of the refusal (a 400).
fn member_of<'a>(state: &'a mut State, params: &Params) -> Result<(&'a mut FakeChat, i64, i64), &'static str> {
    let chat_id = params.int("chat_id");
    let chat = managed(state, chat_id)?;
    let user_id = params.int("user_id").ok_or("Bad Request: PARTICIPANT_ID_INVALID")?;
    Ok((chat, chat_id.unwrap_or_default(), user_id))
}

/// `banChatMember`; returns the answer and, for a change, the `chat_member` update Telegram
/// posts about it.
pub(super) fn ban_chat_member(shared: &Shared, params: &Params) -> (poem::Response, Option<Value>) {
    let update_id = shared.next_update_id();
    let mut state = shared.state.lock().unwrap();
    let (chat, chat_id, user_id) = match member_of(&mut state, params) {
        Ok(found) => found,
        Err(refusal) => return (error(400, refusal, None), None),
    };
    let old = chat.members.get(&user_id).cloned().unwrap_or_else(|| "left".into());
    if matches!(old.as_str(), "creator" | "administrator") {
        return (
            error(400, "Bad Request: user is an administrator of the chat", None),
            None,
        );
    }
    chat.members.insert(user_id, "kicked".into());
    let update = (old != "kicked")
        .then(|| crate::telegram_updates::chat_member(update_id, chat_id, user_id, &old, "kicked", None));
    (ok(json!(true)), update)
}

/// `unbanChatMember`; returns the answer and, for a change, the `chat_member` update Telegram
/// posts about it.
pub(super) fn unban_chat_member(shared: &Shared, params: &Params) -> (poem::Response, Option<Value>) {
    let update_id = shared.next_update_id();
    let mut state = shared.state.lock().unwrap();
    let (chat, chat_id, user_id) = match member_of(&mut state, params) {
        Ok(found) => found,
        Err(refusal) => return (error(400, refusal, None), None),
    };
    let only_if_banned = params.bool("only_if_banned").unwrap_or(false);
    let old = chat.members.get(&user_id).cloned();
    // Without only_if_banned Telegram removes a member too.
    let lifted = match old.as_deref() {
        Some("kicked") => true,
        Some("member" | "restricted") => !only_if_banned,
        _ => false,
    };
    if !lifted {
        return (ok(json!(true)), None);
    }
    chat.members.insert(user_id, "left".into());
    let old = old.unwrap_or_default();
    let update = crate::telegram_updates::chat_member(update_id, chat_id, user_id, &old, "left", None);
    (ok(json!(true)), Some(update))
}

pub(super) fn get_chat_member(shared: &Shared, params: &Params) -> poem::Response {
    let mut state = shared.state.lock().unwrap();
    let (chat, _, user_id) = match member_of(&mut state, params) {
        Ok(found) => found,
        Err(refusal) => return error(400, refusal, None),
    };
    let status = chat.members.get(&user_id).cloned().unwrap_or_else(|| "left".into());
    ok(member_json(user_id, &status))
}

/// A `ChatMember` of `status`, with every field Telegram sends for it.
pub(super) fn member_json(user_id: i64, status: &str) -> Value {
    let user = crate::telegram_updates::user_json(user_id);
    match status {
        "creator" => json!({"status": "creator", "user": user, "is_anonymous": false}),
        "administrator" => json!({
            "status": "administrator", "user": user, "can_be_edited": false, "is_anonymous": false,
            "can_manage_chat": true, "can_delete_messages": true, "can_manage_video_chats": true,
            "can_restrict_members": true, "can_promote_members": false, "can_change_info": true,
            "can_invite_users": true, "can_post_stories": false, "can_edit_stories": false,
            "can_delete_stories": false,
        }),
        "kicked" => json!({"status": "kicked", "user": user, "until_date": 0}),
        status => json!({"status": status, "user": user}),
    }
}

/// Approves or declines `user_id`'s request to join; returns the chat and user, or Telegram's
/// description of the refusal (a 400).
pub(super) fn answer_join_request(shared: &Shared, params: &Params, approve: bool) -> Result<(i64, i64), &'static str> {
    let mut state = shared.state.lock().unwrap();
    let chat_id = params.int("chat_id").unwrap_or_default();
    let chat = managed(&mut state, Some(chat_id))?;
    let user_id = params.int("user_id").unwrap_or_default();
    if !chat.join_requests.remove(&user_id) {
        return Err("Bad Request: HIDE_REQUESTER_MISSING");
    }
    if approve {
        chat.members.insert(user_id, "member".into());
    }
    Ok((chat_id, user_id))
}

/// `user_id` opens `link`: joins its chat if the link lets them (not revoked, not expired, not
/// used up). Returns the chat and the update Telegram posts, or why Telegram refuses.
pub(super) fn join_by_link(shared: &Shared, user_id: i64, link: &str) -> Result<Value, String> {
    let update_id = shared.next_update_id();
    let mut state = shared.state.lock().unwrap();
    let now = unix_now() as i64;
    let (chat_id, chat) = state
        .chats
        .iter_mut()
        .find(|(_, c)| c.links.iter().any(|l| l.link == link))
        .ok_or("INVITE_HASH_INVALID: no chat has this link")?;
    if chat.deleted {
        return Err("INVITE_HASH_INVALID: the chat was deleted".into());
    }
    let old = chat.members.get(&user_id).cloned().unwrap_or_else(|| "left".into());
    if old == "kicked" {
        return Err("USER_BANNED_IN_CHANNEL".into());
    }
    if matches!(old.as_str(), "member" | "administrator" | "creator") {
        return Err("USER_ALREADY_PARTICIPANT".into());
    }
    // As Telegram counts `member_limit`: members at once who joined by the link, not joins.
    let members = &chat.members;
    let found = chat.links.iter_mut().find(|l| l.link == link).expect("found above");
    if found.revoked || found.expire_date.is_some_and(|at| at <= now) {
        return Err("INVITE_HASH_EXPIRED".into());
    }
    let inside = (found.joined.iter())
        .filter(|u| {
            members
                .get(u)
                .is_some_and(|s| matches!(s.as_str(), "member" | "restricted"))
        })
        .count() as i64;
    if found.member_limit.is_some_and(|limit| inside >= limit) {
        return Err("USERS_TOO_MUCH: the link is at its member limit".into());
    }
    found.joined.push(user_id);
    let invite = found.json();
    chat.members.insert(user_id, "member".into());
    Ok(crate::telegram_updates::chat_member(
        update_id,
        *chat_id,
        user_id,
        &old,
        "member",
        Some(invite),
    ))
}

/// `user_id` asks to join `chat_id`; returns the update Telegram posts.
pub(super) fn request_to_join(shared: &Shared, user_id: i64, chat_id: i64) -> Result<Value, String> {
    let update_id = shared.next_update_id();
    let mut state = shared.state.lock().unwrap();
    let chat = state.chats.entry(chat_id).or_insert_with(|| FakeChat {
        bot_is_admin: true,
        ..FakeChat::default()
    });
    if chat.deleted {
        return Err("the chat was deleted".into());
    }
    chat.join_requests.insert(user_id);
    Ok(crate::telegram_updates::chat_join_request(update_id, chat_id, user_id))
}
