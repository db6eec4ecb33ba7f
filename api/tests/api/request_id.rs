use reqwest::StatusCode;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn a_request_id_is_echoed() {
    let app = spawn_app().await;
    let resp = app
        .get("/health")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn a_request_id_is_generated_when_missing_or_unfit() {
    let app = spawn_app().await;
    let long = "x".repeat(201);
    for sent in [None, Some(""), Some("has space"), Some(long.as_str())] {
        let mut req = app.get("/health");
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{sent:?} -> {id}");
    }
}

#[tokio::test]
async fn problems_carry_the_request_id_too() {
    let app = spawn_app().await;
    let resp = app
        .get("/nope")
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me");
    assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
}
