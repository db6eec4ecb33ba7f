//! Retention: an old broadcast whose messages have settled keeps its counts and loses its
//! per-recipient rows, in batches, once however many processes prune at once; what it means for
//! retries and later clicks.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jobs::marketing::broadcasts::{Outcome, Progress};
use jobs::marketing::campaigns::{Audience, Schedule};
use jobs::marketing::stats;
use jobs::queue::ops;
use jobs::telegram::store;
use jobs::tracking;
use sqlx::PgPool;

use crate::support::{BOT, broadcasts, campaign, campaigns, click, count, pool, run_fan_out, seen, send_now};

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
        ops::retry(&pool, dead, false).await.unwrap(),
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
