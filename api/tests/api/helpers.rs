//! `spawn_app()` and what tests need around it: admin and user clients, signed Stripe
//! deliveries, problem assertions, and factories for job rows in any state.

use std::net::{IpAddr, Ipv4Addr};

use api::config::JwtConfig;
use api::{Application, Config};
use jobs::billing::Plans;
use jobs::config::Secret;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

/// The admin token of every test app.
pub const TOKEN: &str = "test-admin-token-0123456789";

/// The Stripe webhook signing secrets of every test app, in `STRIPE_WEBHOOK_SECRET` order: the
/// current one, and one being rolled.
pub const WEBHOOK_SECRET: &str = "whsec_test_current_0123456789";
pub const WEBHOOK_SECRET_ROLLED: &str = "whsec_test_rolled_0123456789";
/// The bot of every test app.
pub const BOT_TOKEN: &str = "7342037142:test-bot-token";
/// The Telegram webhook's secret token of every test app.
pub const TELEGRAM_WEBHOOK_SECRET: &str = "test-telegram-secret-0123";

/// The plan catalogue of every test app: three plans sold through Stripe, one only for Stars.
/// `pro_yearly` is started by the metrics test alone, which counts its checkouts.
pub const PLANS: &str = r#"{
    "pro_monthly": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro_monthly"},
    "team_monthly": {"name": "Team", "entitlement": "team", "period_days": 30, "stripe_price": "price_team_monthly"},
    "pro_yearly": {"name": "Pro (yearly)", "entitlement": "pro", "period_days": 365, "stripe_price": "price_pro_yearly"},
    "stars_only": {"name": "Stars", "entitlement": "pro", "period_days": 30, "stars_price": 250}
}"#;

/// The user token settings of every test app.
pub fn jwt() -> JwtConfig {
    JwtConfig {
        secret: Secret::new("test-jwt-secret-0123456789abcdef-xyz"),
        issuer: "paygate".into(),
        audience: "paygate-api".into(),
    }
}

/// A valid user token for `user_id`, issued now.
pub fn user_token(user_id: i64) -> String {
    api::auth::issue_user_token(&jwt(), user_id, chrono::Utc::now())
}

/// The unix time now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// TestApp is a running app, its database and a client for it.
pub struct TestApp {
    pub address: String,
    pub db_url: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
}

/// The bot's username in the test config: promos' deep links name it.
pub const BOT_USERNAME: &str = "paygate_test_bot";

/// The config of a test app on `db_url`: loopback, a free port.
pub fn config(db_url: &str) -> Config {
    Config {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        database_url: Secret::new(db_url),
        database_pool_size: 5,
        admin_token: Secret::new(TOKEN),
        metrics_token: None,
        plans: Plans::parse(PLANS).expect("the test catalogue is valid"),
        texts: jobs::bot::Texts::default(),
        stripe_webhook_secrets: vec![Secret::new(WEBHOOK_SECRET), Secret::new(WEBHOOK_SECRET_ROLLED)],
        jwt: jwt(),
        telegram: api::config::TelegramConfig::new(BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET)
            .expect("a valid bot token and secret"),
        marketing: jobs::marketing::Settings {
            bot_username: Some(BOT_USERNAME.into()),
            messages_per_second: 30.0,
        },
    }
}

/// Builds and starts an app on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// An app on a fresh database, with the test config changed by `change`.
pub async fn spawn_app_with(change: impl FnOnce(&mut Config)) -> TestApp {
    let db_url = sandbox::postgres::test_database().await;
    let mut config = config(&db_url);
    change(&mut config);
    let app = Application::build(config).await.expect("building the app");
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

    /// An admin POST without a body, for the actions that take none.
    pub fn post_admin_empty(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(TOKEN)
    }

    /// A GET as user `user_id`.
    pub fn get_user(&self, path: &str, user_id: i64) -> RequestBuilder {
        self.get(path).bearer_auth(user_token(user_id))
    }

    /// A POST as user `user_id` with `body` as JSON.
    pub fn post_user(&self, path: &str, user_id: i64, body: &Value) -> RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(user_token(user_id))
            .json(body)
    }

    /// A Stripe webhook delivery of `body` with `signature` as its `Stripe-Signature`, if any.
    pub async fn deliver_raw(&self, body: impl Into<reqwest::Body>, signature: Option<&str>) -> Response {
        let mut req = self
            .client
            .post(self.url("/webhooks/stripe"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body);
        if let Some(signature) = signature {
            req = req.header("stripe-signature", signature);
        }
        req.send().await.unwrap()
    }

    /// A Stripe webhook delivery of `event`, signed now with the current secret, as Stripe sends
    /// it.
    pub async fn deliver(&self, event: &Value) -> Response {
        let body = event.to_string();
        let signature = sandbox::stripe::sign_webhook(&body, WEBHOOK_SECRET, now());
        self.deliver_raw(body, Some(&signature)).await
    }

    /// Rows in `jobs`.
    pub async fn job_count(&self) -> i64 {
        self.count("jobs").await
    }

    /// Rows in `table`, one of ours.
    pub async fn count(&self, table: &str) -> i64 {
        assert!(table.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The jobs of `queue`, as (logical key, payload), oldest first.
    pub async fn jobs_of(&self, queue: &str) -> Vec<(String, Value)> {
        sqlx::query_as("SELECT logical_key, payload FROM jobs WHERE queue = $1 ORDER BY id")
            .bind(queue)
            .fetch_all(&self.pool)
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

/// The text of a `/metrics` scrape.
pub async fn scrape(app: &TestApp) -> String {
    let resp = app.get_admin("/metrics").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    resp.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
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
