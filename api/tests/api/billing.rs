//! `/v1/billing/checkout` and `/v1/billing/portal`: a request and its job, once per key, polled
//! by its owner only, and long-polled until a worker settles it.

use std::time::{Duration, Instant};

use jobs::billing::entitlements;
use jobs::billing::requests::{self, Settlement};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, user_token};

const CHECKOUT: &str = "/v1/billing/checkout";
const PORTAL: &str = "/v1/billing/portal";
const STARS_INVOICE: &str = "/v1/billing/stars-invoice";

/// Starts a checkout of `plan` as `user_id`, with `key` as its Idempotency-Key.
async fn checkout(app: &TestApp, user_id: i64, plan: &str, key: Option<&str>) -> Response {
    let mut req = app.post_user(CHECKOUT, user_id, &json!({ "plan": plan }));
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

/// Asserts a 202 or 200 answer with a Location, and returns its body.
async fn accepted(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "{}", resp.url());
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status_url"], location.as_str(), "{body}");
    body
}

/// Settles request `id` as the `checkout` worker does: in a transaction of its own.
async fn settle(app: &TestApp, id: i64, settlement: Settlement<'_>) {
    let mut tx = app.pool.begin().await.unwrap();
    requests::settle(&mut tx, id, settlement).await.unwrap();
    tx.commit().await.unwrap();
}

async fn ready(app: &TestApp, id: i64, url: &str) {
    settle(
        app,
        id,
        Settlement::Ready {
            url,
            provider_id: "cs_test_1",
        },
    )
    .await;
}

#[tokio::test]
async fn a_checkout_is_a_pending_request_with_its_job() {
    let app = spawn_app().await;
    let resp = checkout(&app, 42, "pro_monthly", None).await;
    let body = accepted(resp, StatusCode::ACCEPTED).await;
    let id = body["id"].as_i64().expect("an id");
    assert!(body["created_at"].as_str().is_some(), "{body}");
    let mut shape = body.clone();
    shape.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        shape,
        json!({"id": id, "kind": "checkout", "status": "pending",
               "plan": "pro_monthly", "status_url": format!("/v1/billing/checkout/{id}")})
    );

    let (user_id, kind, plan): (i64, String, String) =
        sqlx::query_as("SELECT user_id, kind, plan FROM billing_requests WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((user_id, kind.as_str(), plan.as_str()), (42, "checkout", "pro_monthly"));
    assert_eq!(
        app.jobs_of("checkout").await,
        vec![(format!("billing_request:{id}"), json!({"request_id": id}))]
    );
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn a_repeated_key_is_the_same_request_and_one_job() {
    let app = spawn_app().await;
    let first = accepted(
        checkout(&app, 42, "pro_monthly", Some("buy-1")).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let again = accepted(
        checkout(&app, 42, "pro_monthly", Some("buy-1")).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.count("billing_requests").await, 1);
    assert_eq!(app.job_count().await, 1);

    // Keys belong to their user: another user's same key is another request.
    let other = accepted(
        checkout(&app, 43, "pro_monthly", Some("buy-1")).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_ne!(other["id"], first["id"]);
    // Without a key, the user's pending request for the same plan answers a repeat; once it has
    // settled, a repeat is a new request.
    let a = accepted(checkout(&app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    assert_eq!(a["id"], first["id"]);
    ready(
        &app,
        first["id"].as_i64().unwrap(),
        "https://checkout.stripe.com/c/pay/cs_test_1",
    )
    .await;
    let b = accepted(checkout(&app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    assert_ne!(b["id"], first["id"]);
    assert_eq!(app.job_count().await, 3);
}

#[tokio::test]
async fn a_burst_of_checkouts_without_keys_is_one_request_and_one_stripe_call() {
    let app = spawn_app().await;
    // A hundred taps at once, without keys.
    let answers = futures::future::join_all((0..100).map(|_| {
        let app = &app;
        async move { accepted(checkout(app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await }
    }))
    .await;
    let id = &answers[0]["id"];
    assert!(answers.iter().all(|a| &a["id"] == id), "{answers:?}");
    assert_eq!(app.count("billing_requests").await, 1);
    assert_eq!(app.jobs_of("checkout").await.len(), 1);
    // Another plan is another request.
    let team = accepted(checkout(&app, 42, "team_monthly", None).await, StatusCode::ACCEPTED).await;
    assert_ne!(&team["id"], id);
    // A key of its own is a request of its own, and keeps answering with it: the limit bounds
    // those (2 stored, 8 more let in, then 429s).
    let statuses = futures::future::join_all((0..20).map(|i| {
        let app = &app;
        async move {
            checkout(app, 42, "pro_monthly", Some(&format!("tap-{i}")))
                .await
                .status()
        }
    }))
    .await;
    let accepted_n = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((accepted_n, limited), (8, 12), "{statuses:?}");
    assert_eq!(app.count("billing_requests").await, 10);
    let keyed: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_requests WHERE idempotency_key LIKE 'tap-%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keyed, 8, "every request let in is stored under its key");
}

#[tokio::test]
async fn a_users_eleventh_request_in_ten_minutes_waits_with_retry_after() {
    let app = spawn_app().await;
    assert_eq!(
        (requests::LIMIT, requests::LIMIT_WINDOW.as_secs()),
        (10, 600),
        "as the API docs say"
    );
    for i in 0..requests::LIMIT {
        let key = format!("k{i}");
        let body = accepted(
            checkout(&app, 42, "pro_monthly", Some(&key)).await,
            StatusCode::ACCEPTED,
        )
        .await;
        ready(
            &app,
            body["id"].as_i64().unwrap(),
            &format!("https://checkout.stripe.com/c/pay/{i}"),
        )
        .await;
    }
    for resp in [
        checkout(&app, 42, "team_monthly", Some("eleventh")).await,
        app.post_user(PORTAL, 42, &json!({})).send().await.unwrap(),
    ] {
        let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((590..=600).contains(&retry_after), "Retry-After: {retry_after}");
        let problem = assert_problem(resp, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("10 billing requests"),
            "{problem}"
        );
    }
    assert_eq!(app.count("billing_requests").await, 10, "nothing stored");
    assert_eq!(app.job_count().await, 10);
    // A key already used still answers with its request: that is no new request.
    let first = accepted(checkout(&app, 42, "pro_monthly", Some("k0")).await, StatusCode::OK).await;
    assert_eq!(first["status"], "ready");
    // Another user is not limited by this one.
    accepted(checkout(&app, 43, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    // The window slides: once the oldest request is ten minutes old, one more is let in.
    sqlx::query(
        "UPDATE billing_requests SET created_at = now() - interval '601 seconds'
         WHERE id = (SELECT min(id) FROM billing_requests WHERE user_id = 42)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    accepted(checkout(&app, 42, "team_monthly", None).await, StatusCode::ACCEPTED).await;
    let resp = checkout(&app, 42, "pro_monthly", None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_repeated_key_for_another_plan_is_a_conflict() {
    let app = spawn_app().await;
    checkout(&app, 42, "pro_monthly", Some("buy-2")).await;
    let resp = checkout(&app, 42, "team_monthly", Some("buy-2")).await;
    let problem = assert_problem(resp, StatusCode::CONFLICT, "conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("pro_monthly"), "{problem}");
    assert_eq!(app.count("billing_requests").await, 1);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn a_repeat_after_the_request_settled_answers_200_with_its_url() {
    let app = spawn_app().await;
    let first = accepted(
        checkout(&app, 42, "pro_monthly", Some("buy-3")).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let id = first["id"].as_i64().unwrap();
    ready(&app, id, "https://checkout.stripe.com/c/pay/cs_test_1").await;
    let again = accepted(checkout(&app, 42, "pro_monthly", Some("buy-3")).await, StatusCode::OK).await;
    assert_eq!(again["id"], id);
    assert_eq!(again["status"], "ready");
    assert_eq!(again["url"], "https://checkout.stripe.com/c/pay/cs_test_1");
}

#[tokio::test]
async fn a_plan_not_for_sale_through_stripe_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    for plan in ["gold", "stars_only", "", "PRO_MONTHLY"] {
        let resp = checkout(&app, 42, plan, Some("k-1")).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "unknown-plan").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.ends_with("plans for sale: pro_monthly, pro_yearly, team_monthly"),
            "{detail}"
        );
    }
    for body in [
        json!({}),
        json!({"plan": 7}),
        json!({"plan": "pro_monthly", "coupon": "FREE"}),
        json!(["pro_monthly"]),
    ] {
        let resp = app.post_user(CHECKOUT, 42, &body).send().await.unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    // A key past ASCII would read as no key, and the request would quietly not be safe to repeat.
    for key in [&b"has space"[..], b"k\xff1"] {
        let resp = app
            .post_user(CHECKOUT, 42, &json!({"plan": "pro_monthly"}))
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    assert_eq!(app.count("billing_requests").await, 0);
    assert_eq!(app.job_count().await, 0);
}

/// Gives `user_id` an active entitlement to `plan` from `source` that ends in `days` (in the
/// past when negative) and `renews` or not, as a worker would.
async fn subscribe(app: &TestApp, user_id: i64, plan: &str, source: &str, renews: bool, days: i64) {
    let state = entitlements::State {
        user_id,
        plan: plan.into(),
        entitlement: "pro".into(),
        status: entitlements::Status::Active,
        expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::days(days)),
        renews,
    };
    let mut tx = app.pool.begin().await.unwrap();
    entitlements::set(&mut tx, source, &state, "test").await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_plan_the_user_renews_through_either_provider_is_not_sold_again() {
    let app = spawn_app().await;
    subscribe(&app, 42, "pro_monthly", "stripe:sub_1", true, 20).await;
    subscribe(&app, 43, "pro_monthly", "telegram_stars:stx_1", true, 20).await;
    subscribe(&app, 44, "stars_only", "stripe:sub_2", true, 20).await;
    // Past its paid end while Stripe retries the renewal (`past_due` derives active): it is
    // still about to charge.
    subscribe(&app, 47, "stars_only", "stripe:sub_4", true, -2).await;
    for (user, path, plan, through) in [
        (42, CHECKOUT, "pro_monthly", "Stripe"),
        (43, CHECKOUT, "pro_monthly", "Telegram Stars"),
        (44, STARS_INVOICE, "stars_only", "Stripe"),
        (47, STARS_INVOICE, "stars_only", "Stripe"),
    ] {
        // With a key too: the guard is not a pending request to reuse.
        let resp = app
            .post_user(path, user, &json!({ "plan": plan }))
            .header("Idempotency-Key", "k-1")
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::CONFLICT, "already-subscribed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("You already subscribe to ") && detail.contains(&format!(" through {through}, renew")),
            "{detail}"
        );
    }
    assert_eq!(app.count("billing_requests").await, 0);
    assert_eq!(app.job_count().await, 0);

    // Another plan, a subscription cancelled at period end, a Stars subscription past its end
    // (Telegram never says it stopped), another user: sold.
    subscribe(&app, 45, "pro_monthly", "stripe:sub_3", false, 20).await;
    subscribe(&app, 48, "pro_monthly", "telegram_stars:stx_2", true, -1).await;
    for (user, plan) in [
        (42, "team_monthly"),
        (45, "pro_monthly"),
        (46, "pro_monthly"),
        (48, "pro_monthly"),
    ] {
        accepted(checkout(&app, user, plan, None).await, StatusCode::ACCEPTED).await;
    }
}

#[tokio::test]
async fn billing_routes_need_a_user_token() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url(CHECKOUT))
        .json(&json!({"plan": "pro_monthly"}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = app.client.post(app.url(PORTAL)).send().await.unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for path in ["/v1/billing/checkout/1", "/v1/billing/portal/1"] {
        let resp = app.get(path).send().await.unwrap();
        assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(app.count("billing_requests").await, 0);
}

#[tokio::test]
async fn only_the_owner_sees_a_request_and_only_under_its_kind() {
    let app = spawn_app().await;
    let body = accepted(checkout(&app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    let id = body["id"].as_i64().unwrap();

    let mine = app.get_user(&format!("{CHECKOUT}/{id}"), 42).send().await.unwrap();
    assert_eq!(mine.status(), StatusCode::OK);
    assert_eq!(mine.json::<Value>().await.unwrap(), body);

    for (path, user) in [
        (format!("{CHECKOUT}/{id}"), 43),
        (format!("{PORTAL}/{id}"), 42),
        (format!("{CHECKOUT}/{}", id + 1000), 42),
    ] {
        let resp = app.get_user(&path, user).send().await.unwrap();
        assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    }
    let resp = app.get_user(&format!("{CHECKOUT}/abc"), 42).send().await.unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_request_settles() {
    let app = spawn_app().await;
    let body = accepted(checkout(&app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    let id = body["id"].as_i64().unwrap();

    let pool = app.pool.clone();
    let worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut tx = pool.begin().await.unwrap();
        let url = "https://checkout.stripe.com/c/pay/cs_test_wait";
        requests::settle(
            &mut tx,
            id,
            Settlement::Ready {
                url,
                provider_id: "cs_test_wait",
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    });
    let started = Instant::now();
    let resp = app
        .get_user(&format!("{CHECKOUT}/{id}?wait=2"), 42)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    worker.await.unwrap();

    assert_eq!(resp.status(), StatusCode::OK);
    let settled: Value = resp.json().await.unwrap();
    assert_eq!(settled["status"], "ready");
    assert_eq!(settled["url"], "https://checkout.stripe.com/c/pay/cs_test_wait");
    // Woken by the settlement, not by the end of the wait.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test]
async fn a_long_poll_answers_pending_when_nothing_settles() {
    let app = spawn_app().await;
    let body = accepted(checkout(&app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    let id = body["id"].as_i64().unwrap();
    let started = Instant::now();
    let resp = app
        .get_user(&format!("{CHECKOUT}/{id}?wait=1"), 42)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "pending");
}

#[tokio::test]
async fn the_wait_is_whole_seconds_from_zero_and_capped() {
    let app = spawn_app().await;
    let body = accepted(checkout(&app, 42, "pro_monthly", None).await, StatusCode::ACCEPTED).await;
    let id = body["id"].as_i64().unwrap();
    for wait in ["-1", "abc", "1.5"] {
        let resp = app
            .get_user(&format!("{CHECKOUT}/{id}?wait={wait}"), 42)
            .send()
            .await
            .unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    ready(&app, id, "https://checkout.stripe.com/c/pay/cs_test_cap").await;
    // Over the cap is taken, not refused; a settled request answers at once anyway.
    let resp = app
        .get_user(&format!("{CHECKOUT}/{id}?wait=3600"), 42)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn a_portal_request_takes_no_body_or_an_empty_object() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url(PORTAL))
        .bearer_auth(user_token(42))
        .send()
        .await
        .unwrap();
    let body = accepted(resp, StatusCode::ACCEPTED).await;
    let id = body["id"].as_i64().unwrap();
    let mut shape = body.clone();
    shape.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        shape,
        json!({"id": id, "kind": "portal", "status": "pending", "status_url": format!("/v1/billing/portal/{id}")})
    );
    // A repeat while the first is pending is the first.
    let resp = app.post_user(PORTAL, 42, &json!({})).send().await.unwrap();
    assert_eq!(accepted(resp, StatusCode::ACCEPTED).await["id"], id);
    assert_eq!(app.count("billing_requests").await, 1);
    assert_eq!(app.jobs_of("checkout").await.len(), 1);

    for body in [json!({"plan": "pro_monthly"}), json!([]), json!("x")] {
        let resp = app.post_user(PORTAL, 42, &body).send().await.unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    let resp = app
        .client
        .post(app.url(PORTAL))
        .bearer_auth(user_token(42))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;
    assert_eq!(app.count("billing_requests").await, 1, "nothing more written");
}

#[tokio::test]
async fn a_portal_request_is_once_per_key_polled_by_its_owner_and_long_polled() {
    let app = spawn_app().await;
    let post = |key: &'static str| {
        app.post_user(PORTAL, 42, &json!({}))
            .header("Idempotency-Key", key)
            .send()
    };
    let first = accepted(post("portal-1").await.unwrap(), StatusCode::ACCEPTED).await;
    let again = accepted(post("portal-1").await.unwrap(), StatusCode::ACCEPTED).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(app.job_count().await, 1);
    let id = first["id"].as_i64().unwrap();

    for (path, user) in [(format!("{PORTAL}/{id}"), 43), (format!("{CHECKOUT}/{id}"), 42)] {
        let resp = app.get_user(&path, user).send().await.unwrap();
        assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    }

    let pool = app.pool.clone();
    let worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut tx = pool.begin().await.unwrap();
        let reason = "No such customer: 'cus_gone'";
        requests::settle(&mut tx, id, Settlement::Failed { reason })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    let started = Instant::now();
    let resp = app.get_user(&format!("{PORTAL}/{id}?wait=2"), 42).send().await.unwrap();
    let took = started.elapsed();
    worker.await.unwrap();
    let settled: Value = resp.json().await.unwrap();
    assert_eq!(settled["status"], "failed", "{settled}");
    assert_eq!(settled["failure"], "No such customer: 'cus_gone'");
    assert_eq!(settled["url"], Value::Null);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}
