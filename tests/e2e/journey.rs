//! The whole journey of two subscribers inside Telegram, through the fake Bot API and the fake
//! Stripe: `/start`, a plan, a Stars invoice paid, the invite link, the chat joined, `/status`, a
//! reminder, the expiry, removed and told; and by card: the Checkout link paid, the invite link
//! sent again from `/status`, the chat joined, the subscription deleted in Stripe, removed and
//! told.

use std::time::Duration;

use e2e::World;
use jobs::billing::Plans;
use sandbox::stripe::Trigger;
use sandbox::telegram::Limits;

use crate::bot::{Chat, buttons};

const WAIT: Duration = Duration::from_secs(20);
/// The paid chat both plans open.
const CHAT: i64 = -100_700;

/// The tests' plans, each opening [`CHAT`].
fn plans() -> Plans {
    let with_chat = e2e::PLANS
        .replace(r#""stars_price": 75}"#, r#""stars_price": 75, "chats": [-100700]}"#)
        .replace(r#""stars_price": 250"#, r#""stars_price": 250, "chats": [-100700]"#);
    let plans = Plans::parse(&with_chat).unwrap();
    assert!(
        plans.iter().all(|(_, plan)| plan.chats == [CHAT]),
        "both plans open the chat"
    );
    plans
}

/// The URL of the join button of the latest invite link `chat`'s user was sent.
fn latest_link(chat: &Chat<'_>) -> String {
    let message = (chat.world.telegram.messages_to(chat.user).into_iter().rev())
        .find(|m| m.text.starts_with("🔑"))
        .expect("an invite link");
    let [(label, url)] = buttons(&message).try_into().expect("one button");
    assert_eq!(label, "Join the chat");
    url
}

async fn joined(world: &World, user: i64) {
    world
        .wait_for_count(
            &format!(
                "SELECT count(*) FROM chat_members WHERE user_id = {user} AND chat_id = {CHAT} AND status = 'member'"
            ),
            1,
            WAIT,
        )
        .await;
}

#[tokio::test]
async fn subscribers_buy_join_are_reminded_and_are_removed_when_access_ends() {
    let world = World::new(Limits::default()).await;
    let api = world
        .start_api_receiving_stripe_with(api::Config {
            plans: plans(),
            ..world.api_config()
        })
        .await;
    world.set_bot_webhook(&api).await;
    let worker = world.start_worker(worker::config::Config {
        plans: plans(),
        ..world.worker_config(30.0)
    });
    let http = reqwest::Client::new();

    // Stars: /start, the week's pass, its invoice paid in Telegram's form.
    let stars = Chat {
        world: &world,
        user: 6101,
    };
    let welcome = stars.write("/start").await;
    assert!(welcome.text.starts_with("👋 Welcome!"), "{}", welcome.text);
    stars.press("plan:week_pass").await;
    let invoice = stars.press("stars:week_pass").await;
    let slug = invoice.invoice.as_ref().expect("an invoice")["link"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://t.me/$")
        .to_string();
    let paid = http
        .get(format!(
            "{}/sandbox/pay/{slug}?user_id={}",
            world.telegram.url(),
            stars.user
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    world
        .told(stars.user, "✅ Your Week pass access is active until", WAIT)
        .await;

    // The single-use link, and the chat joined by it.
    world
        .told(stars.user, "🔑 Your Week pass plan opens a private chat", WAIT)
        .await;
    world.telegram.join(stars.user, &latest_link(&stars)).await.unwrap();
    joined(&world, stars.user).await;
    let status = stars.write("/status").await;
    assert!(
        status.text.contains("private chats: you are in 1 of 1"),
        "{}",
        status.text
    );
    assert!(buttons(&status).is_empty(), "no links to ask for");

    // A day before the end, a reminder with a button that opens the plan.
    let ends: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM entitlements WHERE user_id = 6101")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    let bot = jobs::bot::Bot {
        plans: &plans(),
        texts: &jobs::bot::Texts::default(),
    };
    let queued = jobs::billing::expiry::remind_due(&world.pool, bot, &[72, 24], ends - chrono::TimeDelta::hours(20))
        .await
        .unwrap();
    assert_eq!(queued, 1);
    let reminder = world.told(stars.user, "⏳ Your Week pass access ends on", WAIT).await;
    assert_eq!(
        buttons(&reminder),
        [("Renew Week pass".to_string(), "plan:week_pass".to_string())]
    );

    // The end passes unpaid (moved back past the grace): expired, removed, told both.
    sqlx::query("UPDATE entitlements SET expires_at = now() - interval '7 hours' WHERE user_id = 6101")
        .execute(&world.pool)
        .await
        .unwrap();
    jobs::billing::expiry::enqueue_due(&world.pool, jobs::billing::expiry::DEFAULT_GRACE)
        .await
        .unwrap();
    world
        .told(stars.user, "Your Week pass access has ended. You can renew", WAIT)
        .await;
    world
        .told(stars.user, "Your Week pass access has ended, so you have left", WAIT)
        .await;
    assert_eq!(world.telegram.status_in(CHAT, stars.user), "left");

    // Card: the Checkout link from the bot, paid on the fake Stripe's page.
    let card = Chat {
        world: &world,
        user: 6102,
    };
    card.write("/start").await;
    card.press("plan:pro_monthly").await;
    let link = card.press("card:pro_monthly").await;
    let [(_, checkout_url)] = buttons(&link).try_into().expect("one button");
    let paid = http.get(&checkout_url).send().await.unwrap();
    assert!(paid.status().is_success());
    world.told(card.user, "✅ Your Pro access is active until", WAIT).await;
    world
        .told(card.user, "🔑 Your Pro plan opens a private chat", WAIT)
        .await;
    let first = latest_link(&card);

    // Not joined yet: /status says so and sends the same link again on request.
    let status = card.write("/status").await;
    assert!(
        status.text.contains("private chats: you are in 0 of 1"),
        "{}",
        status.text
    );
    assert_eq!(
        buttons(&status),
        [("🔑 Send my invite links".to_string(), "links".to_string())]
    );
    let again = card.press("links").await;
    assert!(
        again.text.starts_with("🔑 Your Pro plan opens a private chat"),
        "{}",
        again.text
    );
    assert_eq!(latest_link(&card), first, "the unused link, not a new one");
    world.telegram.join(card.user, &first).await.unwrap();
    joined(&world, card.user).await;
    let none = card.press("links").await;
    assert_eq!(none.text, "You are in every private chat your plans open.");

    // The subscription is deleted in Stripe: removed and told.
    let asked = Trigger {
        user_id: card.user,
        ..Trigger::default()
    };
    world
        .stripe
        .trigger("customer.subscription.deleted", &asked)
        .await
        .unwrap();
    world
        .told(card.user, "Your Pro access has ended, so you have left", WAIT)
        .await;
    assert!(world.telegram.members(CHAT).is_empty());

    worker.stop().await;
    assert_eq!(
        world
            .count("SELECT value::bigint FROM counters WHERE name = 'access_changes_total' AND labels LIKE '%removed%'")
            .await,
        2
    );
    assert_eq!(
        world
            .count("SELECT value::bigint FROM counters WHERE name = 'access_changes_total' AND labels LIKE '%granted%'")
            .await,
        2,
        "one link each; the one sent again is not counted again"
    );
}
