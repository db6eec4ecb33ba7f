use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn health_is_ok_without_credentials() {
    let app = spawn_app().await;
    let resp = app.get("/health").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_is_ok_while_the_database_answers() {
    let app = spawn_app().await;
    let resp = app.get("/ready").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_is_unavailable_without_a_database_and_health_stays_ok() {
    let app = spawn_app().await;
    app.pool.close().await;
    let db = app.db_url.rsplit('/').next().unwrap().to_string();
    let mut admin = PgConnection::connect(&sandbox::postgres::with_database(&app.db_url, "postgres"))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)")))
        .await
        .unwrap();

    let resp = app.get("/ready").send().await.unwrap();
    let body = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        !body["detail"].as_str().unwrap().contains(&db),
        "the cause stays in the logs: {body}"
    );

    assert_eq!(app.get("/health").send().await.unwrap().status(), StatusCode::OK);
    // Metrics still serve the HTTP part.
    let metrics = app.get_admin("/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("http_requests_total"));
}

#[tokio::test]
async fn the_spec_and_the_docs_are_served() {
    let app = spawn_app().await;
    let resp = app.get("/openapi.json").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served: Value = resp.json().await.unwrap();
    let generated: Value = serde_json::from_str(api::openapi_json()).unwrap();
    assert_eq!(served, generated);

    let docs = app.get("/docs").send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger"), "Swagger UI at /docs");
    assert!(page.contains(api::openapi_json()), "showing the spec as served");
    assert_eq!(app.get("/docs/").send().await.unwrap().status(), StatusCode::OK);
    for path in ["/openapi.json", "/docs"] {
        let resp = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(resp.headers()["allow"], "GET, HEAD", "{path}");
    }
}
