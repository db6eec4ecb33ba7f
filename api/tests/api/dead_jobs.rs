use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app};

async fn list(app: &TestApp, query: &str) -> Value {
    let resp = app
        .get_admin(&format!("/v1/ops/jobs/dead?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    resp.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<i64> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn dead_jobs_are_listed_newest_first_with_filters() {
    let app = spawn_app().await;
    let old_note = app.dead_job("notifications", 7200.0).await;
    let new_note = app.dead_job("notifications", 60.0).await;
    let refund = app.dead_job("refunds", 60.0).await;
    app.job_in_state("notifications", "pending", 0.0).await;
    app.job_in_state("notifications", "completed", 10.0).await;

    let all = list(&app, "").await;
    assert_eq!(ids(&all), [refund, new_note, old_note]);
    assert_eq!(all["next_before"], Value::Null);
    let job = &all["jobs"][0];
    assert_eq!(job["queue"], "refunds");
    assert_eq!(job["last_error"], "boom");
    assert_eq!(
        (job["attempt"].as_i64(), job["max_attempts"].as_i64()),
        (Some(3), Some(3))
    );
    for field in ["created_at", "died_at"] {
        let at = job[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "{field} is RFC 3339: {at}"
        );
    }

    assert_eq!(ids(&list(&app, "queue=notifications").await), [new_note, old_note]);
    assert_eq!(ids(&list(&app, "older_than_seconds=3600").await), [old_note]);
    assert_eq!(ids(&list(&app, "newer_than_seconds=3600").await), [refund, new_note]);
    assert_eq!(
        ids(&list(&app, "queue=notifications&newer_than_seconds=3600").await),
        [new_note]
    );
    assert_eq!(ids(&list(&app, "queue=checkout").await), Vec::<i64>::new());
}

#[tokio::test]
async fn dead_jobs_come_a_page_at_a_time() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(app.dead_job("tracking", 30.0).await);
    }
    made.reverse();

    let first = list(&app, "limit=2").await;
    assert_eq!(ids(&first), made[..2]);
    let before = first["next_before"].as_i64().unwrap();
    let second = list(&app, &format!("limit=2&before={before}")).await;
    assert_eq!(ids(&second), made[2..4]);
    let before = second["next_before"].as_i64().unwrap();
    let third = list(&app, &format!("limit=2&before={before}")).await;
    assert_eq!(ids(&third), made[4..]);
    assert_eq!(third["next_before"], Value::Null);
}

#[tokio::test]
async fn a_job_is_shown_in_full_or_not_found() {
    let app = spawn_app().await;
    let id = app.dead_job("refunds", 5.0).await;
    let resp = app.get_admin(&format!("/v1/ops/jobs/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["id"], id);
    assert_eq!(job["state"], "dead");
    assert_eq!(job["queue"], "refunds");
    assert_eq!(job["payload"], json!({"n": 1}));
    assert_eq!(job["errors"][0]["error"], "boom");
    assert_eq!(job["locked_by"], Value::Null);
    assert!(job["finished_at"].is_string());

    let resp = app
        .get_admin(&format!("/v1/ops/jobs/{}", id + 1000))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    assert!(problem["detail"].as_str().unwrap().contains(&(id + 1000).to_string()));
}

#[tokio::test]
async fn a_dead_job_is_retried_once() {
    let app = spawn_app().await;
    let id = app.dead_job("notifications", 5.0).await;
    let retry = format!("/v1/ops/jobs/{id}/retry");

    let resp = app.post_admin(&retry, &json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"id": id, "state": "pending"})
    );
    assert_eq!(app.state_of(id).await, "pending");
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempt, 0, "a fresh round of attempts");

    let resp = app.post_admin(&retry, &json!({})).send().await.unwrap();
    let problem = assert_problem(resp, StatusCode::CONFLICT, "conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("pending"), "{problem}");

    let resp = app
        .post_admin(&format!("/v1/ops/jobs/{}/retry", id + 1000), &json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn a_dead_or_pending_job_is_discarded_once() {
    let app = spawn_app().await;
    let dead = app.dead_job("notifications", 5.0).await;
    let pending = app.job_in_state("notifications", "pending", 0.0).await;
    let completed = app.job_in_state("notifications", "completed", 5.0).await;

    for id in [dead, pending] {
        let resp = app
            .post_admin(&format!("/v1/ops/jobs/{id}/discard"), &json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"id": id, "state": "discarded"})
        );
        assert_eq!(app.state_of(id).await, "discarded");
    }
    for (id, state) in [(dead, "discarded"), (completed, "completed")] {
        let resp = app
            .post_admin(&format!("/v1/ops/jobs/{id}/discard"), &json!({}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::CONFLICT, "conflict").await;
        assert!(problem["detail"].as_str().unwrap().contains(state), "{problem}");
    }
}

#[tokio::test]
async fn dead_jobs_are_retried_in_bulk_by_filter() {
    let app = spawn_app().await;
    let old_note = app.dead_job("notifications", 7200.0).await;
    let new_note = app.dead_job("notifications", 60.0).await;
    let refund = app.dead_job("refunds", 7200.0).await;

    let resp = app
        .post_admin(
            "/v1/ops/jobs/dead/retry",
            &json!({"queue": "notifications", "older_than_seconds": 3600}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        without_as_of(resp.json::<Value>().await.unwrap()),
        json!({"count": 1, "dry_run": false, "skipped_past_key_memory": 0})
    );
    assert_eq!(app.state_of(old_note).await, "pending");
    assert_eq!(app.state_of(new_note).await, "dead");
    assert_eq!(app.state_of(refund).await, "dead");

    // An empty filter changes nothing by mistake: every dead job needs "all".
    let resp = app
        .post_admin("/v1/ops/jobs/dead/retry", &json!({}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("\"all\": true"),
        "{problem}"
    );
    assert_eq!(app.state_of(new_note).await, "dead");
    let resp = app
        .post_admin("/v1/ops/jobs/dead/retry", &json!({"all": true, "dry_run": true}))
        .send()
        .await
        .unwrap();
    let counted = resp.json::<Value>().await.unwrap();
    assert_eq!(
        without_as_of(counted.clone()),
        json!({"count": 2, "dry_run": true, "skipped_past_key_memory": 0})
    );
    assert_eq!(app.state_of(new_note).await, "dead", "a dry run changes nothing");
    // A job that dies after the count is left out of the change bounded by the count's time.
    let after_count = app.dead_job("notifications", 0.0).await;
    let resp = app
        .post_admin(
            "/v1/ops/jobs/dead/retry",
            &json!({"all": true, "died_at_most": counted["as_of"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["count"], 2);
    assert_eq!(app.state_of(new_note).await, "pending");
    assert_eq!(app.state_of(refund).await, "pending");
    assert_eq!(app.state_of(after_count).await, "dead");
}

/// A bulk answer without its `as_of`, which is the database's time.
fn without_as_of(mut answer: Value) -> Value {
    let as_of = answer.as_object_mut().unwrap().remove("as_of").expect("an as_of");
    assert!(
        as_of.as_str().is_some_and(|t| t.ends_with('Z') || t.contains('+')),
        "{as_of}"
    );
    answer
}

#[tokio::test]
async fn dead_jobs_are_discarded_in_bulk_by_filter() {
    let app = spawn_app().await;
    let note = app.dead_job("notifications", 60.0).await;
    let refund = app.dead_job("refunds", 60.0).await;
    let pending = app.job_in_state("refunds", "pending", 0.0).await;

    let resp = app
        .post_admin(
            "/v1/ops/jobs/dead/discard",
            &json!({"queue": "refunds", "newer_than_seconds": 3600}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["count"], 1);
    assert_eq!(app.state_of(refund).await, "discarded");
    assert_eq!(app.state_of(note).await, "dead");
    assert_eq!(
        app.state_of(pending).await,
        "pending",
        "bulk discard touches dead jobs only"
    );
}

#[tokio::test]
async fn queue_statistics_cover_every_queue() {
    let app = spawn_app().await;
    app.dead_job("refunds", 60.0).await;
    app.job_in_state("notifications", "pending", 0.0).await;
    app.job_in_state("notifications", "running", 0.0).await;

    let resp = app.get_admin("/v1/ops/queues").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stats: Vec<Value> = resp.json().await.unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s["queue"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "entitlements",
            "refunds",
            "notifications",
            "broadcasts",
            "checkout",
            "tracking"
        ]
    );
    let notes = &stats[2];
    assert_eq!(
        (
            notes["pending"].as_i64(),
            notes["running"].as_i64(),
            notes["dead"].as_i64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert!(notes["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(stats[1]["dead"], 1);
    assert_eq!(stats[1]["scheduled"], 0);
}

#[tokio::test]
async fn jobs_in_any_state_are_listed_by_queue_state_key_and_payload() {
    let app = spawn_app().await;
    let dead = app.dead_job("refunds", 60.0).await;
    let pending = app.job_in_state("notifications", "pending", 0.0).await;
    let completed = app.job_in_state("notifications", "completed", 5.0).await;
    let ids = |page: &Value| -> Vec<i64> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect()
    };
    let list = |query: String| {
        let app = &app;
        async move {
            let resp = app.get_admin(&format!("/v1/ops/jobs{query}")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{query}");
            resp.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(ids(&list(String::new()).await), [completed, pending, dead]);
    assert_eq!(ids(&list("?queue=notifications".into()).await), [completed, pending]);
    assert_eq!(ids(&list("?state=completed".into()).await), [completed]);
    let key: String = sqlx::query_scalar("SELECT logical_key FROM jobs WHERE id = $1")
        .bind(pending)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let page = list(format!("?logical_key={key}")).await;
    assert_eq!(ids(&page), [pending]);
    assert_eq!(page["jobs"][0]["state"], "pending");
    sqlx::query("UPDATE jobs SET payload = '{\"user_id\": 42, \"plan\": \"pro\"}' WHERE id = $1")
        .bind(dead)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(ids(&list("?payload=%7B%22user_id%22%3A42%7D".into()).await), [dead]);
    let page = list("?limit=2".into()).await;
    assert_eq!(
        (ids(&page), page["next_before"].as_i64()),
        (vec![completed, pending], Some(pending))
    );
    assert_eq!(ids(&list(format!("?before={pending}")).await), [dead]);

    for bad in ["?state=asleep", "?payload=42", "?payload=%7B", "?queue=email"] {
        let resp = app.get_admin(&format!("/v1/ops/jobs{bad}")).send().await.unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
}

#[tokio::test]
async fn a_paused_queue_shows_paused_until_resumed_and_an_unknown_queue_is_not_found() {
    let app = spawn_app().await;
    let pause = |path: &'static str| app.post_admin(path, &json!({})).send();
    let resp = pause("/v1/ops/queues/notifications/pause").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"queue": "notifications", "paused": true, "changed": true})
    );
    let again: Value = pause("/v1/ops/queues/notifications/pause")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["changed"], false);
    let stats: Vec<Value> = app
        .get_admin("/v1/ops/queues")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paused: Vec<&str> = stats
        .iter()
        .filter(|q| q["paused"] == true)
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(paused, ["notifications"]);
    let resumed: Value = pause("/v1/ops/queues/notifications/resume")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resumed,
        json!({"queue": "notifications", "paused": false, "changed": true})
    );
    assert_eq!(app.count("queue_pauses").await, 0);

    let resp = pause("/v1/ops/queues/email/pause").await.unwrap();
    let problem = assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("notifications"),
        "{problem}"
    );
    let resp = reqwest::Client::new()
        .post(app.url("/v1/ops/queues/notifications/pause"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_refund_job_older_than_stripes_key_memory_is_retried_only_when_insisted() {
    let app = spawn_app().await;
    let id = app.dead_job("refunds", 60.0).await;
    sqlx::query("UPDATE jobs SET created_at = now() - interval '25 hours' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let resp = app
        .post_admin(&format!("/v1/ops/jobs/{id}/retry"), &json!({}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, StatusCode::CONFLICT, "conflict").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("?past_key_memory=true"),
        "{problem}"
    );
    let resp = app
        .post_admin("/v1/ops/jobs/dead/retry", &json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        without_as_of(resp.json::<Value>().await.unwrap()),
        json!({"count": 0, "dry_run": false, "skipped_past_key_memory": 1})
    );
    assert_eq!(app.state_of(id).await, "dead");
    let resp = app
        .post_admin(&format!("/v1/ops/jobs/{id}/retry?past_key_memory=true"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.state_of(id).await, "pending");
}

#[tokio::test]
async fn ages_are_measured_from_died_at_most_when_it_is_given() {
    let app = spawn_app().await;
    let two_hours = app.dead_job("notifications", 7300.0).await;
    let ninety_minutes = app.dead_job("notifications", 5400.0).await;
    // As a count an hour ago would have seen them: only the first was dead for over an hour then.
    let an_hour_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let resp = app
        .post_admin(
            "/v1/ops/jobs/dead/retry",
            &json!({"older_than_seconds": 3600, "died_at_most": an_hour_ago}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["count"], 1);
    assert_eq!(app.state_of(two_hours).await, "pending");
    assert_eq!(app.state_of(ninety_minutes).await, "dead");
}
