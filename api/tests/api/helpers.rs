//! `spawn_app()` and what tests need around it: an admin client, problem assertions, and
//! factories for job rows in any state.

use std::net::{IpAddr, Ipv4Addr};

use api::{Application, Config};
use jobs::config::Secret;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

/// The admin token of every test app.
pub const TOKEN: &str = "test-admin-token-0123456789";

/// TestApp is a running app, its database and a client for it.
pub struct TestApp {
    pub address: String,
    pub db_url: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
}

/// The config of a test app on `db_url`: loopback, a free port.
pub fn config(db_url: &str) -> Config {
    Config {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        database_url: Secret::new(db_url),
        database_pool_size: 5,
        admin_token: Secret::new(TOKEN),
    }
}

/// Builds and starts an app on a fresh database.
pub async fn spawn_app() -> TestApp {
    let db_url = sandbox::postgres::test_database().await;
    let app = Application::build(config(&db_url)).await.expect("building the app");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let pool = jobs::db::connect(&db_url, 3)
        .await
        .expect("connecting to the test database");
    TestApp {
        address,
        db_url,
        pool,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A GET without credentials.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    /// A GET with the admin token.
    pub fn get_admin(&self, path: &str) -> RequestBuilder {
        self.get(path).bearer_auth(TOKEN)
    }

    /// A POST with the admin token and `body` as JSON.
    pub fn post_admin(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(TOKEN).json(body)
    }

    /// Rows in `jobs`.
    pub async fn job_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// A job's state.
    pub async fn state_of(&self, id: i64) -> String {
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Inserts a job of `queue` that died `died_secs_ago` seconds ago after 3 attempts.
    pub async fn dead_job(&self, queue: &str, died_secs_ago: f64) -> i64 {
        self.job_in_state(queue, "dead", died_secs_ago).await
    }

    /// Inserts a job of `queue` in `state`; `finished_secs_ago` sets `finished_at` for finished
    /// states.
    pub async fn job_in_state(&self, queue: &str, state: &str, finished_secs_ago: f64) -> i64 {
        let finished = matches!(state, "dead" | "completed" | "discarded");
        sqlx::query_scalar(
            "INSERT INTO jobs (queue, logical_key, payload, state, attempt, max_attempts, finished_at, errors)
             VALUES ($1, 'test:' || gen_random_uuid(), '{\"n\": 1}', $2, 3, 3,
                     CASE WHEN $3 THEN now() - make_interval(secs => $4) END,
                     jsonb_build_array(jsonb_build_object('attempt', 3, 'at', now(), 'kind', 'retryable', 'error', 'boom')))
             RETURNING id",
        )
        .bind(queue)
        .bind(state)
        .bind(finished)
        .bind(finished_secs_ago)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

/// Asserts that `resp` is a problem of `status` and `slug` and returns its body.
pub async fn assert_problem(resp: Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(resp.status(), status, "status of {}", resp.url());
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "content type of {}",
        resp.url()
    );
    let body: Value = resp.json().await.expect("a problem body is JSON");
    assert_eq!(body["type"], format!("urn:paygate:problem:{slug}"), "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}
