//! `/v1/ops/refunds`: a refund and its job, only with an Idempotency-Key, once per key.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, user_token};

const REFUNDS: &str = "/v1/ops/refunds";

async fn refund(app: &TestApp, body: &Value, key: Option<&str>) -> Response {
    let mut req = app.post_admin(REFUNDS, body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

/// Asserts a 202 or 200 answer whose Location names the refund, and returns its body.
async fn accepted(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(location, format!("/v1/ops/refunds/{}", body["id"]), "{body}");
    body
}

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.count("refunds").await, 0, "no refund row");
    assert_eq!(app.job_count().await, 0, "no job");
}

#[tokio::test]
async fn a_refund_is_a_pending_row_with_its_job() {
    let app = spawn_app().await;
    let body = json!({"provider": "stripe", "payment": "pi_3Mtw", "amount": 1500, "reason": "requested_by_customer"});
    let answer = accepted(refund(&app, &body, Some("refund-1")).await, StatusCode::ACCEPTED).await;
    let id = answer["id"].as_i64().expect("an id");
    assert!(answer["created_at"].as_str().is_some(), "{answer}");
    let mut shape = answer.clone();
    shape.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        shape,
        json!({"id": id, "provider": "stripe", "payment": "pi_3Mtw", "amount": 1500,
               "reason": "requested_by_customer", "status": "pending"})
    );
    assert_eq!(
        app.jobs_of("refunds").await,
        vec![(format!("refund:{id}"), json!({"refund_id": id}))]
    );
    assert_eq!(app.job_count().await, 1);

    let shown = app.get_admin(&format!("{REFUNDS}/{id}")).send().await.unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    assert_eq!(shown.json::<Value>().await.unwrap(), answer);
}

#[tokio::test]
async fn the_whole_payment_is_refunded_without_an_amount() {
    let app = spawn_app().await;
    for (payment, key) in [("ch_3Mtw", "r-ch"), ("py_3Mtw", "r-py")] {
        let body = json!({"provider": "stripe", "payment": payment});
        let answer = accepted(refund(&app, &body, Some(key)).await, StatusCode::ACCEPTED).await;
        assert_eq!(answer["amount"], Value::Null);
        assert_eq!(answer["reason"], Value::Null);
    }
    assert_eq!(app.jobs_of("refunds").await.len(), 2);
}

#[tokio::test]
async fn a_refund_without_an_idempotency_key_is_refused() {
    let app = spawn_app().await;
    let resp = refund(&app, &json!({"provider": "stripe", "payment": "pi_1"}), None).await;
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{problem}"
    );
    assert_nothing_written(&app).await;
    // A value past ASCII is no key at all to the header parser; it is refused, not ignored.
    let resp = app
        .post_admin(REFUNDS, &json!({"provider": "stripe", "payment": "pi_1"}))
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"r\xe9fund-1").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("visible ASCII"),
        "{problem}"
    );
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn the_same_key_and_body_is_the_same_refund_and_one_job() {
    let app = spawn_app().await;
    let body = json!({"provider": "stripe", "payment": "pi_1", "amount": 500, "reason": "duplicate"});
    let first = accepted(refund(&app, &body, Some("refund-2")).await, StatusCode::ACCEPTED).await;
    let again = accepted(refund(&app, &body, Some("refund-2")).await, StatusCode::ACCEPTED).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(app.count("refunds").await, 1);
    assert_eq!(app.job_count().await, 1);

    // Once carried out, a repeat answers 200 with the outcome.
    let id = first["id"].as_i64().unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    jobs::billing::refunds::settle(&mut tx, id, Ok("re_1")).await.unwrap();
    tx.commit().await.unwrap();
    let done = accepted(refund(&app, &body, Some("refund-2")).await, StatusCode::OK).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["provider_refund_id"], "re_1");
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_conflict() {
    let app = spawn_app().await;
    let body = json!({"provider": "stripe", "payment": "pi_1", "amount": 500});
    refund(&app, &body, Some("refund-3")).await;
    for other in [
        json!({"provider": "stripe", "payment": "pi_1", "amount": 501}),
        json!({"provider": "stripe", "payment": "pi_1"}),
        json!({"provider": "stripe", "payment": "pi_2", "amount": 500}),
        json!({"provider": "stripe", "payment": "pi_1", "amount": 500, "reason": "fraudulent"}),
    ] {
        let resp = refund(&app, &other, Some("refund-3")).await;
        assert_problem(resp, StatusCode::CONFLICT, "conflict").await;
    }
    assert_eq!(app.count("refunds").await, 1);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn malformed_refunds_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    for (i, body) in [
        json!({"provider": "telegram_stars", "payment": "pi_1"}),
        json!({"provider": "Stripe", "payment": "pi_1"}),
        json!({"payment": "pi_1"}),
        json!({"provider": "stripe"}),
        json!({"provider": "stripe", "payment": "cus_1"}),
        json!({"provider": "stripe", "payment": "pi_"}),
        json!({"provider": "stripe", "payment": "pi_1; DROP TABLE refunds"}),
        json!({"provider": "stripe", "payment": 7}),
        json!({"provider": "stripe", "payment": "pi_1", "amount": 0}),
        json!({"provider": "stripe", "payment": "pi_1", "amount": -5}),
        json!({"provider": "stripe", "payment": "pi_1", "amount": 1.5}),
        json!({"provider": "stripe", "payment": "pi_1", "amount": "100"}),
        json!({"provider": "stripe", "payment": "pi_1", "reason": "because"}),
        json!({"provider": "stripe", "payment": "pi_1", "metadata": {}}),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = refund(&app, &body, Some(&format!("bad-{i}"))).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn refunds_are_for_operators_only() {
    let app = spawn_app().await;
    let body = json!({"provider": "stripe", "payment": "pi_1"});
    let resp = app
        .client
        .post(app.url(REFUNDS))
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = app
        .client
        .post(app.url(REFUNDS))
        .bearer_auth(user_token(42))
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = app.get(&format!("{REFUNDS}/1")).send().await.unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn an_unknown_refund_is_not_found() {
    let app = spawn_app().await;
    let resp = app.get_admin(&format!("{REFUNDS}/424242")).send().await.unwrap();
    assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    let resp = app.get_admin(&format!("{REFUNDS}/abc")).send().await.unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
}

#[tokio::test]
async fn a_stars_refund_is_whole_of_a_recorded_charge_and_only_once() {
    let app = spawn_app().await;
    let paid = sandbox::telegram_updates::successful_payment(1, 42, "stars_only", 250, "stxOPS", None);
    let resp = sandbox::telegram_updates::post_update(
        &app.client,
        &app.url("/webhooks/telegram"),
        Some(crate::helpers::TELEGRAM_WEBHOOK_SECRET),
        &paid,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let jobs_before = app.job_count().await;

    let unknown = json!({"provider": "telegram_stars", "payment": "stxNOPE"});
    assert_problem(
        refund(&app, &unknown, Some("s0")).await,
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    let partial = json!({"provider": "telegram_stars", "payment": "stxOPS", "amount": 100});
    assert_problem(
        refund(&app, &partial, Some("s0")).await,
        StatusCode::BAD_REQUEST,
        "invalid-request",
    )
    .await;
    assert_eq!(app.count("refunds").await, 0);

    let body = json!({"provider": "telegram_stars", "payment": "stxOPS"});
    let first = accepted(refund(&app, &body, Some("s1")).await, StatusCode::ACCEPTED).await;
    assert_eq!(first["provider"], "telegram_stars");
    let again = accepted(refund(&app, &body, Some("s1")).await, StatusCode::ACCEPTED).await;
    assert_eq!(again["id"], first["id"], "the same key answers with the same refund");
    let problem = assert_problem(refund(&app, &body, Some("s2")).await, StatusCode::CONFLICT, "conflict").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("/v1/ops/refunds/{}", first["id"])),
        "{problem}"
    );
    assert_eq!(app.count("refunds").await, 1);
    assert_eq!(app.job_count().await, jobs_before + 1);
}
