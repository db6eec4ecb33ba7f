//! `GET /v1/me/entitlements`: the caller's usable entitlements, and nobody else's.

use chrono::{DateTime, TimeDelta, Utc};
use jobs::billing::entitlements::{self, State, Status};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Sets the entitlement of `source` as a worker would, in its own transaction.
async fn set(
    app: &TestApp,
    source: &str,
    user_id: i64,
    plan: &str,
    status: Status,
    expires_at: DateTime<Utc>,
    renews: bool,
) {
    let state = State {
        user_id,
        plan: plan.into(),
        entitlement: "pro".into(),
        status,
        expires_at: Some(expires_at),
        renews,
    };
    let mut tx = app.pool.begin().await.unwrap();
    entitlements::set(&mut tx, source, &state, "test").await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_caller_sees_only_their_active_entitlements() {
    let app = spawn_app().await;
    let now = Utc::now();
    let later = now + TimeDelta::days(30);
    let latest = now + TimeDelta::days(365);
    set(
        &app,
        "stripe:sub_monthly",
        42,
        "pro_monthly",
        Status::Active,
        later,
        true,
    )
    .await;
    set(
        &app,
        "telegram_stars:charge_1",
        42,
        "stars_only",
        Status::Active,
        latest,
        false,
    )
    .await;
    set(
        &app,
        "stripe:sub_expired",
        42,
        "pro_monthly",
        Status::Active,
        now - TimeDelta::days(1),
        false,
    )
    .await;
    set(
        &app,
        "stripe:sub_disputed",
        42,
        "pro_monthly",
        Status::Suspended,
        later,
        true,
    )
    .await;
    set(
        &app,
        "stripe:sub_refunded",
        42,
        "pro_yearly",
        Status::Revoked,
        later,
        false,
    )
    .await;
    set(
        &app,
        "stripe:sub_someone_else",
        43,
        "pro_monthly",
        Status::Active,
        later,
        true,
    )
    .await;

    let resp = app.get_user("/v1/me/entitlements", 42).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let listed = body["entitlements"].as_array().expect("an entitlements array");
    let sources: Vec<&str> = listed.iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        ["telegram_stars:charge_1", "stripe:sub_monthly"],
        "latest expiry first: {body}"
    );
    let monthly = &listed[1];
    let expires: DateTime<Utc> = monthly["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((expires - later).abs() < TimeDelta::milliseconds(1), "{monthly}");
    let mut shown = monthly.clone();
    shown.as_object_mut().unwrap().remove("expires_at");
    assert_eq!(
        shown,
        json!({"plan": "pro_monthly", "entitlement": "pro", "source": "stripe:sub_monthly", "status": "active", "renews": true, "chats": []})
    );
}

#[tokio::test]
async fn a_user_without_entitlements_gets_an_empty_list() {
    let app = spawn_app().await;
    set(
        &app,
        "stripe:sub_other",
        43,
        "pro_monthly",
        Status::Active,
        Utc::now() + TimeDelta::days(3),
        true,
    )
    .await;
    let body: Value = app
        .get_user("/v1/me/entitlements", 42)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"entitlements": []}));
}
