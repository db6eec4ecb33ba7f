use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};

/// Every ops route, with a body where it takes one.
fn ops_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::POST, "/v1/ops/notifications"),
        (Method::GET, "/v1/ops/queues"),
        (Method::GET, "/v1/ops/jobs/dead"),
        (Method::GET, "/v1/ops/jobs/1"),
        (Method::POST, "/v1/ops/jobs/1/retry"),
        (Method::POST, "/v1/ops/jobs/1/discard"),
        (Method::POST, "/v1/ops/jobs/dead/retry"),
        (Method::POST, "/v1/ops/jobs/dead/discard"),
        (Method::POST, "/v1/ops/refunds"),
        (Method::GET, "/v1/ops/refunds/1"),
    ]
}

#[tokio::test]
async fn every_ops_route_refuses_a_missing_token() {
    let app = spawn_app().await;
    let dead = app.dead_job("notifications", 10.0).await;
    for (method, path) in ops_routes() {
        let mut req = app.client.request(method.clone(), app.url(path));
        if method == Method::POST {
            req = req.json(&json!({"chat_id": 1, "text": "hi"}));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.headers().get("www-authenticate").unwrap(),
            "Bearer",
            "{method} {path}"
        );
        assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(app.job_count().await, 1, "nothing written");
    assert_eq!(app.state_of(dead).await, "dead", "nothing changed");
}

#[tokio::test]
async fn a_wrong_token_is_refused_whatever_its_length() {
    let app = spawn_app().await;
    for token in ["x", "test-admin-token-0123456788", "test-admin-token-01234567890", ""] {
        let resp = app.get("/v1/ops/queues").bearer_auth(token).send().await.unwrap();
        let body = assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
        if !token.is_empty() {
            assert!(!body.to_string().contains(token), "the answer never echoes the token");
        }
    }
}

#[tokio::test]
async fn another_scheme_is_refused() {
    let app = spawn_app().await;
    let resp = app
        .get("/v1/ops/queues")
        .basic_auth("admin", Some(crate::helpers::TOKEN))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn authentication_comes_before_parsing_the_body() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/v1/ops/notifications"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn the_right_token_passes() {
    let app = spawn_app().await;
    let resp = app.get_admin("/v1/ops/queues").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
