//! Telegram Stars payments and refunds applied to a real PostgreSQL, through the webhook's inbox:
//! a payment grants once, a renewal extends, a refund revokes once whoever learns of it first.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use jobs::billing::entitlements::{self, Status};
use jobs::billing::stars::{self, Applied};
use jobs::billing::{EntitlementsJob, Plans};
use jobs::bot::{Bot, Texts};
use jobs::inbox::telegram as inbox;
use sandbox::telegram_updates::{self as updates, Recurring};
use serde_json::Value;
use sqlx::PgPool;

const USER: i64 = 4242;
const T0: i64 = 1_760_000_000;
const DAY: i64 = 86_400;

const CATALOGUE: &str = r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stars_price": 250},
            "week": {"name": "Week pass", "entitlement": "pro", "period_days": 7, "stars_price": 90}}"#;

fn plans() -> Plans {
    Plans::parse(CATALOGUE).unwrap()
}

/// The bot billing speaks as, with [`CATALOGUE`] and the default texts.
fn bot() -> Bot<'static> {
    static PLANS: LazyLock<Plans> = LazyLock::new(plans);
    static TEXTS: LazyLock<Texts> = LazyLock::new(Texts::default);
    Bot {
        plans: &PLANS,
        texts: &TEXTS,
    }
}

async fn pool() -> PgPool {
    let url = sandbox::postgres::test_database().await;
    jobs::db::connect(&url, 5).await.unwrap()
}

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).unwrap()
}

/// Takes `update` as the webhook does, with the message's date set to `date`.
async fn receive(pool: &PgPool, mut update: Value, date: i64) {
    if update.get("message").is_some() {
        update["message"]["date"] = date.into();
    }
    inbox::accept(
        pool,
        Bot {
            plans: &plans(),
            texts: &Texts::default(),
        },
        &update.to_string(),
    )
    .await
    .unwrap();
}

/// Runs every queued `entitlements` job once, oldest first, as the worker does (without its
/// ledger: each job's effect is what is under test), then deletes it.
async fn run_jobs(pool: &PgPool) -> Vec<Applied> {
    run_jobs_ordered(pool, false).await
}

/// [`run_jobs`], newest first when `newest_first`.
async fn run_jobs_ordered(pool: &PgPool, newest_first: bool) -> Vec<Applied> {
    let mut jobs: Vec<(i64, String, Value)> =
        sqlx::query_as("SELECT id, logical_key, payload FROM jobs WHERE queue = 'entitlements' ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    if newest_first {
        jobs.reverse();
    }
    let mut applied = Vec::new();
    for (id, key, payload) in jobs {
        let job: EntitlementsJob = serde_json::from_value(payload).unwrap();
        let mut tx = pool.begin().await.unwrap();
        let outcome = match job {
            EntitlementsJob::StarsPayment(p) => stars::apply_payment(&mut tx, bot(), &p.charge_id, &key).await,
            EntitlementsJob::StarsRefund(r) => {
                stars::mark_refunded(&mut tx, bot(), &r.charge_id, r.refunded_at, &key).await
            }
            other => panic!("unexpected job {other:?}"),
        }
        .unwrap();
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        applied.push(outcome);
    }
    applied
}

async fn state(pool: &PgPool, charge: &str) -> Option<(Status, Option<DateTime<Utc>>, bool)> {
    let mut conn = pool.acquire().await.unwrap();
    entitlements::of_source(&mut conn, &stars::source(charge))
        .await
        .unwrap()
        .map(|e| (e.status, e.expires_at, e.renews))
}

/// The notification texts queued for `user`, oldest first.
async fn notices(pool: &PgPool, user: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT payload->>'text' FROM jobs WHERE queue = 'notifications' AND (payload->>'chat_id')::bigint = $1 ORDER BY id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_one_off_payment_grants_one_period_once() {
    let pool = pool().await;
    let paid = updates::successful_payment(1, USER, "week", 90, "stxW", None);
    receive(&pool, paid.clone(), T0).await;
    receive(&pool, paid, T0).await;
    assert_eq!(run_jobs(&pool).await, vec![Applied::Changed]);
    assert_eq!(
        state(&pool, "stxW").await,
        Some((Status::Active, Some(at(T0 + 7 * DAY)), false))
    );
    assert_eq!(notices(&pool, USER).await.len(), 1);
    // The job run again (a crash before its ledger row, say) changes nothing more.
    let mut tx = pool.begin().await.unwrap();
    let again = stars::apply_payment(&mut tx, bot(), "stxW", "again").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, Applied::Unchanged);
    assert_eq!(notices(&pool, USER).await.len(), 1);
}

#[tokio::test]
async fn a_subscription_renewal_extends_the_same_entitlement() {
    let pool = pool().await;
    let first = Recurring {
        expiration: T0 + 30 * DAY,
        is_first: true,
    };
    let renewal = Recurring {
        expiration: T0 + 60 * DAY,
        is_first: false,
    };
    receive(
        &pool,
        updates::successful_payment(1, USER, "pro", 250, "stx1", Some(first)),
        T0,
    )
    .await;
    run_jobs(&pool).await;
    assert_eq!(
        state(&pool, "stx1").await,
        Some((Status::Active, Some(at(T0 + 30 * DAY)), true))
    );
    receive(
        &pool,
        updates::successful_payment(2, USER, "pro", 250, "stx2", Some(renewal)),
        T0 + 30 * DAY,
    )
    .await;
    run_jobs(&pool).await;
    assert_eq!(
        state(&pool, "stx1").await,
        Some((Status::Active, Some(at(T0 + 60 * DAY)), true))
    );
    assert_eq!(
        state(&pool, "stx2").await,
        None,
        "a renewal starts no entitlement of its own"
    );
    let texts = notices(&pool, USER).await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("renewed"), "{texts:?}");
}

#[tokio::test]
async fn an_ops_refund_then_telegrams_refund_update_revoke_once() {
    let pool = pool().await;
    receive(
        &pool,
        updates::successful_payment(1, USER, "pro", 250, "stxR", None),
        T0,
    )
    .await;
    run_jobs(&pool).await;
    // The ops refund's job marks it refunded in its own transaction ...
    let mut tx = pool.begin().await.unwrap();
    let by_ops = stars::mark_refunded(&mut tx, bot(), "stxR", at(T0 + DAY), "refund:1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(by_ops, Applied::Changed);
    // ... then Telegram's refunded_payment update arrives, twice.
    for update_id in [2, 3] {
        receive(
            &pool,
            updates::refunded_payment(update_id, USER, "pro", 250, "stxR"),
            T0 + DAY,
        )
        .await;
    }
    assert_eq!(run_jobs(&pool).await, vec![Applied::Unchanged]);
    assert_eq!(state(&pool, "stxR").await.map(|s| s.0), Some(Status::Revoked));
    let texts = notices(&pool, USER).await;
    assert_eq!(texts.len(), 2, "one grant, one revocation: {texts:?}");
    assert!(texts[1].contains("refunded"), "{texts:?}");
    let mut conn = pool.acquire().await.unwrap();
    let history = entitlements::history(&mut conn, &stars::source("stxR")).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.status.as_str()).collect::<Vec<_>>(),
        vec!["active", "revoked"]
    );
}

#[tokio::test]
async fn a_refund_learnt_before_its_payment_is_applied_still_ends_revoked() {
    let pool = pool().await;
    receive(
        &pool,
        updates::successful_payment(1, USER, "pro", 250, "stxE", None),
        T0,
    )
    .await;
    receive(&pool, updates::refunded_payment(2, USER, "pro", 250, "stxE"), T0 + 60).await;
    // Jobs run newest first: the refund before the grant.
    assert_eq!(
        run_jobs_ordered(&pool, true).await,
        vec![Applied::Changed, Applied::Unchanged],
        "the refund records a revoked entitlement; the late grant finds nothing to change"
    );
    assert_eq!(state(&pool, "stxE").await.map(|s| s.0), Some(Status::Revoked));
    let texts = notices(&pool, USER).await;
    assert!(
        texts.iter().all(|t| !t.contains("active")),
        "never told it is active: {texts:?}"
    );
}

#[tokio::test]
async fn a_refund_of_a_payment_never_seen_changes_nothing() {
    let pool = pool().await;
    receive(&pool, updates::refunded_payment(1, USER, "pro", 250, "stxUNKNOWN"), T0).await;
    assert_eq!(run_jobs(&pool).await, vec![Applied::UnknownPayment]);
    assert_eq!(notices(&pool, USER).await.len(), 0);
}

#[tokio::test]
async fn a_banned_user_cannot_pay_and_a_sign_in_neither_lifts_the_ban_nor_loses_the_profile() {
    use jobs::billing::users::{self, Profile, ProvisionUser};
    use jobs::inbox::telegram::Reply;

    let pool = pool().await;
    let answer = async |update_id: i64| {
        let query = updates::pre_checkout_query(update_id, &format!("q{update_id}"), USER, "pro", "XTR", 250);
        match inbox::accept(
            &pool,
            Bot {
                plans: &plans(),
                texts: &Texts::default(),
            },
            &query.to_string(),
        )
        .await
        .unwrap()
        .reply
        {
            Some(Reply::AnswerPreCheckoutQuery { ok, .. }) => ok,
            other => panic!("{other:?}"),
        }
    };
    let mut conn = pool.acquire().await.unwrap();
    users::set_banned(&mut conn, USER, true).await.unwrap();
    assert!(!answer(1).await, "banned before ever signing in");
    let sign_in = ProvisionUser {
        profile: Profile {
            id: USER,
            first_name: "Grace".into(),
            last_name: None,
            username: Some("grace".into()),
            language_code: None,
            is_premium: false,
            allows_write_to_pm: true,
            photo_url: None,
        },
        signed_in_at: at(T0),
    };
    users::upsert(&mut conn, &sign_in).await.unwrap();
    assert!(!answer(2).await, "a sign-in does not lift the ban");
    let name: String = sqlx::query_scalar("SELECT first_name FROM telegram_users WHERE id = $1")
        .bind(USER)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(name, "Grace");
    users::set_banned(&mut conn, USER, false).await.unwrap();
    assert!(answer(3).await);
    // An older sign-in processed late does not overwrite the newer profile.
    let older = ProvisionUser {
        profile: Profile {
            first_name: "Old".into(),
            ..sign_in.profile.clone()
        },
        signed_in_at: at(T0 - DAY),
    };
    users::upsert(&mut conn, &older).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT first_name FROM telegram_users WHERE id = $1")
        .bind(USER)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(name, "Grace");
}

#[tokio::test]
async fn buying_a_one_off_plan_again_extends_it_and_refunding_one_takes_back_its_period() {
    let pool = pool().await;
    receive(
        &pool,
        updates::successful_payment(1, USER, "week", 90, "stxA", None),
        T0,
    )
    .await;
    receive(
        &pool,
        updates::successful_payment(2, USER, "week", 90, "stxB", None),
        T0 + DAY,
    )
    .await;
    run_jobs(&pool).await;
    assert_eq!(
        state(&pool, "stxA").await,
        Some((Status::Active, Some(at(T0 + 14 * DAY)), false))
    );
    assert_eq!(
        state(&pool, "stxB").await,
        None,
        "both count toward the first purchase's source"
    );
    receive(
        &pool,
        updates::refunded_payment(3, USER, "week", 90, "stxB"),
        T0 + 2 * DAY,
    )
    .await;
    run_jobs(&pool).await;
    assert_eq!(
        state(&pool, "stxA").await,
        Some((Status::Active, Some(at(T0 + 7 * DAY)), false))
    );
    receive(
        &pool,
        updates::refunded_payment(4, USER, "week", 90, "stxA"),
        T0 + 2 * DAY,
    )
    .await;
    run_jobs(&pool).await;
    assert_eq!(state(&pool, "stxA").await.map(|s| s.0), Some(Status::Revoked));
}

#[tokio::test]
async fn a_payment_update_that_comes_after_its_refund_is_recorded_refunded() {
    let pool = pool().await;
    // Telegram redelivers the payment's update (its first delivery failed) after the refund's.
    receive(
        &pool,
        updates::refunded_payment(2, USER, "pro", 250, "stxLATE"),
        T0 + 60,
    )
    .await;
    assert_eq!(run_jobs(&pool).await, vec![Applied::UnknownPayment]);
    receive(
        &pool,
        updates::successful_payment(1, USER, "pro", 250, "stxLATE", None),
        T0,
    )
    .await;
    run_jobs(&pool).await;
    assert_eq!(state(&pool, "stxLATE").await.map(|s| s.0), Some(Status::Revoked));
    let texts = notices(&pool, USER).await;
    assert!(
        texts.iter().all(|t| !t.contains("active")),
        "never told it is active: {texts:?}"
    );
}

#[tokio::test]
async fn a_refund_and_a_rerun_grant_of_one_payment_in_flight_together_end_revoked() {
    let pool = pool().await;
    receive(
        &pool,
        updates::successful_payment(1, USER, "pro", 250, "stxRACE", None),
        T0,
    )
    .await;
    run_jobs(&pool).await;
    // The refund's transaction has written its facts but not committed ...
    let mut refund = pool.begin().await.unwrap();
    let applied = stars::mark_refunded(&mut refund, bot(), "stxRACE", at(T0 + DAY), "refund:1")
        .await
        .unwrap();
    assert_eq!(applied, Applied::Changed);
    // ... when the grant job runs again (a retry after a lost commit acknowledgement, say).
    let grant = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let applied = stars::apply_payment(&mut tx, bot(), "stxRACE", "again").await.unwrap();
            tx.commit().await.unwrap();
            applied
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    refund.commit().await.unwrap();
    // Serialised per source, the grant sees the refund and changes nothing.
    assert_eq!(grant.await.unwrap(), Applied::Unchanged);
    assert_eq!(state(&pool, "stxRACE").await.map(|s| s.0), Some(Status::Revoked));
}

#[tokio::test]
async fn old_updates_are_pruned_and_what_they_brought_stays_deduplicated() {
    let pool = pool().await;
    let paid = updates::successful_payment(1, USER, "pro", 250, "stxOLD", None);
    receive(&pool, paid.clone(), T0).await;
    run_jobs(&pool).await;
    sqlx::query("UPDATE telegram_updates SET received_at = now() - interval '3 days'")
        .execute(&pool)
        .await
        .unwrap();
    // A message in a group (which the bot does not answer), so that it queues nothing.
    let mut in_group = updates::text_message(2, USER, "hi");
    in_group["message"]["chat"] = serde_json::json!({"id": -1001, "type": "supergroup", "title": "G"});
    receive(&pool, in_group, T0).await;
    let pruned = inbox::prune(&pool, std::time::Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        pruned, 1,
        "only what is older than two days, whatever the retention asked"
    );
    // A very late repeat of the pruned update is stored again but pays nothing twice.
    receive(&pool, paid, T0).await;
    assert_eq!(run_jobs(&pool).await, Vec::<Applied>::new());
    assert_eq!(notices(&pool, USER).await.len(), 1);
}
