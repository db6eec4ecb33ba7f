//! The catalogue, the subscriber lookup, and the two pages as HTTP sees them: their security
//! headers (what they do in a browser is in tests/e2e/browser).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_plans_on_sale_are_public_with_their_prices() {
    let app = spawn_app().await;
    let resp = app.get("/v1/plans").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let codes: Vec<&str> = body["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(!codes.is_empty(), "{body}");
    for plan in body["plans"].as_array().unwrap() {
        assert!(
            plan["stars_price"].is_u64() || plan["card"] == json!(true),
            "on sale: {plan}"
        );
        assert!(plan["chat_count"].is_u64(), "{plan}");
    }
}

#[tokio::test]
async fn a_subscriber_nothing_is_known_about_is_not_found() {
    let app = spawn_app().await;
    let resp = app.get_admin("/v1/ops/users/123456").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "urn:paygate:problem:not-found");
    assert_eq!(
        app.get("/v1/ops/users/123456").send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_pages_carry_their_content_security_policy() {
    let app = spawn_app().await;
    let mini_app = app.get("/app").send().await.unwrap();
    assert_eq!(mini_app.status(), StatusCode::OK);
    let headers = mini_app.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self' https://telegram.org/js/telegram-web-app.js;"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors https://web.telegram.org"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(mini_app.text().await.unwrap().contains("telegram-web-app.js"));

    let console = app.get("/ops").send().await.unwrap();
    let csp = console.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(console.headers()["x-frame-options"], "DENY");
    assert_eq!(console.headers()["referrer-policy"], "no-referrer");

    for (path, kind) in [
        ("/web/app.js", "text/javascript"),
        ("/web/ops.js", "text/javascript"),
        ("/web/common.css", "text/css"),
    ] {
        let resp = app.get(path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            resp.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
    }
    let posted = app.client.post(app.url("/ops")).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(posted.headers()["allow"], "GET, HEAD");
}
