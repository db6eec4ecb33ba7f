use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

const NOTIFY: &str = "/v1/ops/notifications";

#[tokio::test]
async fn a_notification_is_one_pending_job_in_the_notifications_queue() {
    let app = spawn_app().await;
    let body = json!({
        "chat_id": 42,
        "text": "<b>Hello</b>",
        "parse_mode": "html",
        "buttons": [[{"text": "Open", "url": "https://t.me/paygate_bot?start=promo"}, {"text": "Later", "callback_data": "later"}]],
    });
    let resp = app.post_admin(NOTIFY, &body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["duplicate"], false);
    let job_id = answer["job_id"].as_i64().expect("a job id");

    let (id, queue, state, key, payload): (i64, String, String, String, Value) =
        sqlx::query_as("SELECT id, queue, state, logical_key, payload FROM jobs")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(app.job_count().await, 1);
    assert_eq!(
        (id, queue.as_str(), state.as_str()),
        (job_id, "notifications", "pending")
    );
    assert!(key.starts_with("ops:"), "{key}");
    assert_eq!(
        payload,
        json!({
            "chat_id": 42,
            "text": "<b>Hello</b>",
            "parse_mode": "html",
            "buttons": [[
                {"text": "Open", "url": "https://t.me/paygate_bot?start=promo", "callback_data": null},
                {"text": "Later", "url": null, "callback_data": "later"}
            ]],
        })
    );
    let decoded: jobs::telegram::SendMessage = serde_json::from_value(payload).unwrap();
    assert_eq!(decoded.parse_mode, Some(jobs::telegram::ParseMode::Html));
}

#[tokio::test]
async fn markdown_v2_is_spelled_as_the_payload_spells_it() {
    let app = spawn_app().await;
    let resp = app
        .post_admin(
            NOTIFY,
            &json!({"chat_id": 1, "text": "*hi*", "parse_mode": "markdown_v2"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let payload: Value = sqlx::query_scalar("SELECT payload FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payload["parse_mode"], "markdown_v2");
}

#[tokio::test]
async fn the_same_idempotency_key_twice_is_one_job() {
    let app = spawn_app().await;
    let body = json!({"chat_id": 42, "text": "once"});
    let first: Value = app
        .post_admin(NOTIFY, &body)
        .header("Idempotency-Key", "promo-42-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = app
        .post_admin(NOTIFY, &json!({"chat_id": 42, "text": "twice?"}))
        .header("Idempotency-Key", "promo-42-a")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let second: Value = resp.json().await.unwrap();

    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["job_id"], first["job_id"]);
    assert_eq!(app.job_count().await, 1);
    let (key, text): (String, String) = sqlx::query_as("SELECT logical_key, payload->>'text' FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((key.as_str(), text.as_str()), ("ops:promo-42-a", "once"));
}

#[tokio::test]
async fn a_repeat_of_a_job_already_done_and_pruned_has_no_job_id() {
    let app = spawn_app().await;
    sqlx::query("INSERT INTO effect_ledger (queue, logical_key, job_id) VALUES ('notifications', 'ops:done-1', 999)")
        .execute(&app.pool)
        .await
        .unwrap();
    let resp = app
        .post_admin(NOTIFY, &json!({"chat_id": 1, "text": "hi"}))
        .header("Idempotency-Key", "done-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({"duplicate": true}));
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn different_keys_and_no_key_are_different_jobs() {
    let app = spawn_app().await;
    let body = json!({"chat_id": 42, "text": "hi"});
    let mut ids = Vec::new();
    for key in [Some("a"), Some("b"), None, None] {
        let mut req = app.post_admin(NOTIFY, &body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        assert_eq!(answer["duplicate"], false);
        ids.push(answer["job_id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert_eq!(app.job_count().await, 4);
}
