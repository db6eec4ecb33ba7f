//! Who a broadcast reaches: its audiences, the paged fan-out and its re-runs, recipients'
//! outcomes, and how users join the audience (the migration's backfill, writing to the bot,
//! signing in) and leave it (blocks).

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use jobs::bot::{Bot, Texts};
use jobs::marketing::broadcasts::{FanOut, Outcome};
use jobs::marketing::campaigns::Audience;
use jobs::telegram::store;

use crate::support::{broadcasts, count, messages_of, pool, run_fan_out, seen, send_now};

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

#[tokio::test]
async fn users_known_before_campaigns_existed_join_the_audience_by_migration() {
    let (_, pool) = pool().await;
    // The migration's backfill statement, run again on rows written as before it.
    let migration = include_str!("../../../migrations/20261201000006_create_campaigns.sql");
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
async fn writing_to_the_bot_or_signing_in_joins_the_audience_and_blocks_come_and_go_in_order() {
    use jobs::billing::users;
    use jobs::inbox::telegram as inbox;

    let (_, pool) = pool().await;
    let plans =
        jobs::billing::Plans::parse(r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30}}"#).unwrap();
    let texts = Texts::default();
    let bot = Bot {
        plans: &plans,
        texts: &texts,
    };
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
    inbox::accept(&pool, bot, &write(1, 801, now - TimeDelta::hours(2)))
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
    inbox::accept(&pool, bot, &write(2, 801, now - TimeDelta::hours(1)))
        .await
        .unwrap();
    assert!(first_seen(801).await.unwrap().1, "still blocked");
    inbox::accept(&pool, bot, &write(3, 801, now + TimeDelta::seconds(5)))
        .await
        .unwrap();
    let (seen_again, blocked) = first_seen(801).await.unwrap();
    assert_eq!((seen_again, blocked), (seen, false));

    // Telegram tells of a block (`my_chat_member` kicked) before any send meets a 403; a block
    // older than the user's last message (delivered late) is ignored; a restart lifts it.
    let member = |update_id: i64, status: &str, date: DateTime<Utc>| {
        sandbox::telegram_updates::my_chat_member(update_id, 801, status, date.timestamp()).to_string()
    };
    inbox::accept(&pool, bot, &member(4, "kicked", now - TimeDelta::minutes(5)))
        .await
        .unwrap();
    assert!(!first_seen(801).await.unwrap().1, "older than the message of now + 5 s");
    inbox::accept(&pool, bot, &member(5, "kicked", now + TimeDelta::minutes(1)))
        .await
        .unwrap();
    assert!(first_seen(801).await.unwrap().1, "blocked");
    let b = send_now(&pool, "blocks", Audience::AllUsers, &["a"]).await;
    run_fan_out(&pool, 100).await;
    assert!(
        messages_of(&pool, b.broadcast_id).await.is_empty(),
        "a blocked user is left out"
    );
    inbox::accept(&pool, bot, &member(6, "member", now + TimeDelta::minutes(2)))
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
