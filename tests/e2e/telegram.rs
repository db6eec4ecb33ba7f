//! Telegram end to end, over HTTP as Telegram and a Mini App see it: sign in with `initData`,
//! ask for a Stars invoice link, Telegram's pre-checkout query and payment arrive at the webhook,
//! the entitlement shows, the confirmation reaches the fake Bot API, ops refund it, Telegram's
//! refund update follows and changes nothing. Also `worker telegram set-webhook`.

use std::time::Duration;

use e2e::{BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET, World};
use sandbox::stripe_events::Subscription;
use sandbox::telegram::Limits;
use sandbox::telegram_updates::{self as updates, post_update};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sign_in_invoice_pre_checkout_payment_entitlement_refund() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let user = 5150;
    let webhook = format!("{api}/webhooks/telegram");

    // The Mini App signs in.
    let init_data = e2e::init_data_for(&json!({"id": user, "first_name": "Grace", "username": "grace"}));
    let session: Value = http
        .post(format!("{api}/v1/auth/telegram"))
        .json(&json!({"init_data": init_data}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().expect("a token").to_string();

    // It asks for a Stars invoice link and long-polls for it.
    let created = http
        .post(format!("{api}/v1/billing/stars-invoice"))
        .bearer_auth(&token)
        .json(&json!({"plan": "pro_monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
    let ready: Value = e2e::get_json(
        &http,
        &format!("{api}{}?wait=10", created["status_url"].as_str().unwrap()),
        &token,
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["url"].as_str().unwrap().starts_with("https://t.me/$"), "{ready}");
    let links = world.telegram.invoice_links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["currency"], "XTR");
    assert_eq!(links[0]["payload"], "pro_monthly");
    assert_eq!(links[0]["prices"][0]["amount"], 250);
    assert_eq!(links[0]["subscription_period"], 2_592_000);

    // Telegram asks whether to take the money, then takes it (and delivers the payment twice).
    let query = updates::pre_checkout_query(1, "pcq-1", user, "pro_monthly", "XTR", 250);
    let answer: Value = post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &query)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"method": "answerPreCheckoutQuery", "pre_checkout_query_id": "pcq-1", "ok": true})
    );
    let charge = "stxE2Echarge";
    world.telegram.record_star_payment(user, charge);
    let paid = updates::successful_payment(2, user, "pro_monthly", 250, charge, None);
    for _ in 0..2 {
        let resp = post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &paid).await;
        assert_eq!(resp.status(), 204);
    }
    world
        .wait_for_count(
            &format!("SELECT count(*) FROM telegram_deliveries WHERE chat_id = {user}"),
            1,
            WAIT,
        )
        .await;
    let mine: Value = e2e::get_json(&http, &format!("{api}/v1/me/entitlements"), &token).await;
    let entitlements = mine["entitlements"].as_array().unwrap();
    assert_eq!(entitlements.len(), 1, "{mine}");
    assert_eq!(entitlements[0]["source"], format!("telegram_stars:{charge}"));
    assert_eq!(entitlements[0]["status"], "active");
    // The profile the sign-in queued is stored by now (the same queue ran since).
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM telegram_users WHERE id = {user} AND username = 'grace'"
            ))
            .await,
        1
    );

    // Ops refund it; Telegram's refunded_payment update follows.
    let refund = http
        .post(format!("{api}/v1/ops/refunds"))
        .bearer_auth(e2e::ADMIN_TOKEN)
        .header("Idempotency-Key", "stars-refund-1")
        .json(&json!({"provider": "telegram_stars", "payment": charge, "reason": "requested_by_customer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 202);
    world
        .wait_for_count("SELECT count(*) FROM refunds WHERE status = 'succeeded'", 1, WAIT)
        .await;
    assert_eq!(world.telegram.star_refunds(), vec![(user, charge.to_string())]);
    let refunded = updates::refunded_payment(3, user, "pro_monthly", 250, charge);
    let resp = post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &refunded).await;
    assert_eq!(resp.status(), 204);
    world
        .wait_for_count(
            "SELECT count(*) FROM jobs WHERE logical_key LIKE 'telegram_refund:%' AND state = 'completed'",
            1,
            WAIT,
        )
        .await;
    world
        .wait_for_count(
            &format!("SELECT count(*) FROM telegram_deliveries WHERE chat_id = {user}"),
            2,
            WAIT,
        )
        .await;
    let mine: Value = e2e::get_json(&http, &format!("{api}/v1/me/entitlements"), &token).await;
    worker.stop().await;
    assert_eq!(mine, json!({"entitlements": []}));
    let revocations = world
        .count("SELECT count(*) FROM entitlement_changes WHERE status = 'revoked'")
        .await;
    assert_eq!(revocations, 1);
    let told = world.telegram.texts_to(user);
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told[0].contains("Pro access is active until"), "{told:?}");
    assert!(told[1].contains("refunded"), "{told:?}");
}

#[tokio::test]
async fn worker_telegram_set_webhook_registers_the_url_and_secret() {
    let world = World::new(Limits::default()).await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_worker-under-test"));
    command
        .args(["telegram", "set-webhook"])
        .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_API_URL", world.telegram.url())
        .env("TELEGRAM_WEBHOOK_URL", "https://paygate.example/webhooks/telegram")
        .env("TELEGRAM_WEBHOOK_SECRET", TELEGRAM_WEBHOOK_SECRET)
        .env("MINI_APP_URL", "https://paygate.example/app")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    // Off the test's runtime thread, which serves the fake Bot API the command talks to.
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .unwrap()
        .expect("running the worker binary");
    assert!(status.success());
    let webhook = world.telegram.webhook().expect("a webhook was set");
    assert_eq!(webhook["url"], "https://paygate.example/webhooks/telegram");
    assert_eq!(webhook["secret_token"], TELEGRAM_WEBHOOK_SECRET);
    let allowed: Vec<&str> = webhook["allowed_updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        allowed,
        vec![
            "message",
            "callback_query",
            "pre_checkout_query",
            "my_chat_member",
            "chat_member",
            "chat_join_request"
        ]
    );
    let menu = world.telegram.commands().expect("the menu was set");
    let commands: Vec<&str> = menu
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["command"].as_str())
        .collect();
    assert_eq!(commands, ["plans", "buy", "status", "billing", "help"]);
    assert_eq!(menu[2]["description"], "Your access and when it ends");
    assert_eq!(
        world.telegram.menu_button(),
        Some(
            serde_json::json!({"type": "web_app", "text": "My subscription", "web_app": {"url": "https://paygate.example/app"}})
        )
    );
}

/// Asks for a Stars invoice link of `pro_monthly` with `token`, and returns its slug.
async fn stars_invoice_link(http: &reqwest::Client, api: &str, token: &str) -> String {
    let created: Value = http
        .post(format!("{api}/v1/billing/stars-invoice"))
        .bearer_auth(token)
        .json(&json!({"plan": "pro_monthly"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ready: Value = e2e::get_json(
        http,
        &format!("{api}{}?wait=10", created["status_url"].as_str().unwrap()),
        token,
    )
    .await;
    ready["url"]
        .as_str()
        .and_then(|u| u.strip_prefix("https://t.me/$"))
        .unwrap_or_else(|| panic!("an invoice link: {ready}"))
        .to_string()
}

#[tokio::test]
async fn paying_an_invoice_link_on_the_fake_bot_api_grants_the_plan_unless_the_bot_refuses() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let user = 6262;
    world.set_bot_webhook(&api).await;
    let token = api::auth::issue_user_token(&world.jwt(), user, chrono::Utc::now());
    let slug = stars_invoice_link(&http, &api, &token).await;
    let pay = |user_id: i64| {
        http.get(format!("{}/sandbox/pay/{slug}?user_id={user_id}", world.telegram.url()))
            .send()
    };

    let paid = pay(user).await.unwrap();
    let status = paid.status();
    let text = paid.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("user {user}")), "{text}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let entitlement = loop {
        let mine: Value = e2e::get_json(&http, &format!("{api}/v1/me/entitlements"), &token).await;
        let told = world.telegram.messages().iter().any(|m| m.chat_id == user);
        if let (Some(entitlement), true) = (mine["entitlements"].get(0), told) {
            break entitlement.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entitlement and message yet: {mine}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entitlement["status"], "active");
    let source = entitlement["source"].as_str().unwrap();
    let charge = source.strip_prefix("telegram_stars:stx").expect("a Stars charge");
    assert!(text.contains(charge), "{text} / {source}");

    // A banned user opens the same link: the bot refuses, and Telegram sends no payment.
    let banned = 6263;
    sqlx::query("INSERT INTO telegram_users (id, first_name, profile_at, banned) VALUES ($1, 'x', now(), true)")
        .bind(banned)
        .execute(&world.pool)
        .await
        .unwrap();
    let refused = pay(banned).await.unwrap();
    assert_eq!(refused.status(), 402);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("refused") && text.contains("This account cannot make purchases."),
        "{text}"
    );
    worker.stop().await;
    let payments = world
        .count(&format!(
            "SELECT count(*) FROM telegram_payments WHERE user_id = {banned}"
        ))
        .await;
    assert_eq!(payments, 0);
    assert_eq!(world.count("SELECT count(*) FROM telegram_payments").await, 1);
}

/// The purchase guard, from both sides: a Stripe subscriber asking for a Stars invoice of the
/// same plan is refused, and a link made before the subscription began is refused at
/// pre-checkout, so Telegram takes no money.
#[tokio::test]
async fn a_stripe_subscriber_is_not_sold_the_same_plan_for_stars() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let user = 7171;
    world.set_bot_webhook(&api).await;
    let token = api::auth::issue_user_token(&world.jwt(), user, chrono::Utc::now());
    let slug = stars_invoice_link(&http, &api, &token).await;

    // Then the user subscribes through Stripe: its signed webhooks arrive.
    let sub = Subscription::new("guard", user, "pro_monthly", "price_pro_monthly");
    let now = chrono::Utc::now().timestamp();
    for event in [
        sub.invoice_paid(1, now + 30 * 86_400, now),
        sub.checkout_session("checkout.session.completed", "paid", now),
    ] {
        assert_eq!(e2e::post_stripe_event(&http, &api, &event).await, 200);
    }
    let renewing = format!("SELECT count(*) FROM entitlements WHERE user_id = {user} AND renews");
    world.wait_for_count(&renewing, 1, WAIT).await;

    let again = http
        .post(format!("{api}/v1/billing/stars-invoice"))
        .bearer_auth(&token)
        .json(&json!({"plan": "pro_monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["type"], "urn:paygate:problem:already-subscribed", "{problem}");

    let refused = http
        .get(format!("{}/sandbox/pay/{slug}?user_id={user}", world.telegram.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("You already subscribe to Pro through Stripe, renewing on "),
        "{text}"
    );
    worker.stop().await;
    assert_eq!(world.count("SELECT count(*) FROM telegram_payments").await, 0);
    assert_eq!(
        world
            .count(&format!("SELECT count(*) FROM entitlements WHERE user_id = {user}"))
            .await,
        1
    );
}
