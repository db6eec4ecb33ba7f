//! Stripe events applied to a real PostgreSQL: every order and every repeat of a subscription's
//! events ends in the same entitlement, and each change is recorded and told once.

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use jobs::billing::Plans;
use jobs::billing::entitlements::{self, Status};
use jobs::billing::stripe::{Links, Outcome, apply_event, source};
use jobs::bot::{Bot, Texts};
use jobs::inbox::stripe::{Ingested, ingest};
use jobs::metrics::counters;
use jobs::stripe::objects::Event;
use sandbox::stripe_events::Subscription;
use serde_json::Value;
use sqlx::PgPool;

const T0: i64 = 1_760_000_000;
const DAY: i64 = 86_400;
const USER: i64 = 4242;

const CATALOGUE: &str =
    r#"{"pro_monthly": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro"}}"#;

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

fn links() -> Links {
    Links {
        billing_portal: Some("https://t.me/paygate_bot/app?startapp=billing".into()),
    }
}

async fn pool() -> PgPool {
    let url = sandbox::postgres::test_database().await;
    jobs::db::connect(&url, 5).await.unwrap()
}

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).unwrap()
}

/// Stores `event` as the webhook endpoint does and applies it as its job does.
async fn deliver(pool: &PgPool, event: &Value) -> Outcome {
    let raw = event.to_string();
    let parsed: Event = serde_json::from_str(&raw).unwrap();
    let mut tx = pool.begin().await.unwrap();
    ingest(&mut tx, &parsed, &raw).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let outcome = apply_event(&mut tx, bot(), &links(), &parsed.id).await.unwrap();
    tx.commit().await.unwrap();
    outcome
}

/// The entitlement of `sub` as (status, expires_at, renews), if any.
async fn state(pool: &PgPool, sub: &Subscription) -> Option<(Status, Option<DateTime<Utc>>, bool)> {
    let mut conn = pool.acquire().await.unwrap();
    entitlements::of_source(&mut conn, &source(&sub.id))
        .await
        .unwrap()
        .map(|e| (e.status, e.expires_at, e.renews))
}

/// The notification texts queued for `user`, oldest first.
async fn notices(pool: &PgPool, user: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT payload->>'text' FROM jobs WHERE queue = 'notifications' AND (payload->>'chat_id')::bigint = $1
         ORDER BY id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for i in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(i, n - 1);
            all.push(p);
        }
    }
    all
}

#[tokio::test]
async fn every_order_of_a_subscriptions_events_ends_in_the_same_entitlement() {
    let pool = pool().await;
    let orders = permutations(5);
    assert_eq!(orders.len(), 120);
    for (i, order) in orders.iter().enumerate() {
        let sub = Subscription::new(&format!("order{i}"), USER + i as i64, "pro_monthly", "price_pro");
        let events = [
            sub.checkout_session("checkout.session.completed", "paid", T0),
            sub.invoice_paid(1, T0 + 30 * DAY, T0 + 1),
            // Two snapshots of the subscription: the later one (cancel at period end) must win.
            sub.subscription("updated", "active", false, T0 + DAY),
            sub.subscription("updated", "active", true, T0 + 2 * DAY),
            sub.invoice_paid(2, T0 + 60 * DAY, T0 + 30 * DAY),
        ];
        for &e in order {
            deliver(&pool, &events[e]).await;
        }
        assert_eq!(
            state(&pool, &sub).await,
            Some((Status::Active, Some(at(T0 + 60 * DAY)), false)),
            "order {order:?}"
        );
        // Every message is about this user's access, and none is told twice.
        let told = notices(&pool, sub.user_id).await;
        let mut unique = told.clone();
        unique.dedup();
        assert_eq!(told, unique, "order {order:?}");
        assert!(!told.is_empty(), "order {order:?}");
    }
}

#[tokio::test]
async fn repeated_events_change_nothing_and_enqueue_nothing() {
    let pool = pool().await;
    let sub = Subscription::new("repeat", USER, "pro_monthly", "price_pro");
    let paid = sub.checkout_session("checkout.session.completed", "paid", T0);
    assert_eq!(deliver(&pool, &paid).await, Outcome::Applied);
    let jobs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The same event id again: the inbox refuses it.
    let raw = paid.to_string();
    let parsed: Event = serde_json::from_str(&raw).unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(ingest(&mut tx, &parsed, &raw).await.unwrap(), Ingested::Duplicate);
    tx.commit().await.unwrap();
    // Stripe resending the same state under a new event id: recorded, no change, no message.
    let again = sub.checkout_session("checkout.session.completed", "paid", T0);
    assert_eq!(deliver(&pool, &again).await, Outcome::Recorded);
    let jobs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        jobs_after,
        jobs_before + 1,
        "only the second event's own processing job"
    );
    let mut conn = pool.acquire().await.unwrap();
    let history = entitlements::history(&mut conn, &source(&sub.id)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, "active");
    assert_eq!(
        history[0].cause,
        format!("stripe_event:{}", paid["id"].as_str().unwrap())
    );
    // The checkout's provisional period is the plan's 30 days.
    assert_eq!(history[0].expires_at, Some(at(T0 + 30 * DAY)));
}

#[tokio::test]
async fn a_refund_revokes_once_in_whichever_order_its_events_arrive() {
    let pool = pool().await;
    for (i, order) in permutations(4).iter().enumerate() {
        let sub = Subscription::new(&format!("refund{i}"), 9000 + i as i64, "pro_monthly", "price_pro");
        let events = [
            sub.checkout_session("checkout.session.completed", "paid", T0),
            sub.invoice_paid(1, T0 + 30 * DAY, T0 + 1),
            sub.invoice_payment_paid(1, T0 + 1),
            sub.charge_refunded(1, true, T0 + DAY),
        ];
        for &e in order {
            deliver(&pool, &events[e]).await;
        }
        // Repeats of the refund change nothing.
        deliver(&pool, &sub.charge_refunded(1, true, T0 + DAY)).await;
        let (status, _, renews) = state(&pool, &sub).await.expect("an entitlement exists");
        assert_eq!((status, renews), (Status::Revoked, false), "order {order:?}");
        let mut conn = pool.acquire().await.unwrap();
        let history = entitlements::history(&mut conn, &source(&sub.id)).await.unwrap();
        let revocations = history.iter().filter(|c| c.status == "revoked").count();
        assert_eq!(revocations, 1, "order {order:?}: {history:?}");
        let ended = notices(&pool, sub.user_id)
            .await
            .into_iter()
            .filter(|t| t.contains("has ended"))
            .count();
        assert!(ended <= 1, "order {order:?}");
    }
}

#[tokio::test]
async fn partial_refunds_keep_access_disputes_suspend_deletion_revokes() {
    let pool = pool().await;
    let sub = Subscription::new("life", USER, "pro_monthly", "price_pro");
    deliver(&pool, &sub.invoice_paid(1, T0 + 30 * DAY, T0)).await;
    deliver(&pool, &sub.invoice_payment_paid(1, T0)).await;
    assert_eq!(state(&pool, &sub).await.unwrap().0, Status::Active);

    assert_eq!(
        deliver(&pool, &sub.charge_refunded(1, false, T0 + 1)).await,
        Outcome::Ignored
    );
    assert_eq!(state(&pool, &sub).await.unwrap().0, Status::Active);

    assert_eq!(deliver(&pool, &sub.dispute_created(1, T0 + 2)).await, Outcome::Applied);
    assert_eq!(state(&pool, &sub).await.unwrap().0, Status::Suspended);

    let deleted = sub.subscription("deleted", "canceled", false, T0 + 3);
    assert_eq!(deliver(&pool, &deleted).await, Outcome::Applied);
    assert_eq!(
        state(&pool, &sub).await.unwrap(),
        (Status::Revoked, Some(at(T0 + 3)), false)
    );
    // A late subscription.updated from before the deletion does not bring it back.
    deliver(&pool, &sub.subscription("updated", "active", false, T0 + 1)).await;
    assert_eq!(state(&pool, &sub).await.unwrap().0, Status::Revoked);

    let told = notices(&pool, USER).await;
    assert!(told[0].contains("active until"), "{told:?}");
    assert!(
        told.iter().any(|t| t.contains("suspended: a payment is disputed")),
        "{told:?}"
    );
    assert!(
        told.last()
            .unwrap()
            .contains("has ended: the subscription was cancelled"),
        "{told:?}"
    );
}

#[tokio::test]
async fn an_async_payment_grants_only_when_it_succeeds_and_failures_are_told() {
    let pool = pool().await;
    let sub = Subscription::new("sepa", USER, "pro_monthly", "price_pro");
    let pending = sub.checkout_session("checkout.session.completed", "unpaid", T0);
    assert_eq!(deliver(&pool, &pending).await, Outcome::Recorded);
    assert_eq!(state(&pool, &sub).await, None);
    let succeeded = sub.checkout_session("checkout.session.async_payment_succeeded", "paid", T0 + DAY);
    assert_eq!(deliver(&pool, &succeeded).await, Outcome::Applied);
    assert_eq!(state(&pool, &sub).await.unwrap().0, Status::Active);

    let other = Subscription::new("sepa_failed", USER + 1, "pro_monthly", "price_pro");
    deliver(
        &pool,
        &other.checkout_session("checkout.session.completed", "unpaid", T0),
    )
    .await;
    let failed = other.checkout_session("checkout.session.async_payment_failed", "unpaid", T0 + DAY);
    assert_eq!(deliver(&pool, &failed).await, Outcome::Notified);
    assert_eq!(state(&pool, &other).await, None);
    assert!(notices(&pool, other.user_id).await[0].contains("did not go through"));
}

#[tokio::test]
async fn a_failed_invoice_payment_sends_the_user_to_the_billing_portal() {
    let pool = pool().await;
    let sub = Subscription::new("failing", USER, "pro_monthly", "price_pro");
    let failed = sub.invoice_payment_failed(2, T0 + 60 * DAY, T0 + 30 * DAY);
    assert_eq!(deliver(&pool, &failed).await, Outcome::Notified);
    let buttons: Value =
        sqlx::query_scalar("SELECT payload->'buttons' FROM jobs WHERE queue = 'notifications' AND logical_key = $1")
            .bind(format!("stripe_event:{}:notice", failed["id"].as_str().unwrap()))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(buttons[0][0]["url"], "https://t.me/paygate_bot/app?startapp=billing");
    assert_eq!(
        buttons[1][0]["url"],
        format!("https://invoice.stripe.com/i/{}", sub.invoice(2))
    );
    let failed_count = counters::all(&pool)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "billing_payments_total" && c.labels == "status=\"failed\"")
        .map(|c| c.value);
    assert_eq!(failed_count, Some(1.0));
}

#[tokio::test]
async fn unknown_types_and_stripes_own_fixtures_are_stored_and_acknowledged() {
    let pool = pool().await;
    // Stripe's example objects, unchanged, under the types we act on: they parse, and objects
    // that are not ours (a one-off payment checkout, an invoice without a subscription) are ignored.
    for (kind, object) in [
        ("checkout.session.completed", "checkout.session"),
        ("invoice.paid", "invoice"),
        ("customer.subscription.updated", "subscription"),
        ("charge.refunded", "charge"),
        ("charge.dispute.created", "dispute"),
        ("product.created", "product"),
    ] {
        let object = if object == "product" {
            // A NUL character, which a jsonb column would refuse.
            serde_json::json!({"id": "prod_1", "object": "product", "name": "nul\u{0}here"})
        } else {
            sandbox::stripe::fixture(object)
        };
        let event = sandbox::stripe::event(kind, object, T0);
        let outcome = deliver(&pool, &event).await;
        assert!(
            matches!(outcome, Outcome::Ignored | Outcome::Recorded),
            "{kind}: {outcome:?}"
        );
    }
    let unprocessed: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE outcome IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unprocessed, 0);
}

#[tokio::test]
async fn the_invoices_own_period_replaces_the_provisional_one_from_checkout_in_either_order_and_is_told_once() {
    let pool = pool().await;
    for (tag, invoice_first) in [("provisional_a", false), ("provisional_b", true)] {
        let sub = Subscription::new(tag, USER + i64::from(invoice_first), "pro_monthly", "price_pro");
        let checkout = sub.checkout_session("checkout.session.completed", "paid", T0);
        // A calendar month is 31 days here; the plan's provisional period is 30.
        let invoice = sub.invoice_paid(1, T0 + 31 * DAY, T0 + 1);
        let (first, second) = if invoice_first {
            (&invoice, &checkout)
        } else {
            (&checkout, &invoice)
        };
        deliver(&pool, first).await;
        deliver(&pool, second).await;
        assert_eq!(
            state(&pool, &sub).await,
            Some((Status::Active, Some(at(T0 + 31 * DAY)), true)),
            "invoice first: {invoice_first}"
        );
        // One period, one message: the exact end correcting the provisional one is no renewal.
        let told = notices(&pool, sub.user_id).await;
        assert_eq!(told.len(), 1, "invoice first: {invoice_first}: {told:?}");
        assert!(told[0].starts_with("✅ Your Pro access is active until"), "{told:?}");
        // The next paid period is one.
        deliver(&pool, &sub.invoice_paid(2, T0 + 62 * DAY, T0 + 31 * DAY)).await;
        let told = notices(&pool, sub.user_id).await;
        assert_eq!(told.len(), 2, "invoice first: {invoice_first}: {told:?}");
        assert!(told[1].starts_with("🔄 Your Pro access is renewed until"), "{told:?}");
    }
}

#[tokio::test]
async fn a_reversal_naming_the_same_payment_twice_is_one_reversal() {
    let pool = pool().await;
    let sub = Subscription::new("twice", USER, "pro_monthly", "price_pro");
    deliver(&pool, &sub.invoice_paid(1, T0 + 30 * DAY, T0)).await;
    deliver(&pool, &sub.invoice_payment_paid(1, T0)).await;
    let pi = sub.payment_intent(1);
    let mut tx = pool.begin().await.unwrap();
    let outcome = jobs::billing::stripe::reverse(
        &mut tx,
        bot(),
        &[Some(pi.as_str()), None, Some(pi.as_str())],
        jobs::billing::stripe::Reversal::Refund,
        "refund:1",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(state(&pool, &sub).await.unwrap().0, Status::Revoked);
}

#[tokio::test]
async fn a_paid_invoice_queues_its_attribution_once_whichever_event_came_first() {
    let pool = pool().await;
    for (i, checkout_first) in [true, false].into_iter().enumerate() {
        let sub = Subscription::new(&format!("attr{i}"), USER + i as i64, "pro_monthly", "price_pro");
        let checkout = sub.checkout_session("checkout.session.completed", "paid", T0);
        let invoice = sub.invoice_paid(1, T0 + 30 * DAY, T0 + 1);
        let order = if checkout_first {
            [&checkout, &invoice]
        } else {
            [&invoice, &checkout]
        };
        for event in order {
            deliver(&pool, event).await;
        }
        // Stripe sending the invoice again under a new event id queues nothing more.
        let mut again = invoice.clone();
        again["id"] = format!("{}_again", invoice["id"].as_str().unwrap()).into();
        deliver(&pool, &again).await;
        let jobs: Vec<Value> = sqlx::query_scalar(
            "SELECT payload FROM jobs WHERE queue = 'tracking' AND (payload->>'user_id')::bigint = $1",
        )
        .bind(sub.user_id)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(jobs.len(), 1, "checkout first: {checkout_first}: {jobs:?}");
        assert_eq!(jobs[0]["kind"], "conversion");
        assert_eq!(jobs[0]["amount"], sandbox::stripe::PAYMENT_AMOUNT);
        assert_eq!(jobs[0]["currency"], sandbox::stripe::CURRENCY);
        assert!(
            jobs[0]["payment"].as_str().unwrap().starts_with("stripe:in_"),
            "{}",
            jobs[0]
        );
    }
}
