//! Paid chats through the fake Bot API, as subscribers and Telegram meet them: a payment opens
//! the plan's chat by a single-use link, a link used by somebody else lets nobody in for long
//! (the joiner is removed, the owner gets a new link), a join request without access is declined,
//! overlapping entitlements keep a user in, a refund or an expiry removes them (and revokes their
//! unused link) and tells them, the audit finds strays and `--fix` removes them, and a chat where
//! the bot lost its rights, or that was deleted, leaves a dead job that says so and ops can retry.

use std::time::{Duration, Instant};

use e2e::{TELEGRAM_WEBHOOK_SECRET, World};
use jobs::billing::Plans;
use sandbox::telegram::{Limits, SentMessage};
use sandbox::telegram_updates::{self as updates, post_update};

const WAIT: Duration = Duration::from_secs(20);
const CLUB_CHAT: i64 = -100_111;
const PLUS_CHAT: i64 = -100_222;
/// Two one-off Stars plans: the club, and one that also opens a second chat.
const PAID_PLANS: &str = r#"{
    "club": {"name": "Club", "entitlement": "club", "period_days": 7, "stars_price": 50, "chats": [-100111]},
    "club_plus": {"name": "Club Plus", "entitlement": "club", "period_days": 14, "stars_price": 90, "chats": [-100111, -100222]}}"#;

struct Paid {
    world: World,
    api: String,
    http: reqwest::Client,
    worker: e2e::InProcessWorker,
}

async fn paid_world() -> Paid {
    let world = World::new(Limits::default()).await;
    let plans = Plans::parse(PAID_PLANS).unwrap();
    let api = world
        .start_api_with(api::Config {
            plans: plans.clone(),
            ..world.api_config()
        })
        .await;
    world.set_bot_webhook(&api).await;
    let worker = world.start_worker(worker::config::Config {
        plans,
        ..world.worker_config(30.0)
    });
    Paid {
        world,
        api,
        http: reqwest::Client::new(),
        worker,
    }
}

impl Paid {
    /// `user` pays `plan` in Stars (charge `charge`), as Telegram posts it.
    async fn pay(&self, update_id: i64, user: i64, plan: &str, amount: u32, charge: &str) {
        self.world.telegram.record_star_payment(user, charge);
        let paid = updates::successful_payment(update_id, user, plan, amount, charge, None);
        let webhook = format!("{}/webhooks/telegram", self.api);
        let answer = post_update(&self.http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &paid).await;
        assert_eq!(answer.status(), 204);
    }

    /// Waits for a message to `user` whose text starts with `start`, and returns it.
    async fn told(&self, user: i64, start: &str) -> SentMessage {
        self.world.told(user, start, WAIT).await
    }

    /// The invite links sent to `user`, oldest first.
    fn links_to(&self, user: i64) -> Vec<String> {
        self.world
            .telegram
            .messages_to(user)
            .iter()
            .filter(|m| m.text.starts_with("🔑"))
            .filter_map(|m| {
                m.reply_markup.as_ref()?["inline_keyboard"][0][0]["url"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }

    async fn wait_links(&self, user: i64, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        while self.links_to(user).len() < n {
            assert!(
                Instant::now() < deadline,
                "{user} got fewer than {n} links: {:?}",
                self.world.telegram.texts_to(user)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.links_to(user)
    }

    async fn wait_status(&self, chat: i64, user: i64, status: &str) {
        let deadline = Instant::now() + WAIT;
        while self.world.telegram.status_in(chat, user) != status {
            assert!(
                Instant::now() < deadline,
                "{user} in {chat} is {}, not {status}",
                self.world.telegram.status_in(chat, user)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_plan_opens_its_chat_once_to_its_subscriber_and_closes_it_when_access_ends() {
    let paid = paid_world().await;
    let (ada, bob, cy) = (7101, 7102, 7103);

    // Ada pays: a single-use link to the club's chat, with a join button.
    paid.pay(1, ada, "club", 50, "stxADA1").await;
    let invite = paid.told(ada, "🔑 Your Club plan opens a private chat").await;
    let first = paid.wait_links(ada, 1).await[0].clone();
    assert_eq!(
        invite.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["text"],
        "Join the chat"
    );

    // Bob uses Ada's link: he is let in by Telegram, then removed, and Ada gets a new link.
    paid.world.telegram.join(bob, &first).await.unwrap();
    paid.wait_status(CLUB_CHAT, bob, "left").await;
    let links = paid.wait_links(ada, 2).await;
    assert_ne!(links[1], first);
    assert!(
        paid.world.telegram.join(bob, &first).await.is_err(),
        "the first link is revoked: Bob cannot come back by it"
    );
    paid.world.telegram.join(ada, &links[1]).await.unwrap();
    assert_eq!(paid.world.telegram.members(CLUB_CHAT), [ada]);
    wait_revoked(&paid, CLUB_CHAT, &links[1]).await;

    // Cy asks to join without access: declined, and told how to get it.
    paid.world.telegram.request_join(cy, CLUB_CHAT).await.unwrap();
    paid.told(cy, "That chat is for subscribers.").await;
    assert_eq!(paid.world.telegram.status_in(CLUB_CHAT, cy), "left");
    // Cy comes in by a link of an administrator's: checked like anyone, and removed.
    paid.world.telegram.put_member(CLUB_CHAT, cy, "member");
    let webhook = format!("{}/webhooks/telegram", paid.api);
    let joined = updates::chat_member(4, CLUB_CHAT, cy, "left", "member", None);
    post_update(&paid.http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &joined).await;
    paid.told(cy, "Your Club access has ended, so you have left its private chat")
        .await;
    paid.wait_status(CLUB_CHAT, cy, "left").await;

    // Ada also buys Club Plus: a link to its second chat only (she is in the first).
    paid.pay(2, ada, "club_plus", 90, "stxADA2").await;
    let links = paid.wait_links(ada, 3).await;
    let plus_link = links[2].clone();
    assert!(
        paid.world
            .telegram
            .invite_links_of(PLUS_CHAT)
            .iter()
            .any(|(l, _, _)| *l == plus_link),
        "the third link is the second chat's"
    );
    assert_eq!(
        paid.world.telegram.invite_links_of(CLUB_CHAT).len(),
        2,
        "no third link to the first"
    );

    // The club payment is refunded: Club Plus still opens the club's chat, so Ada stays.
    let refunded = updates::refunded_payment(3, ada, "club", 50, "stxADA1");
    post_update(&paid.http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &refunded).await;
    paid.told(ada, "Your Club access has ended: the payment was refunded.")
        .await;
    paid.world
        .wait_for_count(
            &format!(
                "SELECT count(*) FROM jobs j
                 JOIN entitlement_changes c ON j.logical_key = 'access:' || c.id || ':{ada}:{CLUB_CHAT}'
                 JOIN entitlements e ON e.id = c.entitlement_id
                 WHERE e.source = 'telegram_stars:stxADA1' AND c.status = 'revoked' AND j.state = 'completed'"
            ),
            1,
            WAIT,
        )
        .await;
    assert_eq!(paid.world.telegram.members(CLUB_CHAT), [ada]);
    assert_eq!(
        paid.world
            .count(&format!("SELECT count(*) FROM chat_access WHERE user_id = {ada} AND chat_id = {CLUB_CHAT} AND outcome = 'member'"))
            .await,
        1
    );

    // Club Plus runs out (its end moved back past the grace, then the expiry pass): Ada is
    // removed from the club's chat and told, and her unused link to the second is revoked.
    sqlx::query(
        "UPDATE entitlements SET expires_at = now() - interval '7 hours' WHERE source = 'telegram_stars:stxADA2'",
    )
    .execute(&paid.world.pool)
    .await
    .unwrap();
    jobs::billing::expiry::enqueue_due(&paid.world.pool, jobs::billing::expiry::DEFAULT_GRACE)
        .await
        .unwrap();
    paid.told(
        ada,
        "Your Club Plus access has ended, so you have left its private chat",
    )
    .await;
    paid.wait_status(CLUB_CHAT, ada, "left").await;
    wait_revoked(&paid, PLUS_CHAT, &plus_link).await;
    assert!(paid.world.telegram.join(ada, &plus_link).await.is_err());
    assert!(
        paid.world.telegram.join(ada, &links[1]).await.is_err(),
        "the link Ada joined by does not let her back in"
    );
    assert!(paid.world.telegram.members(CLUB_CHAT).is_empty());
    assert!(paid.world.telegram.members(PLUS_CHAT).is_empty());
    paid.worker.stop().await;
    assert_eq!(
        paid.world
            .count("SELECT value::bigint FROM counters WHERE name = 'access_changes_total' AND labels LIKE '%removed%'")
            .await,
        3,
        "Bob, Cy and Ada"
    );
}

/// Waits until the fake Bot API has `link` of `chat` revoked.
async fn wait_revoked(paid: &Paid, chat: i64, link: &str) {
    let deadline = Instant::now() + WAIT;
    while !(paid.world.telegram.invite_links_of(chat).iter()).any(|(l, revoked, _)| l == link && *revoked) {
        assert!(Instant::now() < deadline, "{link} was never revoked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_audit_finds_strays_and_fix_removes_them_but_never_an_administrator() {
    let paid = paid_world().await;
    let (stray, admin, member) = (7201, 7202, 7203);
    // Three in the chat whom no access job acted on (as when one died: a chat where the bot had
    // lost its rights): a stray, an administrator, and a subscriber.
    for (user, status) in [(stray, "member"), (admin, "administrator"), (member, "member")] {
        paid.world.telegram.put_member(CLUB_CHAT, user, status);
        sqlx::query("INSERT INTO chat_members (chat_id, user_id, status, changed_at) VALUES ($1, $2, $3, now())")
            .bind(CLUB_CHAT)
            .bind(user)
            .bind(status)
            .execute(&paid.world.pool)
            .await
            .unwrap();
    }
    // The subscriber pays for Club Plus: in the club's chat already, a link to the second.
    paid.pay(14, member, "club_plus", 90, "stxMEMBER").await;
    paid.wait_links(member, 1).await;

    let audit: serde_json::Value = e2e::get_json(
        &paid.http,
        &format!("{}/v1/ops/access/audit", paid.api),
        e2e::ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        audit,
        serde_json::json!({
            "members_without_access": [{"chat_id": CLUB_CHAT, "user_id": stray}],
            "entitled_not_in_chat": [{"chat_id": PLUS_CHAT, "user_id": member}],
        })
    );
    // Nobody was removed by the audit itself.
    assert_eq!(paid.world.telegram.members(CLUB_CHAT), [stray, admin, member]);

    let out = tokio::task::spawn_blocking({
        let url = paid.world.database_url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_worker-under-test"))
                .args(["access", "audit", "--fix"])
                .env("DATABASE_URL", url)
                .env("PLANS", PAID_PLANS)
                .output()
                .expect("running the worker binary")
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("members without access: 1"), "{printed}");
    paid.wait_status(CLUB_CHAT, stray, "left").await;
    paid.told(stray, "Your Club access has ended, so you have left its private chat")
        .await;

    // Checked like anyone without access (as a stale record would have it), the administrator
    // is kept.
    let mut tx = paid.world.pool.begin().await.unwrap();
    let check = jobs::billing::EntitlementsJob::SyncAccess(jobs::access::SyncAccess::check(admin, CLUB_CHAT));
    jobs::queue::enqueue(&mut tx, &jobs::queue::NewJob::new(&check, "check-the-admin"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    paid.world
        .wait_for_count(
            &format!("SELECT count(*) FROM chat_access WHERE user_id = {admin} AND outcome = 'kept_admin'"),
            1,
            WAIT,
        )
        .await;
    // A user an administrator banned, whose access then ends, stays banned.
    let banned = 7204;
    paid.world.telegram.put_member(CLUB_CHAT, banned, "kicked");
    sqlx::query("INSERT INTO chat_members (chat_id, user_id, status, changed_at) VALUES ($1, $2, 'member', now())")
        .bind(CLUB_CHAT)
        .bind(banned)
        .execute(&paid.world.pool)
        .await
        .unwrap();
    let mut tx = paid.world.pool.begin().await.unwrap();
    let check = jobs::billing::EntitlementsJob::SyncAccess(jobs::access::SyncAccess::check(banned, CLUB_CHAT));
    jobs::queue::enqueue(&mut tx, &jobs::queue::NewJob::new(&check, "check-the-banned"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    paid.world
        .wait_for_count(
            &format!("SELECT count(*) FROM chat_access WHERE user_id = {banned} AND outcome = 'banned'"),
            1,
            WAIT,
        )
        .await;
    assert_eq!(paid.world.telegram.status_in(CLUB_CHAT, banned), "kicked");
    paid.worker.stop().await;
    assert_eq!(paid.world.telegram.members(CLUB_CHAT), [admin, member]);
}

#[tokio::test]
async fn a_chat_lost_or_deleted_leaves_a_dead_job_that_says_so_and_ops_can_retry_it() {
    let paid = paid_world().await;
    paid.world.telegram.take_admin_rights(PLUS_CHAT);
    paid.world.telegram.delete_chat(CLUB_CHAT);
    paid.pay(21, 7301, "club_plus", 90, "stxRIGHTS").await;
    // Each chat's job dies at once, with Telegram's reason; nothing is recorded as done.
    for (chat, reason) in [(PLUS_CHAT, "not enough rights"), (CLUB_CHAT, "chat not found")] {
        paid.world
            .wait_for_count(
                &format!(
                    "SELECT count(*) FROM jobs WHERE state = 'dead' AND queue = 'entitlements'
                     AND payload @> '{{\"kind\": \"sync_access\", \"chat_id\": {chat}}}'
                     AND errors::text LIKE '%{reason}%'"
                ),
                1,
                WAIT,
            )
            .await;
    }
    assert_eq!(paid.world.count("SELECT count(*) FROM chat_access").await, 0);
    assert!(paid.links_to(7301).is_empty());

    // The bot is made an administrator again and ops retry the dead job: the link goes out.
    paid.world.telegram.give_admin_rights(PLUS_CHAT);
    let dead: i64 = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE state = 'dead' AND payload @> jsonb_build_object('chat_id', $1::bigint)",
    )
    .bind(PLUS_CHAT)
    .fetch_one(&paid.world.pool)
    .await
    .unwrap();
    jobs::queue::ops::retry(&paid.world.pool, dead, false).await.unwrap();
    let links = paid.wait_links(7301, 1).await;
    assert!(
        paid.world
            .telegram
            .invite_links_of(PLUS_CHAT)
            .iter()
            .any(|(l, _, _)| *l == links[0])
    );
    paid.worker.stop().await;
}

#[tokio::test]
async fn a_refund_while_the_link_is_being_made_sends_no_link_and_revokes_it() {
    let paid = paid_world().await;
    let user = 7401;
    // Telegram takes its time over the link; the refund comes meanwhile.
    paid.world
        .telegram
        .delay_method("createChatInviteLink", Duration::from_millis(1500));
    paid.pay(31, user, "club", 50, "stxRACE").await;
    paid.world
        .wait_for_count(
            "SELECT count(*) FROM jobs WHERE state = 'running' AND payload @> '{\"kind\": \"sync_access\"}'",
            1,
            WAIT,
        )
        .await;
    let webhook = format!("{}/webhooks/telegram", paid.api);
    let refunded = updates::refunded_payment(32, user, "club", 50, "stxRACE");
    post_update(&paid.http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &refunded).await;

    // The link made for a user who lost access meanwhile is not sent, and is revoked.
    let deadline = Instant::now() + WAIT;
    loop {
        let links = paid.world.telegram.invite_links_of(CLUB_CHAT);
        if links.len() == 1 && links[0].1 {
            break;
        }
        assert!(Instant::now() < deadline, "the link was never revoked: {links:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    paid.world
        .wait_for_count(
            "SELECT count(*) FROM jobs WHERE queue IN ('entitlements', 'notifications') AND state IN ('pending', 'running')",
            0,
            WAIT,
        )
        .await;
    assert!(
        paid.links_to(user).is_empty(),
        "{:?}",
        paid.world.telegram.texts_to(user)
    );
    assert_eq!(
        paid.world
            .count("SELECT count(*) FROM jobs WHERE logical_key LIKE 'resync:%'")
            .await,
        1,
        "the job that made the link saw the refund and handed over"
    );
    paid.worker.stop().await;
}
