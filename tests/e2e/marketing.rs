//! Promo campaigns end to end: the scheduler in two worker processes, the fan-out, the sends at
//! the fake Bot API within its limits, and a click followed by a payment over the webhooks,
//! attributed and reported by the ops API.

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;
use e2e::{ADMIN_TOKEN, TELEGRAM_WEBHOOK_SECRET, World, exited, signal};
use jobs::marketing::broadcasts;
use jobs::marketing::campaigns::{self, Audience, ButtonAction, NewCampaign, NewPromo, PromoButton, Schedule};
use jobs::telegram::store;
use sandbox::telegram::Limits;
use sandbox::telegram_updates::{self as updates, post_update};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn two_worker_processes_and_one_due_slot_send_each_reachable_user_one_message_within_limits() {
    let world = World::new(Limits {
        per_second: 20.0,
        ..Limits::default()
    })
    .await;
    let users: Vec<i64> = (3001..=3040).collect();
    let blocked = [3002, 3013, 3027, 3040];
    let mut conn = world.pool.acquire().await.unwrap();
    for &user in &users {
        store::saw_chat(&mut conn, user, chrono::Utc::now() - TimeDelta::hours(1), true)
            .await
            .unwrap();
    }
    for user in blocked {
        world.telegram.block(user);
    }
    let campaign = NewCampaign {
        name: "every4h".into(),
        audience: Audience::AllUsers,
        schedule: Schedule::Every { hours: 4 },
        promos: vec![NewPromo {
            name: "a".into(),
            text: "Winter sale: Pro for less".into(),
            parse_mode: None,
            buttons: vec![PromoButton {
                text: "Get Pro".into(),
                action: ButtonAction::Callback,
            }],
        }],
    };
    let mut tx = world.pool.begin().await.unwrap();
    campaigns::create(&mut tx, &campaign, None).await.unwrap();
    tx.commit().await.unwrap();
    // Created four hours and a minute ago: one slot is due.
    sqlx::query("UPDATE campaigns SET created_at = now() - interval '4 hours 1 minute'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let worker = env!("CARGO_BIN_EXE_worker-under-test");
    let mut first = world.spawn_worker_process(worker, 20.0);
    let mut second = world.spawn_worker_process(worker, 20.0);
    world
        .wait_for_count(
            "SELECT count(*) FROM broadcast_recipients WHERE outcome IS NOT NULL",
            users.len() as i64,
            WAIT,
        )
        .await;
    for worker in [&mut first, &mut second] {
        signal(worker, "TERM");
        assert!(exited(worker).await.success());
    }

    assert_eq!(
        world.count("SELECT count(*) FROM broadcasts").await,
        1,
        "one tick, one broadcast"
    );
    let mut per_chat: HashMap<i64, usize> = HashMap::new();
    for message in world.telegram.messages() {
        *per_chat.entry(message.chat_id).or_default() += 1;
    }
    for &user in &users {
        let want = usize::from(!blocked.contains(&user));
        assert_eq!(per_chat.get(&user).copied().unwrap_or(0), want, "messages to {user}");
    }
    assert_eq!(world.telegram.rate_limited(), 0, "no send broke the fake's limits");
    assert_eq!(
        world
            .count("SELECT count(*) FROM telegram_chats WHERE unreachable_at IS NOT NULL")
            .await,
        blocked.len() as i64
    );
    let id: i64 = sqlx::query_scalar("SELECT id FROM broadcasts")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    let progress = broadcasts::progress(&world.pool, id, 20.0).await.unwrap().unwrap();
    assert_eq!(
        (
            progress.total,
            progress.sent,
            progress.unreachable,
            progress.failed,
            progress.pending
        ),
        (40, 36, 4, 0, 0)
    );
    assert!(progress.fanned_out && progress.expected_finish_at.is_none());

    // A month later a worker's maintenance keeps the counts on the broadcast and prunes the
    // per-recipient rows.
    sqlx::query("UPDATE broadcasts SET fanned_out_at = now() - interval '31 days'")
        .execute(&world.pool)
        .await
        .unwrap();
    let mut third = world.spawn_worker_process(worker, 20.0);
    world
        .wait_for_count(
            "SELECT count(*) FROM broadcasts WHERE summarised_at IS NOT NULL",
            1,
            WAIT,
        )
        .await;
    world
        .wait_for_count("SELECT count(*) FROM broadcast_recipients", 0, WAIT)
        .await;
    signal(&third, "TERM");
    assert!(exited(&mut third).await.success());
    assert_eq!(
        world
            .count("SELECT count(*) FROM telegram_deliveries WHERE logical_key LIKE 'broadcast:%'")
            .await,
        0
    );
    let summarised = broadcasts::progress(&world.pool, id, 20.0).await.unwrap().unwrap();
    assert!(summarised.summarised_at.is_some());
    assert_eq!(
        broadcasts::Progress {
            summarised_at: None,
            ..summarised
        },
        progress
    );

    // The next broadcast leaves the blocked users out from the start.
    let mut tx = world.pool.begin().await.unwrap();
    let next = broadcasts::begin(&mut tx, "every4h", None).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let mut tx = world.pool.begin().await.unwrap();
    let page = broadcasts::fan_out(
        &mut tx,
        &broadcasts::FanOut {
            broadcast_id: next.broadcast_id,
            after: None,
            before: 0,
            start: None,
        },
        1000,
        20.0,
    )
    .await
    .unwrap();
    assert_eq!(page.recipients, 36);
}

async fn admin(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_promo_click_then_a_stars_payment_is_a_conversion_in_the_campaigns_stats() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let webhook = format!("{api}/webhooks/telegram");
    let user = 7070;

    // The user starts the bot: that puts them in the audience.
    let start = updates::text_message(1, user, "/start");
    assert_eq!(
        post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &start)
            .await
            .status(),
        204
    );
    let (status, created) = admin(
        &http,
        reqwest::Method::POST,
        format!("{api}/v1/ops/campaigns"),
        Some(json!({
            "name": "winter",
            "audience": "all_users",
            "promos": [{"name": "a", "text": "Pro for 250 Stars", "buttons": [
                {"text": "Get Pro", "action": "deep_link"}, {"text": "Why Pro?", "action": "callback"}]}]
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, started) = admin(
        &http,
        reqwest::Method::POST,
        format!("{api}/v1/ops/campaigns/winter/send"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{started}");
    world
        .wait_for_count(
            "SELECT count(*) FROM broadcast_recipients WHERE outcome = 'sent'",
            1,
            WAIT,
        )
        .await;
    let (_, progress) = admin(
        &http,
        reqwest::Method::GET,
        format!("{api}{}", started["status_url"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(
        (progress["total"].clone(), progress["sent"].clone()),
        (json!(1), json!(1))
    );
    // The bot's welcome to the /start, and the promo.
    world.message_after(user, 1, WAIT).await;
    let sent = world.telegram.messages();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().any(|m| m.text == "Pro for 250 Stars"), "{sent:?}");

    // The user presses the callback button, then pays in Stars.
    let press = updates::callback_query(2, "q1", user, user, "promo:winter:a");
    post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &press).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM promo_clicks WHERE broadcast_id IS NOT NULL",
            1,
            WAIT,
        )
        .await;
    let paid = updates::successful_payment(3, user, "pro_monthly", 250, "stxWINTER", None);
    post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &paid).await;
    world.wait_for_count("SELECT count(*) FROM conversions", 1, WAIT).await;

    let (status, stats) = admin(
        &http,
        reqwest::Method::GET,
        format!("{api}/v1/ops/campaigns/winter/stats"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    let a = &stats["promos"][0];
    assert_eq!(a["promo"], "a");
    assert_eq!((a["sends"].clone(), a["unique_clickers"].clone()), (json!(1), json!(1)));
    assert_eq!(a["click_through_rate"], 1.0);
    assert_eq!(
        (a["conversions"].clone(), a["conversion_rate"].clone()),
        (json!(1), json!(1.0))
    );
    assert_eq!(a["revenue"], json!([{"currency": "XTR", "amount": 250}]));

    // The counters are in /metrics (flushed by the worker's effects, summed by the web process).
    let metrics = http
        .get(format!("{api}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "marketing_posts_total{campaign=\"winter\"} 1",
        "marketing_clicks_total{campaign=\"winter\",via=\"callback\"} 1",
        "marketing_broadcast_recipients_total{outcome=\"sent\"} 1",
        "marketing_conversions_total{campaign=\"winter\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
    worker.stop().await;
}

/// `worker campaigns …` as ops run it: create from a file, send now, and `broadcast --watch`
/// follows the broadcast while a worker process sends it, until every recipient is settled.
#[tokio::test]
async fn ops_send_a_campaign_from_the_cli_and_watch_it_to_the_end() {
    let world = World::new(Limits::default()).await;
    let worker = env!("CARGO_BIN_EXE_worker-under-test");
    let ops = |args: &[&str]| {
        let out = std::process::Command::new(worker)
            .args(args)
            .env("DATABASE_URL", &world.database_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let file = std::env::temp_dir().join(format!("campaign-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"{"name": "cli", "audience": "chats", "chat_ids": [701, 702, 703],
            "promos": [{"name": "a", "text": "Pro for less", "buttons": [{"text": "Get Pro", "action": "callback"}]}]}"#,
    )
    .unwrap();
    let created = ops(&["campaigns", "create", "--file", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert!(created.starts_with("campaign cli created\n"), "{created}");
    let listed: Value = serde_json::from_str(&ops(&["campaigns", "list", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["name"], "cli", "{listed}");
    let table = ops(&["campaigns", "list"]);
    assert_eq!(table.lines().count(), 3, "a header, one campaign, a count:\n{table}");
    assert!(table.contains("3 chat(s)") && table.contains("every 4 h"), "{table}");

    let sent = ops(&["campaigns", "send", "cli"]);
    let id: i64 = sent
        .strip_prefix("broadcast ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a broadcast id in {sent:?}"));
    // Watching before any worker runs: the first reading has nothing sent.
    let watch = std::process::Command::new(worker)
        .args(["campaigns", "broadcast", &id.to_string(), "--watch"])
        .env("DATABASE_URL", &world.database_url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sender = world.spawn_worker_process(worker, 20.0);
    let watched = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || watch.wait_with_output()))
        .await
        .expect("--watch ends once every recipient is settled")
        .unwrap()
        .unwrap();
    signal(&sender, "TERM");
    assert!(exited(&mut sender).await.success());
    assert!(watched.status.success());
    let lines: Vec<String> = String::from_utf8(watched.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(lines[0].starts_with(&format!("broadcast {id}: 0 sent")), "{lines:?}");
    assert_eq!(
        lines.last().unwrap(),
        &format!("broadcast {id}: 3 sent, 0 failed, 0 unreachable, 0 pending of 3")
    );
    let stats = ops(&["campaigns", "stats", "cli"]);
    let row = stats.lines().find(|l| l.starts_with("a ")).unwrap_or_default();
    assert_eq!(row.split_whitespace().nth(1), Some("3"), "three sends:\n{stats}");
}
