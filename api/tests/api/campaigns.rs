//! `/v1/ops/campaigns` and `/v1/ops/broadcasts`: create, list, pause, resume, preview, send now,
//! progress, statistics; bad input is a problem and writes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{BOT_USERNAME, TestApp, assert_problem, spawn_app};

const CAMPAIGNS: &str = "/v1/ops/campaigns";

fn campaign(name: &str) -> Value {
    json!({
        "name": name,
        "audience": "all_users",
        "every_hours": 6,
        "promos": [
            {"name": "a", "text": "Go *Pro*", "parse_mode": "markdown_v2",
             "buttons": [{"text": "Get Pro", "action": "deep_link"}, {"text": "Why?", "action": "callback"}]},
            {"name": "b", "text": "Still thinking?", "buttons": [{"text": "Get Pro", "action": "callback"}]}
        ]
    })
}

/// Sends `request` and reads its JSON answer.
async fn answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn create(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_admin(CAMPAIGNS, body).send().await.unwrap()
}

#[tokio::test]
async fn a_campaign_is_created_listed_paused_resumed_and_previewed() {
    let app = spawn_app().await;
    let resp = create(&app, &campaign("winter")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["name"], "winter");
    assert_eq!(created["audience"], "all_users");
    assert_eq!(created["every_hours"], 6);
    assert_eq!(created["promos"], json!(["a", "b"]));
    assert_eq!(created["next_promo"], "a");
    assert_eq!(created["paused"], false);
    assert!(created["next_slot"].is_string(), "{created}");

    let list = answer(app.get_admin(CAMPAIGNS)).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let paused: Value = answer(app.post_admin_empty(&format!("{CAMPAIGNS}/winter/pause"))).await;
    assert_eq!((paused["paused"].clone(), paused.get("next_slot")), (json!(true), None));
    let resumed: Value = answer(app.post_admin_empty(&format!("{CAMPAIGNS}/winter/resume"))).await;
    assert_eq!(resumed["paused"], false);

    let preview: Value = answer(app.get_admin(&format!("{CAMPAIGNS}/winter/next-promo"))).await;
    assert_eq!(
        preview,
        json!({
            "campaign": "winter", "promo": "a", "text": "Go *Pro*", "parse_mode": "markdown_v2",
            "buttons": [
                [{"text": "Get Pro", "url": format!("https://t.me/{BOT_USERNAME}?start=promo-winter-a")}],
                [{"text": "Why?", "callback_data": "promo:winter:a"}]
            ]
        })
    );

    let again = create(&app, &campaign("winter")).await;
    assert_problem(again, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn send_now_begins_a_broadcast_whose_progress_and_stats_are_visible() {
    let app = spawn_app().await;
    create(&app, &campaign("now")).await;
    let resp = app
        .post_admin_empty(&format!("{CAMPAIGNS}/now/send"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let started: Value = resp.json().await.unwrap();
    assert_eq!(
        (started["campaign"].clone(), started["promo"].clone()),
        (json!("now"), json!("a"))
    );
    let id = started["broadcast_id"].as_i64().unwrap();
    assert_eq!(started["status_url"], format!("/v1/ops/broadcasts/{id}"));
    // The broadcast and its first fan-out job, written together.
    assert_eq!(app.jobs_of("broadcasts").await.len(), 1);

    let progress: Value = answer(app.get_admin(&format!("/v1/ops/broadcasts/{id}"))).await;
    assert_eq!(progress["fanned_out"], false);
    assert_eq!(
        (progress["total"].clone(), progress["pending"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(progress["expected_finish_at"], Value::Null);
    assert_eq!(progress["summarised_at"], Value::Null);
    // Once its recipients are pruned, the counts kept on the broadcast are what it reports.
    sqlx::query(
        "UPDATE broadcasts SET summarised_at = now(), total = 5, sent = 3, failed = 1, unreachable = 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let summarised: Value = answer(app.get_admin(&format!("/v1/ops/broadcasts/{id}"))).await;
    assert_eq!(
        [
            &summarised["total"],
            &summarised["sent"],
            &summarised["failed"],
            &summarised["unreachable"],
            &summarised["pending"]
        ],
        [&json!(5), &json!(3), &json!(1), &json!(1), &json!(0)]
    );
    assert!(summarised["summarised_at"].is_string());
    // The rotation moved on.
    let preview: Value = answer(app.get_admin(&format!("{CAMPAIGNS}/now/next-promo"))).await;
    assert_eq!(preview["promo"], "b");

    let stats: Value = answer(app.get_admin(&format!("{CAMPAIGNS}/now/stats"))).await;
    assert_eq!(stats["promos"].as_array().unwrap().len(), 2);
    assert_eq!(stats["promos"][0]["sends"], 3, "the sends kept on the broadcast");
    assert_eq!(stats["promos"][0]["click_through_rate"], 0.0);
    let backwards = app
        .get_admin(&format!(
            "{CAMPAIGNS}/now/stats?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z"
        ))
        .send()
        .await
        .unwrap();
    assert_problem(backwards, StatusCode::BAD_REQUEST, "invalid-request").await;
}

#[tokio::test]
async fn unknown_campaigns_and_broadcasts_are_404() {
    let app = spawn_app().await;
    for path in [
        format!("{CAMPAIGNS}/nope"),
        format!("{CAMPAIGNS}/nope/next-promo"),
        format!("{CAMPAIGNS}/nope/stats"),
        "/v1/ops/broadcasts/999".to_string(),
    ] {
        let resp = app.get_admin(&path).send().await.unwrap();
        assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    }
    for action in ["pause", "resume", "send"] {
        let resp = app
            .post_admin_empty(&format!("{CAMPAIGNS}/nope/{action}"))
            .send()
            .await
            .unwrap();
        assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    }
}

#[tokio::test]
async fn campaigns_that_cannot_run_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = campaign("bad");
        f(&mut c);
        c
    };
    cases.push((with(&|c| c["name"] = json!("has-dash")), "invalid-campaign"));
    cases.push((with(&|c| c["cron"] = json!("0 9 * * *")), "invalid-campaign"));
    cases.push((
        with(&|c| {
            c.as_object_mut().unwrap().remove("every_hours");
            c["cron"] = json!("0 9 * *");
        }),
        "invalid-campaign",
    ));
    cases.push((with(&|c| c["audience"] = json!("chats")), "invalid-campaign"));
    cases.push((with(&|c| c["chat_ids"] = json!([1, 2])), "invalid-campaign"));
    cases.push((with(&|c| c["every_hours"] = json!(0)), "invalid-campaign"));
    cases.push((with(&|c| c["promos"] = json!([])), "invalid-campaign"));
    cases.push((with(&|c| c["promos"][1]["name"] = json!("a")), "invalid-campaign"));
    cases.push((with(&|c| c["promos"][0]["buttons"] = json!([])), "invalid-campaign"));
    cases.push((
        with(&|c| c["promos"][0]["text"] = json!("x".repeat(4097))),
        "invalid-campaign",
    ));
    cases.push((with(&|c| c["audience"] = json!("everyone")), "invalid-request"));
    cases.push((with(&|c| c["surprise"] = json!(1)), "invalid-request"));
    cases.push((
        with(&|c| c["promos"][0]["buttons"][0]["action"] = json!("url")),
        "invalid-request",
    ));
    cases.push((with(&|c| c["name"] = json!(7)), "invalid-request"));
    for (body, slug) in cases {
        let resp = create(&app, &body).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, slug).await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{body}");
    }
    assert_eq!(app.count("campaigns").await, 0);
    assert_eq!(app.count("campaign_promos").await, 0);
}

#[tokio::test]
async fn campaign_routes_need_the_admin_token() {
    let app = spawn_app().await;
    for path in [
        CAMPAIGNS.to_string(),
        format!("{CAMPAIGNS}/x/stats"),
        "/v1/ops/broadcasts/1".into(),
    ] {
        let resp = app.get(&path).send().await.unwrap();
        assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let resp = app
        .client
        .post(app.url(CAMPAIGNS))
        .bearer_auth("user-token-is-not-admin")
        .json(&campaign("x"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.count("campaigns").await, 0);
}
