//! Time against a real PostgreSQL: the expiry pass queues each due entitlement once however many
//! passes run, the job ends it once with its history row, message and count, a renewal recorded
//! first keeps it, and reminders go out once per offset and paid end, and only where due.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use jobs::billing::Plans;
use jobs::billing::entitlements::{self, State, Status};
use jobs::billing::expiry::{self, ExpireEntitlement};
use jobs::bot::{Bot, Texts};
use sqlx::PgPool;

const GRACE: Duration = Duration::from_secs(6 * 3600);

fn plans() -> Plans {
    Plans::parse(r#"{"week": {"name": "Week pass", "entitlement": "pro", "period_days": 7, "stars_price": 75}}"#)
        .unwrap()
}

async fn pool() -> PgPool {
    let url = sandbox::postgres::test_database().await;
    jobs::db::connect(&url, 5).await.unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Records an active entitlement of `user` ending `ends_in` from now, last changed `set_ago`.
async fn holds(pool: &PgPool, user: i64, ends_in: TimeDelta, renews: bool, set_ago: TimeDelta) -> String {
    let source = format!("telegram_stars:c{user}");
    let state = State {
        user_id: user,
        plan: "week".into(),
        entitlement: "pro".into(),
        status: Status::Active,
        expires_at: Some(Utc::now() + ends_in),
        renews,
    };
    let mut tx = pool.begin().await.unwrap();
    entitlements::set(&mut tx, &source, &state, "test").await.unwrap();
    sqlx::query("UPDATE entitlements SET updated_at = now() - $2 WHERE source = $1")
        .bind(&source)
        .bind(set_ago)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source
}

/// Runs every queued expiry job, each in its own transaction as the worker runs it (with the
/// payload it was queued with); returns the sources each ended, in order.
async fn run_expiry_jobs(pool: &PgPool) -> Vec<String> {
    let queued: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM jobs WHERE queue = 'entitlements' AND logical_key LIKE 'expire:%' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let (plans, texts) = (plans(), Texts::default());
    let bot = Bot {
        plans: &plans,
        texts: &texts,
    };
    let mut ended = Vec::new();
    for payload in queued {
        let job: ExpireEntitlement = serde_json::from_value(payload).unwrap();
        let mut tx = pool.begin().await.unwrap();
        if expiry::expire(&mut tx, bot, &job, "expiry:test").await.unwrap() {
            ended.push(job.source.clone());
        }
        tx.commit().await.unwrap();
    }
    ended
}

#[tokio::test]
async fn due_entitlements_are_queued_once_and_ended_once_with_their_message() {
    let pool = pool().await;
    let week = TimeDelta::days(7);
    let past_grace = holds(&pool, 1, TimeDelta::hours(-7), false, week).await;
    // A Stars subscription whose renewal did not come within the grace.
    let lapsed_subscription = holds(&pool, 2, TimeDelta::hours(-8), true, week).await;
    holds(&pool, 3, TimeDelta::hours(-1), false, week).await; // in its grace
    holds(&pool, 4, TimeDelta::days(3), false, week).await; // running
    let renewed_meanwhile = holds(&pool, 6, TimeDelta::hours(-9), false, week).await;
    // A renewing Stripe subscription past its end is Stripe's to end (it may still collect).
    let stripe = State {
        user_id: 5,
        plan: "week".into(),
        entitlement: "pro".into(),
        status: Status::Active,
        expires_at: Some(Utc::now() - TimeDelta::hours(30)),
        renews: true,
    };
    let mut conn = pool.acquire().await.unwrap();
    entitlements::set(&mut conn, "stripe:sub_late", &stripe, "test")
        .await
        .unwrap();

    // Four passes at once, as four worker processes run them: one job per due entitlement.
    let passes = futures::future::join_all((0..4).map(|_| expiry::enqueue_due(&pool, GRACE))).await;
    let queued: u64 = passes.into_iter().map(Result::unwrap).sum();
    assert_eq!(queued, 3);
    // One of them is renewed before its job runs: the job leaves it.
    let renewal = State {
        user_id: 6,
        plan: "week".into(),
        entitlement: "pro".into(),
        status: Status::Active,
        expires_at: Some(Utc::now() + week),
        renews: false,
    };
    entitlements::set(&mut conn, &renewed_meanwhile, &renewal, "paid")
        .await
        .unwrap()
        .unwrap();

    // In the order of their ends.
    assert_eq!(run_expiry_jobs(&pool).await, [lapsed_subscription, past_grace.clone()]);
    assert!(run_expiry_jobs(&pool).await.is_empty(), "once");
    let still = entitlements::of_source(&mut conn, &renewed_meanwhile)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.status, Status::Active);
    let history = entitlements::history(&mut conn, &past_grace).await.unwrap();
    assert_eq!(
        history.iter().map(|c| c.status.as_str()).collect::<Vec<_>>(),
        ["active", "expired"]
    );
    assert_eq!(history[1].cause, "expiry:test");
    let told: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM jobs WHERE queue = 'notifications' AND logical_key LIKE 'entitlement_change:%'
         ORDER BY payload->>'chat_id'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(told.len(), 2);
    assert_eq!(told[0]["chat_id"], 1);
    assert_eq!(
        told[0]["text"],
        "Your Week pass access has ended. You can renew it any time:"
    );
    assert_eq!(told[0]["buttons"][0][0]["callback_data"], "plan:week");
    assert_eq!(
        count(
            &pool,
            "SELECT value::bigint FROM counters WHERE name = 'entitlement_expiries_total'"
        )
        .await,
        2
    );

    // A late event for the ended period does not open it again; a renewal does.
    let same = entitlements::of_source(&mut conn, &past_grace).await.unwrap().unwrap();
    let derived_again = State {
        user_id: 1,
        plan: "week".into(),
        entitlement: "pro".into(),
        status: Status::Active,
        expires_at: same.expires_at,
        renews: false,
    };
    assert!(
        entitlements::set(&mut conn, &past_grace, &derived_again, "late")
            .await
            .unwrap()
            .is_none()
    );
    let renewed = State {
        expires_at: Some(Utc::now() + week),
        ..derived_again
    };
    let change = entitlements::set(&mut conn, &past_grace, &renewed, "paid")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.entitlement.status, Status::Active);
}

#[tokio::test]
async fn reminders_go_out_once_per_offset_and_end_and_only_to_those_that_will_not_renew() {
    let pool = pool().await;
    let week = TimeDelta::days(7);
    let (plans, texts) = (plans(), Texts::default());
    let bot = Bot {
        plans: &plans,
        texts: &texts,
    };
    let hours = [72, 24];
    let in_two_days = holds(&pool, 1, TimeDelta::hours(50), false, week).await;
    holds(&pool, 2, TimeDelta::hours(20), false, week).await;
    holds(&pool, 3, TimeDelta::hours(20), true, week).await; // renews by itself
    holds(&pool, 4, TimeDelta::hours(20), false, TimeDelta::hours(1)).await; // a one-day pass just bought
    holds(&pool, 5, TimeDelta::days(5), false, week).await; // not yet

    let now = Utc::now();
    let passes = futures::future::join_all((0..3).map(|_| expiry::remind_due(&pool, bot, &hours, now))).await;
    let queued: u64 = passes.into_iter().map(Result::unwrap).sum();
    assert_eq!(queued, 2, "user 1 at 72 hours, user 2 at 24");
    let sent: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT logical_key, payload FROM jobs WHERE queue = 'notifications' ORDER BY payload->>'chat_id'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].0.ends_with(":72") && sent[1].0.ends_with(":24"), "{sent:?}");
    assert!(
        sent[1].1["text"]
            .as_str()
            .unwrap()
            .starts_with("⏳ Your Week pass access ends on "),
        "{sent:?}"
    );
    assert_eq!(sent[1].1["buttons"][0][0]["text"], "Renew Week pass");
    assert_eq!(expiry::remind_due(&pool, bot, &hours, now).await.unwrap(), 0, "once");

    // 27 hours later user 1 is inside 24 hours of the same end: the second reminder, once; user
    // 2's end has passed.
    let later = now + TimeDelta::hours(27);
    assert_eq!(expiry::remind_due(&pool, bot, &hours, later).await.unwrap(), 1);
    assert_eq!(expiry::remind_due(&pool, bot, &hours, later).await.unwrap(), 0);
    let second: String =
        sqlx::query_scalar("SELECT logical_key FROM jobs WHERE queue = 'notifications' ORDER BY id DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let id: i64 = sqlx::query_scalar("SELECT id FROM entitlements WHERE source = $1")
        .bind(&in_two_days)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        second.starts_with(&format!("reminder:{id}:")) && second.ends_with(":24"),
        "{second}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT value::bigint FROM counters WHERE name = 'entitlement_reminders_total'"
        )
        .await,
        3
    );
}
