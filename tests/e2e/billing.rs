//! Billing end to end: requests and events → worker → fake Stripe (through the real async-stripe
//! client) → entitlements → notifications seen by the fake Bot API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::World;
use jobs::billing::refunds::{self, NewRefund, Provider};
use jobs::billing::requests::{self, Kind};
use jobs::inbox::stripe::ingest;
use jobs::stripe::objects::Event;
use sandbox::stripe::Trigger;
use sandbox::stripe_events::Subscription;
use sandbox::telegram::Limits;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const DAY: i64 = 86_400;

async fn request(world: &World, user: i64, kind: Kind, key: &str) -> i64 {
    let plan = (kind == Kind::Checkout).then_some("pro_monthly");
    let mut tx = world.pool.begin().await.unwrap();
    let created = requests::create(&mut tx, user, kind, plan, Some(key), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    match created {
        requests::Created::New(r) => r.id,
        requests::Created::Existing(r) => panic!("request {} already existed", r.id),
        requests::Created::Limited { retry_after } => panic!("limited for {retry_after:?}"),
        requests::Created::AlreadySubscribed(e) => panic!("already subscribed: {e:?}"),
    }
}

/// (status, url, failure) of billing request `id`.
async fn settled(world: &World, id: i64) -> (String, Option<String>, Option<String>) {
    world
        .wait_for_count(
            &format!("SELECT count(*) FROM billing_requests WHERE id = {id} AND status <> 'pending'"),
            1,
            WAIT,
        )
        .await;
    sqlx::query_as("SELECT status, url, failure FROM billing_requests WHERE id = $1")
        .bind(id)
        .fetch_one(&world.pool)
        .await
        .unwrap()
}

fn form(request: &sandbox::stripe::StripeRequest, key: &str) -> Option<String> {
    request.form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// Delivers `event` to the inbox as the webhook endpoint does.
async fn deliver(world: &World, event: &Value) {
    let raw = event.to_string();
    let parsed: Event = serde_json::from_str(&raw).unwrap();
    let mut tx = world.pool.begin().await.unwrap();
    ingest(&mut tx, &parsed, &raw).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_checkout_request_becomes_a_stripe_session_for_the_user_and_plan() {
    let world = World::new(Limits::default()).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let id = request(&world, 77, Kind::Checkout, "k1").await;
    let (status, url, failure) = settled(&world, id).await;
    worker.stop().await;
    assert_eq!((status.as_str(), failure), ("ready", None));
    let sessions = world.stripe.checkout_sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(url.as_deref(), sessions[0]["url"].as_str());
    let sent = &world.stripe.requests()[0];
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.idempotency_key, Some(format!("paygate:checkout:{id}")));
    assert_eq!(form(sent, "mode").as_deref(), Some("subscription"));
    assert_eq!(form(sent, "client_reference_id").as_deref(), Some("77"));
    assert_eq!(form(sent, "line_items[0][price]").as_deref(), Some("price_pro_monthly"));
    assert_eq!(form(sent, "metadata[plan]").as_deref(), Some("pro_monthly"));
    assert_eq!(
        form(sent, "subscription_data[metadata][telegram_user_id]").as_deref(),
        Some("77")
    );
    assert_eq!(form(sent, "success_url").as_deref(), Some(e2e::SUCCESS_URL));
    assert_eq!(form(sent, "cancel_url").as_deref(), Some(e2e::CANCEL_URL));
}

#[tokio::test]
async fn a_stripe_500_is_retried_with_the_same_key_and_then_succeeds() {
    let world = World::new(Limits::default()).await;
    world.stripe.fail_next("/v1/checkout/sessions", 500, 1);
    let worker = world.start_worker(world.worker_config(30.0));
    let id = request(&world, 78, Kind::Checkout, "k1").await;
    // The retry comes after the first backoff step, 5 s ± 25%.
    let (status, url, _) = settled(&world, id).await;
    worker.stop().await;
    assert_eq!(status, "ready");
    assert!(url.is_some());
    let calls = world.stripe.requests();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(world.stripe.checkout_sessions().len(), 1);
    let errors: Value = sqlx::query_scalar("SELECT errors FROM jobs WHERE logical_key = $1")
        .bind(format!("billing_request:{id}"))
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors}");
}

#[tokio::test]
async fn a_stripe_outage_through_the_last_attempt_fails_the_request_instead_of_leaving_it_pending() {
    let world = World::new(Limits::default()).await;
    world.stripe.fail_next("/v1/checkout/sessions", 503, 2);
    let id = request(&world, 80, Kind::Checkout, "k1").await;
    // Two attempts instead of twelve, so that the test waits one backoff step.
    sqlx::query("UPDATE jobs SET max_attempts = 2 WHERE logical_key = $1")
        .bind(format!("billing_request:{id}"))
        .execute(&world.pool)
        .await
        .unwrap();
    let worker = world.start_worker(world.worker_config(30.0));
    let (status, url, failure) = settled(&world, id).await;
    worker.stop().await;
    assert_eq!((status.as_str(), url), ("failed", None));
    let failure = failure.unwrap();
    assert!(
        failure.starts_with("Stripe could not be reached after 2 attempts"),
        "{failure}"
    );
    assert_eq!(world.stripe.count("/v1/checkout/sessions"), 2);
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE logical_key = $1")
        .bind(format!("billing_request:{id}"))
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(state, "completed");
}

#[tokio::test]
async fn a_stripe_400_fails_the_request_with_stripes_reason_and_no_retry() {
    let world = World::new(Limits::default()).await;
    world.stripe.reject_price("price_pro_monthly");
    let worker = world.start_worker(world.worker_config(30.0));
    let id = request(&world, 79, Kind::Checkout, "k1").await;
    let (status, url, failure) = settled(&world, id).await;
    worker.stop().await;
    assert_eq!((status.as_str(), url), ("failed", None));
    assert!(failure.unwrap().contains("No such price"));
    assert_eq!(world.stripe.count("/v1/checkout/sessions"), 1);
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE logical_key = $1")
        .bind(format!("billing_request:{id}"))
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(state, "completed");
}

#[tokio::test]
async fn a_portal_request_creates_the_customer_once_and_reuses_it() {
    let world = World::new(Limits::default()).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let first = request(&world, 80, Kind::Portal, "p1").await;
    let (status, url, _) = settled(&world, first).await;
    assert_eq!(status, "ready");
    let second = request(&world, 80, Kind::Portal, "p2").await;
    let (status, _, _) = settled(&world, second).await;
    worker.stop().await;
    assert_eq!(status, "ready");
    assert_eq!(world.stripe.count("/v1/customers"), 1);
    let portals = world.stripe.portal_sessions();
    assert_eq!(portals.len(), 2);
    assert_eq!(portals[0]["customer"], portals[1]["customer"]);
    assert_eq!(portals[0]["return_url"], e2e::PORTAL_RETURN_URL);
    assert_eq!(url.as_deref(), portals[0]["url"].as_str());
}

#[tokio::test]
async fn no_connection_is_held_while_stripe_creates_a_customer() {
    let world = World::new(Limits::default()).await;
    // Two connections: one is the LISTEN for new jobs, one for all the jobs. One held across a
    // slow Stripe call would stop every other job until Stripe answered.
    let worker = world.start_worker(worker::config::Config {
        database_pool_size: 2,
        ..world.worker_config(30.0)
    });
    let held = world.stripe.hold("/v1/customers");
    let portal = request(&world, 82, Kind::Portal, "p1").await;
    let deadline = std::time::Instant::now() + WAIT;
    while held.arrived() == 0 {
        assert!(std::time::Instant::now() < deadline, "the customer was never asked for");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stripe is still creating the customer; the worker's connection serves another job.
    world.notify("while-stripe-thinks", 82, "hello").await;
    world
        .wait_for_count(
            "SELECT count(*) FROM telegram_deliveries WHERE status = 'sent'",
            1,
            WAIT,
        )
        .await;
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM billing_requests WHERE id = {portal} AND status = 'pending'"
            ))
            .await,
        1
    );
    drop(held);
    let (status, _, _) = settled(&world, portal).await;
    worker.stop().await;
    assert_eq!(status, "ready");
    assert_eq!(world.stripe.count("/v1/customers"), 1);
}

#[tokio::test]
async fn a_paid_subscription_is_granted_and_told_and_an_ops_refund_revokes_it_once() {
    let world = World::new(Limits::default()).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let sub = Subscription::new("e2e_refund", 81, "pro_monthly", "price_pro_monthly");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    deliver(&world, &sub.checkout_session("checkout.session.completed", "paid", now)).await;
    deliver(&world, &sub.invoice_paid(1, now + 30 * DAY, now)).await;
    deliver(&world, &sub.invoice_payment_paid(1, now)).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM entitlements WHERE user_id = 81 AND status = 'active'",
            1,
            WAIT,
        )
        .await;
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries WHERE chat_id = 81", 1, WAIT)
        .await;

    let refund = NewRefund {
        provider: Provider::Stripe,
        payment: sub.payment_intent(1),
        amount: None,
        reason: Some("requested_by_customer".into()),
    };
    let mut tx = world.pool.begin().await.unwrap();
    let created = refunds::create(&mut tx, &refund, Some("r1")).await.unwrap();
    tx.commit().await.unwrap();
    let refunds::Created::New(refund) = created else {
        panic!("a new refund")
    };
    world
        .wait_for_count(
            "SELECT count(*) FROM entitlements WHERE user_id = 81 AND status = 'revoked'",
            1,
            WAIT,
        )
        .await;
    // Stripe's event about the same refund follows; it must not revoke or tell again.
    deliver(&world, &sub.charge_refunded(1, true, now + 60)).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM stripe_events WHERE type = 'charge.refunded' AND outcome IS NOT NULL",
            1,
            WAIT,
        )
        .await;
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries WHERE chat_id = 81", 2, WAIT)
        .await;
    worker.stop().await;

    let (status, stripe_refund): (String, Option<String>) =
        sqlx::query_as("SELECT status, provider_refund_id FROM refunds WHERE id = $1")
            .bind(refund.id)
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
    assert_eq!(stripe_refund.as_deref(), world.stripe.refunds()[0]["id"].as_str());
    assert_eq!(
        world.stripe.requests()[0].idempotency_key,
        Some(format!("paygate:refund:{}", refund.id))
    );
    let revocations = world
        .count("SELECT count(*) FROM entitlement_changes WHERE status = 'revoked'")
        .await;
    assert_eq!(revocations, 1);
    let told = world.telegram.texts_to(81);
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told[0].contains("Pro access is active until"), "{told:?}");
    assert!(told[1].contains("has ended: the payment was refunded"), "{told:?}");
}

/// The whole Stripe path over HTTP, as a client and Stripe see it: a user asks for Checkout and
/// long-polls its URL, "pays" (Stripe's signed webhooks arrive, twice and out of order), sees the
/// entitlement, and the confirmation reaches the fake Bot API once.
#[tokio::test]
async fn checkout_over_http_then_signed_webhooks_grant_what_the_user_sees() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let user = 4321;
    let token = api::auth::issue_user_token(&world.jwt(), user, chrono::Utc::now());

    let created = http
        .post(format!("{api}/v1/billing/checkout"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "buy-1")
        .json(&serde_json::json!({"plan": "pro_monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
    let status_url = created["status_url"].as_str().unwrap().to_string();
    let ready: Value = e2e::get_json(&http, &format!("{api}{status_url}?wait=10"), &token).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let session = &world.stripe.checkout_sessions()[0];
    assert_eq!(ready["url"], session["url"]);

    // Stripe's events for the payment: the invoice's before the session's, one of them twice.
    let sub = Subscription::new("http_flow", user, "pro_monthly", "price_pro_monthly");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let invoice = sub.invoice_paid(1, now + 30 * DAY, now);
    for event in [
        &invoice,
        &sub.checkout_session("checkout.session.completed", "paid", now),
        &invoice,
    ] {
        assert_eq!(e2e::post_stripe_event(&http, &api, event).await, 200);
    }
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries WHERE chat_id = 4321", 1, WAIT)
        .await;
    let mine: Value = e2e::get_json(&http, &format!("{api}/v1/me/entitlements"), &token).await;
    worker.stop().await;
    let entitlements = mine["entitlements"].as_array().unwrap();
    assert_eq!(entitlements.len(), 1, "{mine}");
    assert_eq!(entitlements[0]["entitlement"], "pro");
    assert_eq!(entitlements[0]["source"], format!("stripe:{}", sub.id));
    assert_eq!(world.count("SELECT count(*) FROM stripe_events").await, 2);
    let told = world.telegram.texts_to(user);
    assert_eq!(told.len(), 1);
    assert!(told[0].contains("Pro access is active until"));
}

#[tokio::test]
async fn a_refund_retried_past_stripes_key_memory_finds_the_refund_an_earlier_attempt_made() {
    let world = World::new(Limits::default()).await;
    let refund = NewRefund {
        provider: Provider::Stripe,
        payment: "pi_lost1".into(),
        amount: None,
        reason: None,
    };
    let mut tx = world.pool.begin().await.unwrap();
    let refunds::Created::New(refund) = refunds::create(&mut tx, &refund, Some("r-lost")).await.unwrap() else {
        panic!("a new refund")
    };
    tx.commit().await.unwrap();
    // Two days ago an attempt made the refund at Stripe, then lost its commit, and the job died;
    // Stripe has forgotten the key since.
    let made: Value = reqwest::Client::new()
        .post(format!("{}/v1/refunds", world.stripe.url()))
        .bearer_auth(sandbox::stripe::SECRET_KEY)
        .header("Idempotency-Key", format!("paygate:refund:{}", refund.id))
        .form(&[
            ("payment_intent", "pi_lost1"),
            ("metadata[refund_request_id]", &refund.id.to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    world.stripe.forget_idempotency_keys();
    sqlx::query("UPDATE refunds SET created_at = now() - interval '2 days' WHERE id = $1")
        .bind(refund.id)
        .execute(&world.pool)
        .await
        .unwrap();
    let job: i64 = sqlx::query_scalar(
        "UPDATE jobs SET state = 'dead', finished_at = now(), created_at = now() - interval '2 days'
         WHERE queue = 'refunds' RETURNING id",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();

    // Ops retry it, having been told what that risks.
    let refused = jobs::queue::ops::retry(&world.pool, job, false).await.unwrap();
    assert!(
        matches!(refused, jobs::queue::ops::Change::PastKeyMemory { .. }),
        "{refused:?}"
    );
    assert_eq!(
        jobs::queue::ops::retry(&world.pool, job, true).await.unwrap(),
        jobs::queue::ops::Change::Done
    );
    let worker = world.start_worker(world.worker_config(30.0));
    world.wait_for_job(job, "completed", WAIT).await;
    worker.stop().await;

    let (status, stripe_refund): (String, Option<String>) =
        sqlx::query_as("SELECT status, provider_refund_id FROM refunds WHERE id = $1")
            .bind(refund.id)
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
    assert_eq!(stripe_refund.as_deref(), made["id"].as_str());
    assert_eq!(world.stripe.refunds().len(), 1, "no second refund");
    assert_eq!(
        world.stripe.count("/v1/refunds"),
        2,
        "the lost attempt's, and the retry's look-up"
    );
}

/// The fake Stripe's triggers against the running system, as a developer uses them in place of
/// `stripe trigger`: a triggered checkout grants, a failed renewal tells the user, a resent event
/// changes nothing, a refund revokes; every delivery is listed with the api's answer.
#[tokio::test]
async fn triggered_stripe_events_drive_the_system_as_stripes_own_would() {
    let world = World::new(Limits::default()).await;
    world.start_api_receiving_stripe().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let user = 5151;
    let asked = Trigger {
        user_id: user,
        ..Trigger::default()
    };
    let active = "SELECT count(*) FROM entitlements WHERE user_id = 5151 AND status = 'active'";

    let started = world
        .stripe
        .trigger(
            "checkout.session.completed",
            &Trigger {
                plan: Some("pro_monthly".into()),
                ..asked.clone()
            },
        )
        .await
        .unwrap();
    assert!(started.deliveries.iter().all(|d| d.status == Some(200)), "{started:?}");
    world.wait_for_count(active, 1, WAIT).await;
    world.stripe.trigger("invoice.payment_failed", &asked).await.unwrap();
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries WHERE chat_id = 5151", 2, WAIT)
        .await;
    let first = &started.deliveries[0].event;
    let resent = reqwest::Client::new()
        .post(format!("{}/sandbox/webhooks/{first}/resend", world.stripe.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 200);
    world.stripe.trigger("charge.refunded", &asked).await.unwrap();
    world
        .wait_for_count(
            "SELECT count(*) FROM entitlements WHERE user_id = 5151 AND status = 'revoked'",
            1,
            WAIT,
        )
        .await;
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries WHERE chat_id = 5151", 3, WAIT)
        .await;
    worker.stop().await;

    let deliveries = world.stripe.deliveries();
    assert_eq!(deliveries.len(), 3 + 1 + 1 + 1, "{deliveries:?}");
    assert!(deliveries.iter().all(|d| d.succeeded()), "{deliveries:?}");
    // The resent event was stored once.
    assert_eq!(world.count("SELECT count(*) FROM stripe_events").await, 5);
    let told = world.telegram.texts_to(user);
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(told[0].contains("Pro access is active until"), "{told:?}");
    assert!(told[1].contains("The payment for your Pro plan failed"), "{told:?}");
    assert!(told[2].contains("has ended: the payment was refunded"), "{told:?}");
}
