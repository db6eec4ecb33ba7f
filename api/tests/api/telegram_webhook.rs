//! `POST /webhooks/telegram`: only Telegram (holder of the secret token) gets in; each update and
//! each Stars payment once; pre-checkout queries answered inline.

use reqwest::StatusCode;
use sandbox::telegram_updates::{self as updates, Recurring, post_update};
use serde_json::{Value, json};

use crate::helpers::{TELEGRAM_WEBHOOK_SECRET, TestApp, assert_problem, sample, scrape, spawn_app};

impl TestApp {
    /// Delivers `update` as Telegram does.
    async fn deliver_update(&self, update: &Value) -> reqwest::Response {
        post_update(
            &self.client,
            &self.url("/webhooks/telegram"),
            Some(TELEGRAM_WEBHOOK_SECRET),
            update,
        )
        .await
    }
}

#[tokio::test]
async fn a_missing_or_wrong_secret_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let update = updates::successful_payment(1, 42, "stars_only", 250, "stxA", None);
    let url = app.url("/webhooks/telegram");
    for secret in [
        None,
        Some("wrong-secret-0123456789"),
        Some(""),
        Some(&TELEGRAM_WEBHOOK_SECRET[1..]),
    ] {
        let resp = post_update(&app.client, &url, secret, &update).await;
        assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(app.count("telegram_updates").await, 0);
    assert_eq!(app.count("telegram_payments").await, 0);
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_payment_is_stored_once_however_it_is_repeated() {
    let app = spawn_app().await;
    let paid = updates::successful_payment(10, 42, "stars_only", 250, "stxPAY1", None);
    let resp = app.deliver_update(&paid).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.jobs_of("entitlements").await,
        vec![(
            "telegram_payment:stxPAY1".to_string(),
            json!({"kind": "stars_payment", "charge_id": "stxPAY1"})
        )]
    );
    // Telegram's redelivery of the same update, then the same charge in another update.
    assert_eq!(app.deliver_update(&paid).await.status(), StatusCode::NO_CONTENT);
    let again = updates::successful_payment(11, 42, "stars_only", 250, "stxPAY1", None);
    assert_eq!(app.deliver_update(&again).await.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.count("telegram_updates").await, 2);
    assert_eq!(app.count("telegram_payments").await, 1);
    assert_eq!(app.job_count().await, 1);
    let (user, source, amount): (i64, String, i64) =
        sqlx::query_as("SELECT user_id, source, total_amount FROM telegram_payments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((user, source.as_str(), amount), (42, "telegram_stars:stxPAY1", 250));
}

#[tokio::test]
async fn a_renewal_counts_toward_the_subscription_its_first_payment_started() {
    let app = spawn_app().await;
    let first = Recurring {
        expiration: 2_000_000_000,
        is_first: true,
    };
    let renewal = Recurring {
        expiration: 2_002_592_000,
        is_first: false,
    };
    let a = updates::successful_payment(20, 42, "stars_only", 250, "stxFIRST", Some(first));
    let b = updates::successful_payment(21, 42, "stars_only", 250, "stxRENEW", Some(renewal));
    assert_eq!(app.deliver_update(&a).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.deliver_update(&b).await.status(), StatusCode::NO_CONTENT);
    let sources: Vec<String> = sqlx::query_scalar("SELECT source FROM telegram_payments ORDER BY charge_id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(sources, vec!["telegram_stars:stxFIRST", "telegram_stars:stxFIRST"]);
}

#[tokio::test]
async fn a_refund_update_enqueues_one_revocation_however_often_it_comes() {
    let app = spawn_app().await;
    for update_id in [30, 31, 30] {
        let refunded = updates::refunded_payment(update_id, 42, "stars_only", 250, "stxR");
        assert_eq!(app.deliver_update(&refunded).await.status(), StatusCode::NO_CONTENT);
    }
    let jobs = app.jobs_of("entitlements").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].0, "telegram_refund:stxR");
    assert_eq!(jobs[0].1["kind"], "stars_refund");
}

/// The body of a webhook response: the method Telegram is to call.
async fn method_call(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json; charset=utf-8"
    );
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_pre_checkout_query_for_our_plan_at_its_price_is_accepted_inline() {
    let app = spawn_app().await;
    let query = updates::pre_checkout_query(40, "pcq-ok", 42, "stars_only", "XTR", 250);
    let body = method_call(app.deliver_update(&query).await).await;
    assert_eq!(
        body,
        json!({"method": "answerPreCheckoutQuery", "pre_checkout_query_id": "pcq-ok", "ok": true})
    );
    let (ok, user): (bool, i64) = sqlx::query_as("SELECT ok, user_id FROM telegram_pre_checkout_queries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((ok, user), (true, 42));
    assert_eq!(app.job_count().await, 0, "a pre-checkout query enqueues nothing");
}

#[tokio::test]
async fn pre_checkout_queries_that_must_not_go_ahead_are_refused_with_a_reason() {
    let app = spawn_app().await;
    sqlx::query("INSERT INTO telegram_users (id, first_name, profile_at, banned) VALUES (66, 'Mallory', now(), true)")
        .execute(&app.pool)
        .await
        .unwrap();
    let cases = [
        (
            41,
            "pcq-price",
            42,
            "stars_only",
            "XTR",
            249,
            "The price of this plan has changed. Please open the invoice again.",
        ),
        (
            42,
            "pcq-plan",
            42,
            "gold",
            "XTR",
            250,
            "This plan is no longer for sale.",
        ),
        (
            43,
            "pcq-stripe-only",
            42,
            "pro_monthly",
            "XTR",
            250,
            "This plan is no longer for sale.",
        ),
        (
            44,
            "pcq-currency",
            42,
            "stars_only",
            "USD",
            250,
            "Only Telegram Stars are accepted.",
        ),
        (
            45,
            "pcq-banned",
            66,
            "stars_only",
            "XTR",
            250,
            "This account cannot make purchases.",
        ),
    ];
    for (update_id, id, user, payload, currency, amount, message) in cases {
        let query = updates::pre_checkout_query(update_id, id, user, payload, currency, amount);
        let body = method_call(app.deliver_update(&query).await).await;
        assert_eq!(
            body,
            json!({"method": "answerPreCheckoutQuery", "pre_checkout_query_id": id, "ok": false, "error_message": message}),
            "{id}"
        );
    }
    assert_eq!(app.count("telegram_pre_checkout_queries").await, 5);
    let metrics = scrape(&app).await;
    assert!(
        metrics.contains(r#"telegram_payments_total{result="refused"} 5"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_redelivered_pre_checkout_query_gets_its_first_answer() {
    let app = spawn_app().await;
    let query = updates::pre_checkout_query(50, "pcq-again", 42, "stars_only", "XTR", 250);
    let first = method_call(app.deliver_update(&query).await).await;
    // The user is banned in between: the answer Telegram already acted on stands.
    sqlx::query("INSERT INTO telegram_users (id, first_name, profile_at, banned) VALUES (42, 'A', now(), true)")
        .execute(&app.pool)
        .await
        .unwrap();
    let second = method_call(app.deliver_update(&query).await).await;
    assert_eq!(first, second);
    assert_eq!(second["ok"], true);
}

#[tokio::test]
async fn promo_clicks_are_stored_once_and_callbacks_answered_inline() {
    let app = spawn_app().await;
    let press = updates::callback_query(60, "cbq-1", 42, 42, "promo:spring:a");
    let body = method_call(app.deliver_update(&press).await).await;
    assert_eq!(
        body,
        json!({"method": "answerCallbackQuery", "callback_query_id": "cbq-1"})
    );
    let start = updates::start_command(61, 43, "promo-spring-b");
    assert_eq!(app.deliver_update(&start).await.status(), StatusCode::NO_CONTENT);
    // Not promos: a button of something else is answered, a plain /start records no click.
    let other = updates::callback_query(62, "cbq-2", 42, 42, "settings");
    assert_eq!(
        method_call(app.deliver_update(&other).await).await["callback_query_id"],
        "cbq-2"
    );
    let plain = updates::start_command(63, 44, "");
    assert_eq!(app.deliver_update(&plain).await.status(), StatusCode::NO_CONTENT);
    // A repeat of the press is answered again and stores nothing more.
    method_call(app.deliver_update(&press).await).await;

    // Stored with the update, once each; no job.
    let clicks: Vec<(i64, i64, Option<i64>, String, String, String)> =
        sqlx::query_as("SELECT update_id, user_id, chat_id, campaign, promo, via FROM promo_clicks ORDER BY update_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        clicks,
        [
            (60, 42, Some(42), "spring".into(), "a".into(), "callback".into()),
            (61, 43, Some(43), "spring".into(), "b".into(), "start".into()),
        ]
    );
    assert!(app.jobs_of("tracking").await.is_empty());
    assert_eq!(app.count("telegram_updates").await, 4);
}

#[tokio::test]
async fn unknown_kinds_are_stored_and_acknowledged_and_junk_is_refused() {
    let app = spawn_app().await;
    let resp = app.deliver_update(&updates::unknown_kind(70)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let kind: String = sqlx::query_scalar("SELECT kind FROM telegram_updates WHERE update_id = 70")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kind, "message_reaction");
    for junk in [json!({"no_update_id": 1}), json!([1, 2]), json!({"update_id": "x"})] {
        let resp = app.deliver_update(&junk).await;
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    assert_eq!(app.count("telegram_updates").await, 1);
    assert_eq!(app.job_count().await, 0);
    // Counted per process: this test alone delivers these kinds.
    assert_eq!(
        app.deliver_update(&updates::unknown_kind(70)).await.status(),
        StatusCode::NO_CONTENT
    );
    let metrics = scrape(&app).await;
    for series in [
        r#"telegram_updates_total{kind="message_reaction",outcome="accepted"} 1"#,
        r#"telegram_updates_total{kind="message_reaction",outcome="duplicate"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    // Other tests in this process are refused too (a wrong secret counts), so at least these.
    let rejected = sample(&metrics, r#"telegram_updates_total{kind="unknown",outcome="rejected"}"#);
    assert!(rejected.is_some_and(|n| n >= 3.0), "{rejected:?}");
}

#[tokio::test]
async fn an_update_with_a_nul_where_we_read_it_is_an_invalid_request_and_nothing_is_stored() {
    let app = spawn_app().await;
    for update in [
        updates::pre_checkout_query(80, "pcq\u{0}", 42, "stars_only", "XTR", 250),
        updates::pre_checkout_query(81, "pcq-81", 42, "stars_only\u{0}", "XTR", 250),
        updates::successful_payment(82, 42, "stars_only", 250, "stx\u{0}", None),
        updates::start_command(83, 42, "promo-spring-\u{0}"),
        // A second top-level field: the kind stored would be it.
        json!({"update_id": 85, "\u{0}": {}}),
    ] {
        let resp = app.deliver_update(&update).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        assert!(problem["detail"].as_str().unwrap().contains("U+0000"), "{problem}");
    }
    assert_eq!(app.count("telegram_updates").await, 0);
    assert_eq!(app.count("telegram_pre_checkout_queries").await, 0);
    assert_eq!(app.count("telegram_payments").await, 0);
    assert_eq!(app.job_count().await, 0);

    // Where we do not read it, the update is stored as sent (its payload is text, which holds the
    // escape): refusing it would lose the payment for a name nobody reads.
    let mut paid = updates::successful_payment(86, 42, "stars_only", 250, "stxNUL", None);
    paid["message"]["from"]["first_name"] = json!("Ada\u{0}");
    assert_eq!(app.deliver_update(&paid).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.count("telegram_updates").await, 1);
    assert_eq!(app.count("telegram_payments").await, 1);
}
