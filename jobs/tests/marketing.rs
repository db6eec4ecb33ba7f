//! Campaigns on a real PostgreSQL: one broadcast per slot however many schedulers fire it,
//! rotation, audiences, the paged fan-out and its re-runs, click and conversion attribution,
//! statistics.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jobs::marketing::broadcasts::{self, FanOut, Outcome, Progress};
use jobs::marketing::campaigns::{
    self, Audience, ButtonAction, CampaignSpec, NewCampaign, NewPromo, PromoButton, Schedule,
};
use jobs::marketing::stats;
use jobs::queue::ops;
use jobs::telegram::SendMessage;
use jobs::telegram::store;
use jobs::tracking::{self, AttributePayment, Promo, RecordClick, Via};
use sqlx::PgPool;

const BOT: &str = "paygate_test_bot";
const WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

async fn pool() -> (String, PgPool) {
    let url = sandbox::postgres::test_database().await;
    let pool = jobs::db::connect(&url, 10).await.unwrap();
    (url, pool)
}

fn promo(name: &str) -> NewPromo {
    NewPromo {
        name: name.into(),
        text: format!("Promo {name}"),
        parse_mode: None,
        buttons: vec![
            PromoButton {
                text: "Get Pro".into(),
                action: ButtonAction::DeepLink,
            },
            PromoButton {
                text: "More".into(),
                action: ButtonAction::Callback,
            },
        ],
    }
}

fn campaign(name: &str, audience: Audience, schedule: Schedule, promos: &[&str]) -> NewCampaign {
    NewCampaign {
        name: name.into(),
        audience,
        schedule,
        promos: promos.iter().map(|p| promo(p)).collect(),
    }
}

/// Creates `c` as if it had been created `ago`.
async fn create_backdated(pool: &PgPool, c: &NewCampaign, ago: TimeDelta) -> DateTime<Utc> {
    campaigns::create(pool, c, Some(BOT)).await.unwrap();
    sqlx::query_scalar(
        "UPDATE campaigns SET created_at = now() - make_interval(secs => $2) WHERE name = $1 RETURNING created_at",
    )
    .bind(&c.name)
    .bind(ago.num_seconds() as f64)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Creates campaign `name` (every 4 hours) and sends it now.
async fn send_now(pool: &PgPool, name: &str, audience: Audience, promos: &[&str]) -> broadcasts::Started {
    let c = campaign(name, audience, Schedule::Every { hours: 4 }, promos);
    campaigns::create(pool, &c, Some(BOT)).await.unwrap();
    broadcasts::begin(pool, name, None).await.unwrap().unwrap()
}

/// Users who wrote to the bot: `ids`, seen an hour ago.
async fn seen(pool: &PgPool, ids: impl IntoIterator<Item = i64>) {
    let mut conn = pool.acquire().await.unwrap();
    for id in ids {
        store::saw_chat(&mut conn, id, Utc::now() - TimeDelta::hours(1), true)
            .await
            .unwrap();
    }
}

/// Runs every pending `broadcasts` job, oldest first, with `page_size`, each in its own
/// transaction that also completes it and writes its ledger row (as the effect protocol does);
/// returns the pages.
async fn run_fan_out(pool: &PgPool, page_size: i64) -> Vec<broadcasts::Page> {
    let mut pages = Vec::new();
    loop {
        let next: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT id, payload FROM jobs WHERE queue = 'broadcasts' AND state = 'pending' ORDER BY id LIMIT 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        let Some((id, payload)) = next else {
            return pages;
        };
        let job: FanOut = serde_json::from_value(payload).unwrap();
        let mut tx = pool.begin().await.unwrap();
        pages.push(broadcasts::fan_out(&mut tx, &job, page_size, 30.0).await.unwrap());
        sqlx::query(
            "WITH done AS (UPDATE jobs SET state = 'completed', finished_at = now() WHERE id = $1
                           RETURNING queue, logical_key, id)
             INSERT INTO effect_ledger (queue, logical_key, job_id) SELECT * FROM done",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

/// The queued messages of broadcast `id`, by chat.
async fn messages_of(pool: &PgPool, id: i64) -> Vec<(String, SendMessage)> {
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT logical_key, payload FROM jobs WHERE queue = 'notifications' AND payload->>'broadcast_id' = $1::text
         ORDER BY (payload->>'chat_id')::bigint",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, payload)| (key, serde_json::from_value(payload).unwrap()))
        .collect()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn one_slot_makes_one_broadcast_however_many_processes_fire_it() {
    let (url, pool) = pool().await;
    let other_process = jobs::db::connect(&url, 10).await.unwrap();
    let c = campaign("hourly", Audience::AllUsers, Schedule::Every { hours: 1 }, &["a"]);
    let created = create_backdated(&pool, &c, TimeDelta::minutes(330)).await;
    let now = Utc::now();

    // Eight scheduler passes at once, from two pools (two processes' worth of connections).
    let passes = (0..8).map(|i| {
        let pool = if i % 2 == 0 {
            pool.clone()
        } else {
            other_process.clone()
        };
        tokio::spawn(async move { broadcasts::fire_due(&pool, now).await.unwrap() })
    });
    let started: usize = futures::future::join_all(passes)
        .await
        .into_iter()
        .map(|r| r.unwrap().len())
        .sum();
    assert_eq!(started, 1);
    let slots: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar("SELECT slot FROM broadcasts")
        .fetch_all(&pool)
        .await
        .unwrap();
    // Five and a half hours in: the slot at five hours, not the four it missed before.
    assert_eq!(slots, [Some(created + TimeDelta::hours(5))]);
    assert!(broadcasts::fire_due(&pool, now).await.unwrap().is_empty());

    // The next slot fires once; a worker down for ten hours then catches up with one, not ten.
    assert_eq!(
        broadcasts::fire_due(&pool, now + TimeDelta::hours(1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        broadcasts::fire_due(&pool, now + TimeDelta::hours(11))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM broadcasts").await, 3);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE queue = 'broadcasts'").await,
        3,
        "one fan-out job per broadcast"
    );
}

#[tokio::test]
async fn a_paused_campaign_skips_its_slots_and_resumes_at_the_next() {
    let (_, pool) = pool().await;
    let c = campaign("paused", Audience::AllUsers, Schedule::Every { hours: 1 }, &["a"]);
    create_backdated(&pool, &c, TimeDelta::minutes(90)).await;
    campaigns::set_paused(&pool, "paused", true).await.unwrap();
    assert!(broadcasts::fire_due(&pool, Utc::now()).await.unwrap().is_empty());
    let resumed = campaigns::set_paused(&pool, "paused", false).await.unwrap();
    assert!(!resumed.paused);
    // The slot that fell in the pause does not fire on resume; the next one does.
    assert!(broadcasts::fire_due(&pool, Utc::now()).await.unwrap().is_empty());
    let next = broadcasts::fire_due(&pool, Utc::now() + TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    // Send-now works for a paused campaign too.
    campaigns::set_paused(&pool, "paused", true).await.unwrap();
    assert!(broadcasts::begin(&pool, "paused", None).await.unwrap().is_some());
    assert!(broadcasts::begin(&pool, "nope", None).await.unwrap().is_none());
}

#[tokio::test]
async fn promos_rotate_in_order_across_sends_and_ticks() {
    let (_, pool) = pool().await;
    let c = campaign(
        "rotate",
        Audience::AllUsers,
        Schedule::Every { hours: 1 },
        &["a", "b", "c"],
    );
    create_backdated(&pool, &c, TimeDelta::minutes(61)).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        let preview = campaigns::next_promo(&pool, "rotate").await.unwrap().unwrap();
        let started = if i == 3 {
            // A scheduled tick takes its turn in the same rotation.
            broadcasts::fire_due(&pool, Utc::now()).await.unwrap().remove(0)
        } else {
            broadcasts::begin(&pool, "rotate", None).await.unwrap().unwrap()
        };
        assert_eq!(preview.promo, started.promo);
        sent.push(started.promo);
    }
    assert_eq!(sent, ["a", "b", "c", "a", "b", "c", "a"]);
    let stored: Vec<String> = sqlx::query_scalar("SELECT promo FROM broadcasts ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored, sent);
}

#[tokio::test]
async fn a_broadcast_reaches_its_audience_once_a_page_at_a_time() {
    let (_, pool) = pool().await;
    seen(&pool, 1001..=1035).await;
    let mut conn = pool.acquire().await.unwrap();
    for blocked in [1003, 1004, 1005] {
        store::mark_unreachable(&mut conn, blocked, "Forbidden: bot was blocked by the user")
            .await
            .unwrap();
    }
    for banned in [1010, 1011] {
        sqlx::query("INSERT INTO telegram_users (id, first_name, profile_at, banned) VALUES ($1, 'B', now(), true)")
            .bind(banned)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    // Marked unreachable, never in the audience: a 403 alone does not add a chat.
    store::mark_unreachable(&mut conn, 2000, "blocked").await.unwrap();
    // An active entitlement: left out of `without_entitlement` only.
    sqlx::query(
        "INSERT INTO entitlements (user_id, source, plan, entitlement, status, expires_at)
         VALUES (1020, 'stripe:sub_1', 'pro', 'pro', 'active', now() + interval '1 day')",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);

    let all = send_now(&pool, "all", Audience::AllUsers, &["a"]).await;
    // A user who first writes after the broadcast began is not in it.
    store::saw_chat(
        &mut pool.acquire().await.unwrap(),
        1036,
        Utc::now() + TimeDelta::seconds(5),
        true,
    )
    .await
    .unwrap();
    let pages = run_fan_out(&pool, 10).await;
    assert_eq!(
        pages.iter().map(|p| p.recipients).collect::<Vec<_>>(),
        [10, 10, 10, 0],
        "30 recipients in pages of 10"
    );
    assert!(pages.last().unwrap().last);
    let messages = messages_of(&pool, all.broadcast_id).await;
    let chats: Vec<i64> = messages.iter().map(|(_, m)| m.chat_id).collect();
    let expected: Vec<i64> = (1001..=1035)
        .filter(|id| ![1003, 1004, 1005, 1010, 1011].contains(id))
        .collect();
    assert_eq!(chats, expected);
    let (key, first) = &messages[0];
    assert_eq!(key, &format!("broadcast:{}:1001", all.broadcast_id));
    assert_eq!(first.text, "Promo a");
    assert_eq!(
        first.buttons[0][0].url.as_deref(),
        Some("https://t.me/paygate_test_bot?start=promo-all-a")
    );
    assert_eq!(first.buttons[1][0].callback_data.as_deref(), Some("promo:all:a"));
    // Spread at the send rate (30 a second here) from the broadcast's start, in chat order.
    let due: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM j.run_at - b.created_at)::float8
         FROM jobs j JOIN broadcasts b ON b.id = (j.payload->>'broadcast_id')::bigint
         WHERE j.queue = 'notifications' ORDER BY (j.payload->>'chat_id')::bigint",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(due.windows(2).all(|w| w[1] > w[0]), "{due:?}");
    assert!(due[0] < 0.5 && (0.95..1.5).contains(&due[29]), "{due:?}");
    let progress = broadcasts::progress(&pool, all.broadcast_id, 10.0)
        .await
        .unwrap()
        .unwrap();
    assert!(progress.fanned_out);
    assert_eq!((progress.total, progress.pending, progress.sent), (30, 30, 0));
    let eta = (progress.expected_finish_at.unwrap() - Utc::now()).num_seconds();
    assert!(
        (2..=3).contains(&eta),
        "30 pending at 10/s finish in about 3 s, not {eta}"
    );

    // Without entitlement: the entitled user is left out.
    let lapsed = send_now(&pool, "lapsed", Audience::WithoutEntitlement, &["a"]).await;
    run_fan_out(&pool, 1000).await;
    let lapsed_chats: HashSet<i64> = messages_of(&pool, lapsed.broadcast_id)
        .await
        .into_iter()
        .map(|(_, m)| m.chat_id)
        .collect();
    assert_eq!(lapsed_chats.len(), 29, "1020 is entitled; 1036 has not written yet");
    assert!(!lapsed_chats.contains(&1020) && lapsed_chats.contains(&1021));

    // Listed chats: a channel and a user, less the blocked one, each once.
    let listed = send_now(
        &pool,
        "listed",
        Audience::Chats {
            chat_ids: vec![-1001234, 1003, 1001, -1001234],
        },
        &["a"],
    )
    .await;
    run_fan_out(&pool, 1).await;
    let listed_chats: Vec<i64> = messages_of(&pool, listed.broadcast_id)
        .await
        .into_iter()
        .map(|(_, m)| m.chat_id)
        .collect();
    assert_eq!(listed_chats, [-1001234, 1001]);
}

#[tokio::test]
async fn a_fan_out_killed_mid_page_or_run_again_queues_nobody_twice() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=25).await;
    let b = send_now(&pool, "again", Audience::AllUsers, &["a"]).await;
    let first_page = FanOut {
        broadcast_id: b.broadcast_id,
        after: None,
        before: 0,
        start: None,
    };

    // Killed mid-page: its transaction never commits, and nothing of it remains.
    let mut tx = pool.begin().await.unwrap();
    let page = broadcasts::fan_out(&mut tx, &first_page, 10, 30.0).await.unwrap();
    assert_eq!(page.queued, 10);
    drop(tx);
    assert_eq!(count(&pool, "SELECT count(*) FROM broadcast_recipients").await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE queue = 'notifications'").await,
        0
    );

    // The re-run and the rest of the fan-out.
    let pages = run_fan_out(&pool, 10).await;
    assert_eq!(pages.iter().map(|p| p.queued).sum::<usize>(), 25);

    // Every page run once more (a duplicate job, a rescued orphan): nobody is queued again, and
    // no page is queued again either.
    for (after, before) in [(None, 0), (Some(10), 10), (Some(20), 20)] {
        let mut tx = pool.begin().await.unwrap();
        let again = FanOut {
            broadcast_id: b.broadcast_id,
            after,
            before,
            start: None,
        };
        let page = broadcasts::fan_out(&mut tx, &again, 10, 30.0).await.unwrap();
        assert_eq!(page.queued, 0, "after {after:?}");
        tx.commit().await.unwrap();
    }
    assert!(run_fan_out(&pool, 10).await.is_empty());
    let messages = messages_of(&pool, b.broadcast_id).await;
    let keys: HashSet<&String> = messages.iter().map(|(k, _)| k).collect();
    assert_eq!((messages.len(), keys.len()), (25, 25));
    assert_eq!(count(&pool, "SELECT count(*) FROM broadcast_recipients").await, 25);
}

#[tokio::test]
async fn recipients_outcomes_are_counted_once_each() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=4).await;
    let b = send_now(&pool, "out", Audience::AllUsers, &["a"]).await.broadcast_id;
    run_fan_out(&pool, 100).await;
    let mut conn = pool.acquire().await.unwrap();
    broadcasts::record_outcome(&mut conn, b, 1, Outcome::Sent)
        .await
        .unwrap();
    broadcasts::record_outcome(&mut conn, b, 1, Outcome::Sent)
        .await
        .unwrap();
    broadcasts::record_outcome(&mut conn, b, 2, Outcome::Unreachable)
        .await
        .unwrap();
    broadcasts::record_outcome(&mut conn, b, 3, Outcome::Failed)
        .await
        .unwrap();
    let p = broadcasts::progress(&pool, b, 30.0).await.unwrap().unwrap();
    assert_eq!((p.total, p.sent, p.unreachable, p.failed, p.pending), (4, 1, 1, 1, 1));
    // A message whose job died without its handler saying so (a timeout, a panic) or that ops
    // discarded is failed too.
    sqlx::query("UPDATE jobs SET state = 'dead' WHERE queue = 'notifications' AND logical_key = $1")
        .bind(broadcasts::message_key(b, 4))
        .execute(&pool)
        .await
        .unwrap();
    let p = broadcasts::progress(&pool, b, 30.0).await.unwrap().unwrap();
    assert_eq!((p.failed, p.pending, p.expected_finish_at), (2, 0, None));
    let sent: f64 = sqlx::query_scalar(
        "SELECT value FROM counters WHERE name = 'marketing_broadcast_recipients_total' AND labels = 'outcome=\"sent\"'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sent, 1.0, "a repeated outcome is not counted twice");
    assert_eq!(broadcasts::progress(&pool, b + 100, 30.0).await.unwrap(), None);
}

fn click(update_id: i64, user: i64, promo: (&str, &str), at: DateTime<Utc>) -> RecordClick {
    RecordClick {
        update_id,
        user_id: user,
        chat_id: Some(user),
        promo: Promo::new(promo.0, promo.1).unwrap(),
        via: Via::Callback,
        clicked_at: at,
    }
}

fn payment(id: &str, user: i64, amount: i64, at: DateTime<Utc>) -> AttributePayment {
    AttributePayment {
        payment: format!("telegram_stars:{id}"),
        user_id: user,
        amount,
        currency: "XTR".into(),
        paid_at: at,
    }
}

#[tokio::test]
async fn a_payment_after_a_click_is_attributed_to_the_last_click_once() {
    let (_, pool) = pool().await;
    seen(&pool, [7, 8]).await;
    let first = send_now(&pool, "conv", Audience::AllUsers, &["a", "b"]).await;
    run_fan_out(&pool, 100).await;
    let now = Utc::now() + TimeDelta::seconds(1);
    let mut conn = pool.acquire().await.unwrap();
    tracking::record(&mut conn, &click(1, 7, ("conv", "a"), now))
        .await
        .unwrap();
    tracking::record(&mut conn, &click(1, 7, ("conv", "a"), now))
        .await
        .unwrap();
    let broadcast: Option<i64> = sqlx::query_scalar("SELECT broadcast_id FROM promo_clicks WHERE update_id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        broadcast,
        Some(first.broadcast_id),
        "the click names the broadcast it came from"
    );

    // A later click on another promo is the last touch.
    tracking::record(&mut conn, &click(2, 7, ("conv", "b"), now + TimeDelta::hours(1)))
        .await
        .unwrap();
    let paid = payment("stx1", 7, 250, now + TimeDelta::hours(2));
    assert_eq!(
        tracking::attribute(&mut conn, &paid, WINDOW).await.unwrap().as_deref(),
        Some("conv")
    );
    assert_eq!(
        tracking::attribute(&mut conn, &paid, WINDOW).await.unwrap(),
        None,
        "stored once"
    );
    let (promo, amount): (String, i64) = sqlx::query_as("SELECT promo, amount FROM conversions WHERE payment = $1")
        .bind(&paid.payment)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((promo.as_str(), amount), ("b", 250));

    // Outside the window, before any click, or by someone who never clicked: not attributed.
    let late = payment(
        "stx2",
        7,
        250,
        now + TimeDelta::hours(1) + TimeDelta::days(7) + TimeDelta::seconds(1),
    );
    assert_eq!(tracking::attribute(&mut conn, &late, WINDOW).await.unwrap(), None);
    let early = payment("stx3", 7, 250, now - TimeDelta::minutes(1));
    assert_eq!(tracking::attribute(&mut conn, &early, WINDOW).await.unwrap(), None);
    let stranger = payment("stx4", 8, 250, now + TimeDelta::hours(2));
    assert_eq!(tracking::attribute(&mut conn, &stranger, WINDOW).await.unwrap(), None);
    // Just inside the window still counts.
    let inside = payment("stx5", 7, 90, now + TimeDelta::hours(1) + TimeDelta::days(7));
    assert!(tracking::attribute(&mut conn, &inside, WINDOW).await.unwrap().is_some());
    assert_eq!(count(&pool, "SELECT count(*) FROM conversions").await, 2);
}

#[tokio::test]
async fn stats_count_sends_clickers_conversions_and_revenue_per_promo() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=10).await;
    let a = send_now(&pool, "st", Audience::AllUsers, &["a", "b"])
        .await
        .broadcast_id;
    run_fan_out(&pool, 100).await;
    let mut conn = pool.acquire().await.unwrap();
    for chat in 1..=8 {
        broadcasts::record_outcome(&mut conn, a, chat, Outcome::Sent)
            .await
            .unwrap();
    }
    let now = Utc::now() + TimeDelta::seconds(1);
    // Four clickers, one of them twice.
    for (update, user) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4)] {
        tracking::record(&mut conn, &click(update, user, ("st", "a"), now))
            .await
            .unwrap();
    }
    for (id, user, amount, currency) in [("p1", 1, 250, "XTR"), ("p2", 2, 999, "usd")] {
        let mut p = payment(id, user, amount, now + TimeDelta::minutes(5));
        p.currency = currency.into();
        tracking::attribute(&mut conn, &p, WINDOW).await.unwrap();
    }
    let stats = stats::campaign(
        &pool,
        "st",
        Some(now - TimeDelta::hours(1)),
        Some(now + TimeDelta::hours(1)),
    )
    .await
    .unwrap()
    .unwrap();
    let a = &stats.promos[0];
    assert_eq!(
        (a.promo.as_str(), a.sends, a.unique_clickers, a.conversions),
        ("a", 8, 4, 2)
    );
    assert_eq!((a.click_through_rate, a.conversion_rate), (0.5, 0.5));
    let revenue: Vec<(&str, i64)> = a.revenue.iter().map(|r| (r.currency.as_str(), r.amount)).collect();
    assert_eq!(revenue, [("XTR", 250), ("usd", 999)]);
    let b = &stats.promos[1];
    assert_eq!((b.sends, b.unique_clickers, b.click_through_rate), (0, 0, 0.0));
    // A range that ends before everything counts nothing.
    let before = stats::campaign(
        &pool,
        "st",
        Some(now - TimeDelta::days(2)),
        Some(now - TimeDelta::days(1)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((before.promos[0].sends, before.promos[0].unique_clickers), (0, 0));
    assert!(stats::campaign(&pool, "none", None, None).await.unwrap().is_none());
}

#[tokio::test]
async fn a_spec_becomes_a_campaign_or_says_why_not() {
    let spec: CampaignSpec = serde_json::from_str(
        r#"{"name": "spec", "audience": "chats", "chat_ids": [-100], "cron": "0 9 * * 1",
            "promos": [{"name": "a", "text": "hi", "buttons": [{"text": "Go", "action": "callback"}]}]}"#,
    )
    .unwrap();
    let c = spec.clone().into_campaign().unwrap();
    assert_eq!(c.audience, Audience::Chats { chat_ids: vec![-100] });
    assert_eq!(
        c.schedule,
        Schedule::Cron {
            expression: "0 9 * * 1".into()
        }
    );
    let mut both = spec.clone();
    both.every_hours = Some(2);
    assert!(both.into_campaign().is_err());
    let mut stray = spec.clone();
    stray.audience = "all_users".into();
    assert!(stray.into_campaign().is_err());
    let mut default = spec;
    default.audience = "all_users".into();
    default.chat_ids = None;
    default.cron = None;
    assert_eq!(default.into_campaign().unwrap().schedule, Schedule::Every { hours: 4 });

    let (_, pool) = pool().await;
    let c = campaign("dup", Audience::AllUsers, Schedule::Every { hours: 4 }, &["a"]);
    campaigns::create(&pool, &c, Some(BOT)).await.unwrap();
    assert!(matches!(
        campaigns::create(&pool, &c, Some(BOT)).await,
        Err(campaigns::CampaignError::Exists(_))
    ));
    assert!(matches!(
        campaigns::set_paused(&pool, "missing", true).await,
        Err(campaigns::CampaignError::NotFound(_))
    ));
}

#[tokio::test]
async fn users_known_before_campaigns_existed_join_the_audience_by_migration() {
    let (_, pool) = pool().await;
    // The migration's backfill statement, run again on rows written as before it.
    let migration = include_str!("../../migrations/20261201000006_create_campaigns.sql");
    let start = migration.find("WITH seen").unwrap();
    let backfill = &migration[start..start + migration[start..].find(';').unwrap()];
    sqlx::query(
        "INSERT INTO telegram_updates (update_id, kind, payload, received_at) VALUES
             (1, 'message', '{\"update_id\": 1, \"message\": {\"chat\": {\"id\": 501}}}', now() - interval '2 days'),
             (2, 'message', '{\"update_id\": 2, \"message\": {\"chat\": {\"id\": -100}}}', now()),
             (3, 'callback_query', '{\"update_id\": 3}', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO telegram_users (id, first_name, profile_at, allows_write_to_pm) VALUES
             (502, 'A', now(), true), (503, 'B', now(), false)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO telegram_payments (charge_id, user_id, invoice_payload, currency, total_amount, source, paid_at)
         VALUES ('stx1', 504, 'pro', 'XTR', 250, 'telegram_stars:stx1', now() - interval '1 day'),
                ('stx2', 501, 'pro', 'XTR', 250, 'telegram_stars:stx2', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    store::mark_unreachable(&mut pool.acquire().await.unwrap(), 504, "blocked")
        .await
        .unwrap();
    // 501 blocked the bot, then wrote to it again (its message of now): no longer blocked. A
    // stored message PostgreSQL's JSON functions refuse (\u0000) is skipped.
    sqlx::query("INSERT INTO telegram_chats (chat_id, unreachable_at, unreachable_reason) VALUES (501, now() - interval '1 day', 'blocked')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO telegram_updates (update_id, kind, payload, received_at) VALUES
             (4, 'message', '{\"update_id\": 4, \"message\": {\"chat\": {\"id\": 501}}}', now()),
             (5, 'message', '{\"update_id\": 5, \"message\": {\"chat\": {\"id\": 509}, \"text\": \"\\u0000\"}}', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(backfill.to_string()))
        .execute(&pool)
        .await
        .unwrap();
    let seen: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT chat_id, first_seen_at < now() - interval '36 hours' FROM telegram_chats
         WHERE first_seen_at IS NOT NULL ORDER BY chat_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(seen, [(501, true), (502, false), (504, false)]);
    // The blocked payer stays out of an audience.
    let b = send_now(&pool, "old", Audience::AllUsers, &["a"]).await;
    run_fan_out(&pool, 100).await;
    let chats: Vec<i64> = messages_of(&pool, b.broadcast_id)
        .await
        .into_iter()
        .map(|(_, m)| m.chat_id)
        .collect();
    assert_eq!(chats, [501, 502]);
}

#[tokio::test]
async fn concurrent_sends_each_take_their_turn_in_the_rotation() {
    let (url, pool) = pool().await;
    let other_process = jobs::db::connect(&url, 10).await.unwrap();
    let c = campaign(
        "busy",
        Audience::AllUsers,
        Schedule::Every { hours: 1 },
        &["a", "b", "c"],
    );
    create_backdated(&pool, &c, TimeDelta::minutes(61)).await;
    // Nine operators' send-nows and a scheduler pass at once, over two pools.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let pool = if i % 2 == 0 {
            pool.clone()
        } else {
            other_process.clone()
        };
        tasks.push(tokio::spawn(async move {
            if i == 5 {
                broadcasts::fire_due(&pool, Utc::now()).await.unwrap().len()
            } else {
                usize::from(broadcasts::begin(&pool, "busy", None).await.unwrap().is_some())
            }
        }));
    }
    let begun: usize = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(begun, 10, "no send was lost to another");
    let promos: Vec<String> = sqlx::query_scalar("SELECT promo FROM broadcasts ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(promos, ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]);
}

#[tokio::test]
async fn writing_to_the_bot_or_signing_in_joins_the_audience_and_blocks_come_and_go_in_order() {
    use jobs::billing::users;
    use jobs::inbox::telegram as inbox;

    let (_, pool) = pool().await;
    let plans =
        jobs::billing::Plans::parse(r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30}}"#).unwrap();
    let first_seen = |chat: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<DateTime<Utc>>, bool)>(
                "SELECT first_seen_at, unreachable_at IS NOT NULL FROM telegram_chats WHERE chat_id = $1",
            )
            .bind(chat)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    let write = |update_id: i64, user: i64, date: DateTime<Utc>| {
        let mut update = sandbox::telegram_updates::text_message(update_id, user, "/start");
        update["message"]["date"] = date.timestamp().into();
        update.to_string()
    };
    let now = Utc::now();
    inbox::accept(&pool, &plans, &write(1, 801, now - TimeDelta::hours(2)))
        .await
        .unwrap();
    let (seen, blocked) = first_seen(801).await.unwrap();
    assert_eq!(
        (seen.map(|s| s.timestamp()), blocked),
        (Some((now - TimeDelta::hours(2)).timestamp()), false)
    );

    // Blocked now: an older message delivered late does not lift it, a newer one does, and the
    // first time seen stays the first.
    store::mark_unreachable(&mut pool.acquire().await.unwrap(), 801, "blocked")
        .await
        .unwrap();
    inbox::accept(&pool, &plans, &write(2, 801, now - TimeDelta::hours(1)))
        .await
        .unwrap();
    assert!(first_seen(801).await.unwrap().1, "still blocked");
    inbox::accept(&pool, &plans, &write(3, 801, now + TimeDelta::seconds(5)))
        .await
        .unwrap();
    let (seen_again, blocked) = first_seen(801).await.unwrap();
    assert_eq!((seen_again, blocked), (seen, false));

    // Telegram tells of a block (`my_chat_member` kicked) before any send meets a 403; a block
    // older than the user's last message (delivered late) is ignored; a restart lifts it.
    let member = |update_id: i64, status: &str, date: DateTime<Utc>| {
        sandbox::telegram_updates::my_chat_member(update_id, 801, status, date.timestamp()).to_string()
    };
    inbox::accept(&pool, &plans, &member(4, "kicked", now - TimeDelta::minutes(5)))
        .await
        .unwrap();
    assert!(!first_seen(801).await.unwrap().1, "older than the message of now + 5 s");
    inbox::accept(&pool, &plans, &member(5, "kicked", now + TimeDelta::minutes(1)))
        .await
        .unwrap();
    assert!(first_seen(801).await.unwrap().1, "blocked");
    let b = send_now(&pool, "blocks", Audience::AllUsers, &["a"]).await;
    run_fan_out(&pool, 100).await;
    assert!(
        messages_of(&pool, b.broadcast_id).await.is_empty(),
        "a blocked user is left out"
    );
    inbox::accept(&pool, &plans, &member(6, "member", now + TimeDelta::minutes(2)))
        .await
        .unwrap();
    assert!(!first_seen(801).await.unwrap().1, "restarted");

    // A Mini App sign-in joins only when it allows the bot to write.
    let mut conn = pool.acquire().await.unwrap();
    for (id, allows) in [(802, true), (803, false)] {
        let profile: users::Profile =
            serde_json::from_value(serde_json::json!({"id": id, "first_name": "M", "allows_write_to_pm": allows}))
                .unwrap();
        users::upsert(
            &mut conn,
            &users::ProvisionUser {
                profile,
                signed_in_at: now,
            },
        )
        .await
        .unwrap();
    }
    assert!(first_seen(802).await.is_some());
    assert!(first_seen(803).await.is_none());
}

/// Does what the notifications handler does when broadcast `b`'s message to `chat` ends with
/// `outcome`: the delivery (sent or unreachable) and the effect ledger row, the outcome, and the
/// job's new state, in one transaction.
async fn settle(pool: &PgPool, b: i64, chat: i64, outcome: Outcome) {
    let key = broadcasts::message_key(b, chat);
    let mut tx = pool.begin().await.unwrap();
    let state = if outcome == Outcome::Failed {
        "dead"
    } else {
        "completed"
    };
    let job: i64 =
        sqlx::query_scalar("UPDATE jobs SET state = $2, finished_at = now() WHERE logical_key = $1 RETURNING id")
            .bind(&key)
            .bind(state)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    if outcome != Outcome::Failed {
        let message_id = (outcome == Outcome::Sent).then_some(chat);
        store::record_delivery(&mut tx, &key, job, chat, message_id)
            .await
            .unwrap();
        sqlx::query("INSERT INTO effect_ledger (queue, logical_key, job_id) VALUES ('notifications', $1, $2)")
            .bind(&key)
            .bind(job)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    broadcasts::record_outcome(&mut tx, b, chat, outcome).await.unwrap();
    tx.commit().await.unwrap();
}

/// Moves the end of broadcast `b`'s fan-out `days` into the past.
async fn fanned_out_days_ago(pool: &PgPool, b: i64, days: i64) {
    sqlx::query("UPDATE broadcasts SET fanned_out_at = now() - make_interval(days => $2) WHERE id = $1")
        .bind(b)
        .bind(days as i32)
        .execute(pool)
        .await
        .unwrap();
}

/// Rows of broadcast `b`'s messages: recipients, deliveries, ledger rows.
async fn rows_of(pool: &PgPool, b: i64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM broadcast_recipients WHERE broadcast_id = $1),
                (SELECT count(*) FROM telegram_deliveries WHERE logical_key LIKE 'broadcast:' || $1 || ':%'),
                (SELECT count(*) FROM effect_ledger WHERE queue = 'notifications'
                                                      AND logical_key LIKE 'broadcast:' || $1 || ':%')",
    )
    .bind(b)
    .fetch_one(pool)
    .await
    .unwrap()
}

const RETENTION: Duration = broadcasts::DEFAULT_BROADCAST_RETENTION;

#[tokio::test]
async fn an_old_settled_broadcast_keeps_its_counts_and_loses_its_per_recipient_rows() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=6).await;
    let old = send_now(&pool, "old", Audience::AllUsers, &["a"]).await.broadcast_id;
    run_fan_out(&pool, 100).await;
    let new = send_now(&pool, "new", Audience::AllUsers, &["a"]).await.broadcast_id;
    run_fan_out(&pool, 100).await;
    for chat in 1..=4 {
        settle(&pool, old, chat, Outcome::Sent).await;
    }
    settle(&pool, old, 5, Outcome::Unreachable).await;
    settle(&pool, new, 1, Outcome::Sent).await;
    // A message that is not a broadcast's, delivered long ago: never pruned here.
    let mut conn = pool.acquire().await.unwrap();
    store::record_delivery(&mut conn, "entitlement:1:granted", 1, 1, Some(99))
        .await
        .unwrap();
    drop(conn);
    fanned_out_days_ago(&pool, old, 31).await;
    fanned_out_days_ago(&pool, new, 29).await;

    // Chat 6's message is still queued: the old broadcast's counts are not final yet.
    assert_eq!(
        broadcasts::prune(&pool, RETENTION).await.unwrap(),
        broadcasts::Pruned::default()
    );
    assert_eq!(rows_of(&pool, old).await, (6, 5, 5));
    // Its job died: now they are.
    sqlx::query("UPDATE jobs SET state = 'dead', finished_at = now() WHERE logical_key = $1")
        .bind(broadcasts::message_key(old, 6))
        .execute(&pool)
        .await
        .unwrap();
    let before = broadcasts::progress(&pool, old, 30.0).await.unwrap().unwrap();
    assert_eq!(
        (
            before.total,
            before.sent,
            before.unreachable,
            before.failed,
            before.pending
        ),
        (6, 4, 1, 1, 0)
    );
    let range = (
        Some(Utc::now() - TimeDelta::hours(1)),
        Some(Utc::now() + TimeDelta::hours(1)),
    );
    let sends = |s: stats::CampaignStats| s.promos[0].sends;
    assert_eq!(
        sends(stats::campaign(&pool, "old", range.0, range.1).await.unwrap().unwrap()),
        4
    );

    let pruned = broadcasts::prune(&pool, RETENTION).await.unwrap();
    assert_eq!(
        pruned,
        broadcasts::Pruned {
            summarised: 1,
            recipients: 6
        }
    );
    assert_eq!(rows_of(&pool, old).await, (0, 0, 0));
    assert_eq!(
        rows_of(&pool, new).await,
        (6, 1, 1),
        "a younger broadcast keeps its rows"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM telegram_deliveries WHERE logical_key = 'entitlement:1:granted'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM effect_ledger WHERE queue = 'broadcasts'").await,
        2,
        "the fan-out's own ledger rows stay, so it cannot run again"
    );
    let after = broadcasts::progress(&pool, old, 30.0).await.unwrap().unwrap();
    assert!(after.summarised_at.is_some());
    assert_eq!(
        Progress {
            summarised_at: None,
            ..after
        },
        before,
        "the same figures from the kept counts"
    );
    assert_eq!(
        sends(stats::campaign(&pool, "old", range.0, range.1).await.unwrap().unwrap()),
        4
    );
    let new_progress = broadcasts::progress(&pool, new, 30.0).await.unwrap().unwrap();
    assert_eq!(
        (new_progress.sent, new_progress.pending, new_progress.summarised_at),
        (1, 5, None)
    );

    // Nothing more to do. Its dead message was discarded with the summary: ops cannot retry a
    // weeks-old promo whose delivery record is gone.
    assert_eq!(
        broadcasts::prune(&pool, RETENTION).await.unwrap(),
        broadcasts::Pruned::default()
    );
    let dead: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE logical_key = $1 AND state = 'discarded'")
        .bind(broadcasts::message_key(old, 6))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        ops::retry(&pool, dead).await.unwrap(),
        ops::Change::WrongState("discarded".into())
    );
}

#[tokio::test]
async fn a_retried_message_holds_its_broadcast_until_it_ends() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=3).await;
    let b = send_now(&pool, "retry", Audience::AllUsers, &["a"]).await.broadcast_id;
    run_fan_out(&pool, 100).await;
    settle(&pool, b, 1, Outcome::Sent).await;
    settle(&pool, b, 2, Outcome::Failed).await;
    settle(&pool, b, 3, Outcome::Failed).await;
    let state_of = |chat: i64| {
        sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE logical_key = $1")
            .bind(broadcasts::message_key(b, chat))
            .fetch_one(&pool)
    };
    // Ops retry the dead message: queued again, its `failed` outcome still recorded.
    sqlx::query("UPDATE jobs SET state = 'pending', finished_at = NULL WHERE logical_key = $1")
        .bind(broadcasts::message_key(b, 2))
        .execute(&pool)
        .await
        .unwrap();
    fanned_out_days_ago(&pool, b, 31).await;
    assert_eq!(
        broadcasts::prune(&pool, RETENTION).await.unwrap(),
        broadcasts::Pruned::default()
    );
    // Taken by a worker: still not.
    sqlx::query("UPDATE jobs SET state = 'running', locked_by = 'w', locked_at = now() WHERE logical_key = $1")
        .bind(broadcasts::message_key(b, 2))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        broadcasts::prune(&pool, RETENTION).await.unwrap(),
        broadcasts::Pruned::default()
    );
    // The summary backed off as a whole: chat 3's dead message can still be retried.
    assert_eq!(state_of(3).await.unwrap(), "dead");
    settle(&pool, b, 2, Outcome::Sent).await;
    assert_eq!(
        broadcasts::prune(&pool, RETENTION).await.unwrap(),
        broadcasts::Pruned {
            summarised: 1,
            recipients: 3
        }
    );
    let p = broadcasts::progress(&pool, b, 30.0).await.unwrap().unwrap();
    assert_eq!(
        (p.total, p.sent, p.failed),
        (3, 2, 1),
        "the retry's send is in the counts"
    );
    assert_eq!(state_of(3).await.unwrap(), "discarded");
}

#[tokio::test]
async fn processes_pruning_at_once_summarise_a_large_broadcast_once_in_batches() {
    let (url, pool) = pool().await;
    const USERS: i64 = 12_000;
    sqlx::query(
        "INSERT INTO telegram_chats (chat_id, first_seen_at, last_seen_at)
         SELECT id, now() - interval '1 hour', now() - interval '1 hour' FROM generate_series(1, $1) AS id",
    )
    .bind(USERS)
    .execute(&pool)
    .await
    .unwrap();
    let b = send_now(&pool, "big", Audience::AllUsers, &["a"]).await.broadcast_id;
    run_fan_out(&pool, 5000).await;
    // Every message sent, as the handler records it.
    sqlx::query(
        "WITH done AS (
             UPDATE jobs SET state = 'completed', finished_at = now()
             WHERE queue = 'notifications' AND logical_key LIKE 'broadcast:%' RETURNING id, logical_key, payload
         ), delivered AS (
             INSERT INTO telegram_deliveries (logical_key, chat_id, status, message_id, job_id)
             SELECT logical_key, (payload->>'chat_id')::bigint, 'sent', 1, id FROM done
         )
         INSERT INTO effect_ledger (queue, logical_key, job_id) SELECT 'notifications', logical_key, id FROM done",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE broadcast_recipients SET outcome = 'sent', done_at = now() WHERE broadcast_id = $1")
        .bind(b)
        .execute(&pool)
        .await
        .unwrap();
    fanned_out_days_ago(&pool, b, 31).await;

    let other = jobs::db::connect(&url, 10).await.unwrap();
    let (one, two) = tokio::join!(
        broadcasts::prune(&pool, RETENTION),
        broadcasts::prune(&other, RETENTION)
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.summarised + two.summarised, 1);
    // A pass that met the other's locks may stop early; the next one finishes.
    let rest = broadcasts::prune(&pool, RETENTION).await.unwrap();
    assert_eq!(one.recipients + two.recipients + rest.recipients, USERS as u64);
    assert_eq!(rows_of(&pool, b).await, (0, 0, 0));
    let p = broadcasts::progress(&pool, b, 30.0).await.unwrap().unwrap();
    assert_eq!((p.total, p.sent, p.pending), (USERS, USERS, 0));
}

#[tokio::test]
async fn a_click_is_not_credited_to_an_older_broadcast_when_a_later_one_was_pruned() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=2).await;
    let c = campaign("clk", Audience::AllUsers, Schedule::Every { hours: 4 }, &["a"]);
    campaigns::create(&pool, &c, Some(BOT)).await.unwrap();
    let first = broadcasts::begin(&pool, "clk", None)
        .await
        .unwrap()
        .unwrap()
        .broadcast_id;
    run_fan_out(&pool, 100).await;
    let second = broadcasts::begin(&pool, "clk", None)
        .await
        .unwrap()
        .unwrap()
        .broadcast_id;
    run_fan_out(&pool, 100).await;
    let mut conn = pool.acquire().await.unwrap();
    let clicked = |update: i64| click(update, 1, ("clk", "a"), Utc::now() + TimeDelta::seconds(1));
    let broadcast_of = |update: i64| {
        sqlx::query_scalar::<_, Option<i64>>("SELECT broadcast_id FROM promo_clicks WHERE update_id = $1")
            .bind(update)
            .fetch_one(&pool)
    };
    tracking::record(&mut conn, &clicked(1)).await.unwrap();
    assert_eq!(broadcast_of(1).await.unwrap(), Some(second));
    // The second broadcast is settled and pruned; the first still has a message queued and keeps
    // its rows, but the click may well have been on the second's message.
    for chat in 1..=2 {
        settle(&pool, second, chat, Outcome::Sent).await;
    }
    settle(&pool, first, 1, Outcome::Sent).await;
    fanned_out_days_ago(&pool, first, 31).await;
    fanned_out_days_ago(&pool, second, 31).await;
    let pruned = broadcasts::prune(&pool, RETENTION).await.unwrap();
    assert_eq!((pruned.summarised, pruned.recipients), (1, 2));
    tracking::record(&mut conn, &clicked(2)).await.unwrap();
    assert_eq!(broadcast_of(2).await.unwrap(), None);
}
