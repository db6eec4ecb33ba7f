//! `POST /webhooks/stripe`: only deliveries Stripe signed get in, each event once.

use reqwest::StatusCode;
use sandbox::stripe::sign_webhook;
use sandbox::stripe_events::Subscription;
use serde_json::{Value, json};

use crate::helpers::{TestApp, WEBHOOK_SECRET, WEBHOOK_SECRET_ROLLED, assert_problem, now, sample, scrape, spawn_app};

/// A realistic first event of a subscription of user 42.
fn checkout_completed(tag: &str) -> Value {
    Subscription::new(tag, 42, "pro_monthly", "price_pro_monthly").checkout_session(
        "checkout.session.completed",
        "paid",
        now(),
    )
}

/// Asserts that nothing was stored: no inbox row, no job.
async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.count("stripe_events").await, 0, "no inbox row");
    assert_eq!(app.job_count().await, 0, "no job");
}

#[tokio::test]
async fn a_signed_event_is_stored_with_its_job() {
    let app = spawn_app().await;
    let event = checkout_completed("ok1");
    let body = event.to_string();
    let resp = app
        .deliver_raw(body.clone(), Some(&sign_webhook(&body, WEBHOOK_SECRET, now())))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"received": true, "duplicate": false})
    );

    let (id, kind, payload): (String, String, String) = sqlx::query_as("SELECT id, type, payload FROM stripe_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(id, event["id"].as_str().unwrap());
    assert_eq!(kind, "checkout.session.completed");
    assert_eq!(payload, body, "the body is stored byte for byte as sent");
    assert_eq!(
        app.jobs_of("entitlements").await,
        vec![(
            format!("stripe_event:{id}"),
            json!({"kind": "stripe_event", "event_id": id})
        )]
    );
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn a_repeated_delivery_is_acknowledged_and_stored_once() {
    let app = spawn_app().await;
    let event = checkout_completed("dup1");
    assert_eq!(app.deliver(&event).await.status(), StatusCode::OK);
    // Stripe's retry: the same event, signed again later.
    let resp = app.deliver(&event).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"received": true, "duplicate": true})
    );
    assert_eq!(app.count("stripe_events").await, 1);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let app = spawn_app().await;
    let body = checkout_completed("tamper").to_string();
    let signature = sign_webhook(&body, WEBHOOK_SECRET, now());
    let tampered = body.replace("\"paid\"", "\"unpaid\"");
    assert_ne!(tampered, body);
    let resp = app.deliver_raw(tampered, Some(&signature)).await;
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-signature").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("no v1 signature matches"),
        "{problem}"
    );
    // One byte of whitespace is tampering too: the signature covers the raw bytes.
    let resp = app.deliver_raw(format!("{body} "), Some(&signature)).await;
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-signature").await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let app = spawn_app().await;
    let body = checkout_completed("wrong").to_string();
    let resp = app
        .deliver_raw(body.clone(), Some(&sign_webhook(&body, "whsec_someone_else", now())))
        .await;
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-signature").await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_signature_more_than_300_seconds_off_is_refused_either_way() {
    let app = spawn_app().await;
    let body = checkout_completed("clock").to_string();
    for offset in [-301, 301] {
        let resp = app
            .deliver_raw(body.clone(), Some(&sign_webhook(&body, WEBHOOK_SECRET, now() + offset)))
            .await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-signature").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("300 s"),
            "{offset}: {problem}"
        );
    }
    assert_nothing_stored(&app).await;
    // Within the tolerance (with room for a slow test machine), the same body gets in.
    let resp = app
        .deliver_raw(body.clone(), Some(&sign_webhook(&body, WEBHOOK_SECRET, now() - 280)))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_secret_being_rolled_still_verifies() {
    let app = spawn_app().await;
    // Signed with the second secret of STRIPE_WEBHOOK_SECRET.
    let body = checkout_completed("roll1").to_string();
    let resp = app
        .deliver_raw(body.clone(), Some(&sign_webhook(&body, WEBHOOK_SECRET_ROLLED, now())))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Stripe rolling its side: two v1 signatures, only the second under a secret we hold.
    let body = checkout_completed("roll2").to_string();
    let t = now();
    let ours = sign_webhook(&body, WEBHOOK_SECRET, t);
    let theirs = sign_webhook(&body, "whsec_not_ours_0123456789", t);
    let v1 = |header: &str| header.split_once(",v1=").unwrap().1.to_string();
    let header = format!("t={t},v1={},v1={}", v1(&theirs), v1(&ours));
    let resp = app.deliver_raw(body, Some(&header)).await;
    assert_eq!(resp.status(), StatusCode::OK);

    assert_eq!(app.count("stripe_events").await, 2);
    assert_eq!(app.job_count().await, 2);
}

#[tokio::test]
async fn a_missing_or_malformed_signature_header_is_refused() {
    let app = spawn_app().await;
    let body = checkout_completed("hdr").to_string();
    let resp = app.deliver_raw(body.clone(), None).await;
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-signature").await;
    assert!(problem["detail"].as_str().unwrap().contains("missing"), "{problem}");

    let t = now();
    for header in [
        "garbage".to_string(),
        format!("t={t}"),
        "v1=abcd".to_string(),
        format!("t=soon,v1={}", "ab".repeat(32)),
        format!("t={t},t={t},v1={}", "ab".repeat(32)),
    ] {
        let resp = app.deliver_raw(body.clone(), Some(&header)).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-signature").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("Stripe-Signature"),
            "{header}: {problem}"
        );
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_signed_body_that_is_not_an_event_is_an_invalid_request() {
    let app = spawn_app().await;
    for body in [
        "this is not json".to_string(),
        json!({"id": "evt_1", "type": "invoice.paid"}).to_string(),
        json!([1, 2, 3]).to_string(),
    ] {
        let resp = app
            .deliver_raw(body.clone(), Some(&sign_webhook(&body, WEBHOOK_SECRET, now())))
            .await;
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_signed_event_with_a_nul_id_or_type_or_a_created_out_of_range_is_an_invalid_request() {
    let app = spawn_app().await;
    let with = |field: &str, value: Value| {
        let mut event = checkout_completed("bad");
        event[field] = value;
        event
    };
    for (event, says) in [
        (with("id", json!("evt_\u{0}")), "U+0000"),
        (with("type", json!("checkout.session.completed\u{0}")), "U+0000"),
        (with("created", json!(1_000_000_000_000_000_i64)), "created"),
        (with("created", json!(i64::MAX)), "created"),
        (with("created", json!(-1)), "created"),
        // Not an integer at all: serde's message does not name the field.
        (with("created", json!(1e15)), "expected i64"),
    ] {
        let resp = app.deliver(&event).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        assert!(problem["detail"].as_str().unwrap().contains(says), "{says}: {problem}");
    }
    assert_nothing_stored(&app).await;

    // Inside the object the body is stored as Stripe signed it (a text column holds the escape),
    // so a customer's name cannot make Stripe redeliver a payment for three days.
    let mut event = checkout_completed("nul-name");
    event["data"]["object"]["customer_details"] = json!({"name": "Ada\u{0}"});
    event["created"] = json!(253_402_300_799_i64);
    assert_eq!(app.deliver(&event).await.status(), StatusCode::OK);
    assert_eq!(app.count("stripe_events").await, 1);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn events_up_to_256_kib_are_taken() {
    let app = spawn_app().await;
    let mut event = checkout_completed("big");
    // Larger than other routes take (64 KiB), as an invoice with many lines can be.
    event["data"]["object"]["metadata"]["padding"] = json!("x".repeat(150 * 1024));
    assert_eq!(app.deliver(&event).await.status(), StatusCode::OK);

    let mut too_big = checkout_completed("huge");
    too_big["data"]["object"]["metadata"]["padding"] = json!("x".repeat(257 * 1024));
    let resp = app.deliver(&too_big).await;
    let problem = assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    assert!(problem["detail"].as_str().unwrap().contains("262144"), "{problem}");
    assert_eq!(app.count("stripe_events").await, 1);
}

#[tokio::test]
async fn deliveries_are_counted_by_type_and_outcome() {
    let app = spawn_app().await;
    let event = checkout_completed("metrics");
    app.deliver(&event).await;
    app.deliver(&event).await;
    let body = json!({"id": "evt_x", "type": "Weird\"Type"}).to_string();
    app.deliver_raw(body, Some("t=1,v1=00")).await;
    let mut odd = checkout_completed("odd");
    odd["type"] = json!("Not.A.Stripe.Type");
    app.deliver(&odd).await;

    let text = scrape(&app).await;
    // The recorder is shared by every app of this test process: at least ours.
    for series in [
        r#"stripe_webhook_events_total{type="checkout.session.completed",outcome="verified"}"#,
        r#"stripe_webhook_events_total{type="checkout.session.completed",outcome="duplicate"}"#,
        r#"stripe_webhook_events_total{type="unknown",outcome="rejected"}"#,
        r#"stripe_webhook_events_total{type="other",outcome="verified"}"#,
    ] {
        assert!(sample(&text, series).is_some_and(|n| n >= 1.0), "{series} in\n{text}");
    }
    assert!(!text.contains("Weird") && !text.contains("Not.A.Stripe"), "{text}");
}
