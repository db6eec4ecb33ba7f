//! `POST /v1/auth/telegram`: Mini App `initData` for a user token.

use api::auth::init_data::sign;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{BOT_TOKEN, assert_problem, now, scrape, spawn_app};

/// The refused-sign-in counter is one per test process: the test that counts its refusals
/// exactly and the other test that makes refusals take turns.
static REFUSALS_COUNTED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `initData` Telegram would give user `id`'s Mini App, signed at `auth_date` with `token`.
fn init_data(id: i64, auth_date: i64, token: &str) -> String {
    let user = json!({"id": id, "first_name": "Ада", "last_name": "L", "username": "ada", "language_code": "en"});
    sign(
        &[
            ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc"),
            ("user", &user.to_string()),
            ("auth_date", &auth_date.to_string()),
        ],
        token,
    )
}

#[tokio::test]
async fn valid_init_data_gets_a_token_that_opens_the_user_routes_and_queues_the_profile() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/v1/auth/telegram"))
        .json(&json!({"init_data": init_data(4242, now() - 5, BOT_TOKEN)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 900);
    assert_eq!(session["user"]["id"], 4242);
    assert_eq!(session["user"]["first_name"], "Ада");
    let token = session["token"].as_str().unwrap();

    let mine = app
        .client
        .get(app.url("/v1/me/entitlements"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::OK);

    let jobs = app.jobs_of("entitlements").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0].0.starts_with("telegram_user:4242:"), "{}", jobs[0].0);
    assert_eq!(jobs[0].1["kind"], "provision_user");
    assert_eq!(jobs[0].1["profile"]["username"], "ada");
    assert_eq!(
        app.count("telegram_users").await,
        0,
        "the profile is written by a worker"
    );

    // The JSON form of the same request.
    let resp = app
        .client
        .post(app.url("/v1/auth/telegram"))
        .json(&json!({"init_data": init_data(4243, now(), BOT_TOKEN)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let metrics = scrape(&app).await;
    assert!(
        metrics.contains(r#"miniapp_sessions_total{result="issued"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("miniapp_exchange_latency_seconds_count 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn forged_stale_and_future_init_data_is_refused_and_nothing_is_queued() {
    let _counted = REFUSALS_COUNTED.lock().await;
    let app = spawn_app().await;
    let valid = init_data(7, now(), BOT_TOKEN);
    let tampered = valid.replacen("ada", "eve", 1);
    assert_ne!(tampered, valid);
    let without_hash = valid.split("&hash=").next().unwrap().to_string();
    let cases = [
        (
            init_data(7, now(), "123:another-bot-token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (tampered, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            init_data(7, now() - 3601, BOT_TOKEN),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            init_data(7, now() + 600, BOT_TOKEN),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (without_hash, StatusCode::UNAUTHORIZED, "unauthorized"),
        (format!("{valid}&auth_date=1"), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("not init data".to_string(), StatusCode::BAD_REQUEST, "invalid-request"),
    ];
    for (body, status, slug) in cases {
        let resp = app
            .client
            .post(app.url("/v1/auth/telegram"))
            .json(&json!({"init_data": body.clone()}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, status, slug).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(!detail.contains(BOT_TOKEN), "{detail}");
    }
    assert_eq!(app.job_count().await, 0);
    let metrics = scrape(&app).await;
    assert!(
        metrics.contains(r#"miniapp_sessions_total{result="refused"} 7"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn signed_init_data_holding_a_nul_is_an_invalid_request_and_nothing_is_queued() {
    let _counted = REFUSALS_COUNTED.lock().await;
    let app = spawn_app().await;
    let user = |first_name: &str| json!({"id": 7, "first_name": first_name}).to_string();
    let signed = |fields: &[(&str, &str)]| sign(fields, BOT_TOKEN);
    let auth_date = now().to_string();
    let cases = [
        // In the user's name: the escape `\u0000` inside the JSON value.
        signed(&[("user", &user("A\u{0}da")), ("auth_date", &auth_date)]),
        // In another value, raw (sent as %00).
        signed(&[
            ("query_id", "AAH\u{0}"),
            ("user", &user("Ada")),
            ("auth_date", &auth_date),
        ]),
        // In an object key of the user.
        signed(&[
            ("user", r#"{"id": 7, "first_name": "Ada", "x\u0000": 1}"#),
            ("auth_date", &auth_date),
        ]),
    ];
    for body in cases {
        assert!(body.contains("%00") || body.contains("%5Cu0000"), "{body}");
        let resp = app
            .client
            .post(app.url("/v1/auth/telegram"))
            .json(&json!({"init_data": body.clone()}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        assert!(problem["detail"].as_str().unwrap().contains("U+0000"), "{problem}");
    }
    assert_eq!(app.job_count().await, 0, "nothing queued");

    // Forged, it is refused as forged: nothing is read before the signature verifies.
    let forged = sign(
        &[("user", &user("A\u{0}da")), ("auth_date", &auth_date)],
        "123:another-bot-token",
    );
    let resp = app
        .client
        .post(app.url("/v1/auth/telegram"))
        .json(&json!({"init_data": forged}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.job_count().await, 0);
}
