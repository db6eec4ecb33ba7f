//! Test harness: a fresh database, the fake Bot API and fake Stripe, and worker processes,
//! in-process or real.

use std::time::{Duration, Instant};

use jobs::billing::Plans;
use jobs::billing::stripe::Links;
use jobs::config::Secret;
use jobs::queue::{Enqueued, NewJob, enqueue};
use jobs::telegram::SendMessage;
use jobs::telegram::pace::Pace;
use sandbox::stripe::FakeStripe;
use sandbox::telegram::{FakeTelegram, Limits, SentMessage};
use sqlx::PgPool;
use tokio::sync::oneshot;

/// The bot token the tests configure; the fake refuses any other.
pub const BOT_TOKEN: &str = "123456:test-token";
/// The test bot's username: promos' deep links name it.
pub const BOT_USERNAME: &str = "paygate_test_bot";

/// The plan catalogue the tests configure: a monthly plan sold by card and as a Stars
/// subscription, and a week's pass sold once for Stars.
pub const PLANS: &str = r#"{"pro_monthly": {"name": "Pro", "entitlement": "pro", "period_days": 30,
    "stripe_price": "price_pro_monthly", "stars_price": 250},
    "week_pass": {"name": "Week pass", "entitlement": "pro", "period_days": 7, "stars_price": 75}}"#;
/// Where Checkout and the Billing Portal send users back to, in the tests.
pub const SUCCESS_URL: &str = "https://bot.example/paid";
pub const CANCEL_URL: &str = "https://bot.example/cancelled";
pub const PORTAL_RETURN_URL: &str = "https://bot.example/account";
pub const PORTAL_LINK: &str = "https://t.me/paygate_bot/app?startapp=billing";

/// The Stripe webhook signing secret, the admin token and the JWT settings of the tests' web process.
pub const WEBHOOK_SECRET: &str = "whsec_e2e_secret";
/// The Telegram webhook's secret token in tests.
pub const TELEGRAM_WEBHOOK_SECRET: &str = "e2e-telegram-secret-token";
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
pub const JWT: (&str, &str, &str) = ("e2e-jwt-secret-0123456789abcdef0123", "paygate", "paygate-api");

/// World is one test's database, fake Bot API and fake Stripe.
pub struct World {
    pub database_url: String,
    pub pool: PgPool,
    pub telegram: FakeTelegram,
    pub stripe: FakeStripe,
}

impl World {
    /// A fresh database and a fake Bot API enforcing `limits`.
    pub async fn new(limits: Limits) -> World {
        let database_url = sandbox::postgres::test_database().await;
        let pool = jobs::db::connect(&database_url, 10)
            .await
            .expect("connecting to the test database");
        let telegram = FakeTelegram::start(BOT_TOKEN, limits).await;
        let stripe = FakeStripe::start(sandbox::stripe::SECRET_KEY).await;
        World {
            database_url,
            pool,
            telegram,
            stripe,
        }
    }

    /// A worker configuration pointing at this world, sending at `per_second`.
    pub fn worker_config(&self, per_second: f64) -> worker::config::Config {
        worker::config::Config {
            database_url: self.database_url.clone(),
            database_pool_size: 20,
            concurrency: 20,
            telegram_bot_token: Secret::new(BOT_TOKEN),
            telegram_api_url: self.telegram.url().to_string(),
            telegram_pace: Pace {
                per_second,
                ..Pace::TELEGRAM_DEFAULT
            },
            job_retention: Duration::from_secs(3600),
            instance: "test".into(),
            plans: Plans::parse(PLANS).expect("the test catalogue parses"),
            texts: jobs::bot::Texts::default(),
            stripe: worker::config::StripeConfig {
                secret_key: Secret::new(sandbox::stripe::SECRET_KEY),
                api_url: self.stripe.url().to_string(),
                success_url: SUCCESS_URL.into(),
                cancel_url: CANCEL_URL.into(),
                portal_return_url: PORTAL_RETURN_URL.into(),
            },
            links: Links {
                billing_portal: Some(PORTAL_LINK.into()),
            },
            attribution_window: jobs::tracking::DEFAULT_ATTRIBUTION_WINDOW,
            marketing: self.marketing(per_second),
            broadcast_retention: jobs::marketing::broadcasts::DEFAULT_BROADCAST_RETENTION,
            record_retention: jobs::retention::DEFAULT_RECORD_RETENTION,
            expiry_grace: jobs::billing::expiry::DEFAULT_GRACE,
            reminder_hours: jobs::billing::expiry::DEFAULT_REMINDER_HOURS.to_vec(),
        }
    }

    /// The campaign settings of both processes: the test bot's username, sends at `per_second`.
    pub fn marketing(&self, per_second: f64) -> jobs::marketing::Settings {
        jobs::marketing::Settings {
            bot_username: Some(BOT_USERNAME.into()),
            messages_per_second: per_second,
        }
    }

    /// The web process's configuration for this world, on a free port.
    pub fn api_config(&self) -> api::Config {
        api::Config {
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            database_url: Secret::new(self.database_url.clone()),
            database_pool_size: 5,
            admin_token: Secret::new(ADMIN_TOKEN),
            metrics_token: None,
            plans: Plans::parse(PLANS).expect("the test catalogue parses"),
            texts: jobs::bot::Texts::default(),
            stripe_webhook_secrets: vec![Secret::new(WEBHOOK_SECRET)],
            jwt: self.jwt(),
            telegram: api::config::TelegramConfig::new(BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET)
                .expect("a valid bot token and secret"),
            marketing: self.marketing(30.0),
        }
    }

    /// The JWT settings of the web process.
    pub fn jwt(&self) -> api::config::JwtConfig {
        api::config::JwtConfig {
            secret: Secret::new(JWT.0),
            issuer: JWT.1.into(),
            audience: JWT.2.into(),
        }
    }

    /// Starts the web process inside this process; returns its base URL. It serves until the
    /// test ends.
    pub async fn start_api(&self) -> String {
        self.start_api_with(self.api_config()).await
    }

    /// Starts the web process with `config`, as [`World::start_api`] does.
    pub async fn start_api_with(&self, config: api::Config) -> String {
        let app = api::Application::build(config).await.expect("building the web process");
        let url = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        url
    }

    /// Starts the web process as [`World::start_api`] does, and points the fake Stripe's webhooks
    /// (its Checkout page, its triggers) at it, signed with [`WEBHOOK_SECRET`].
    pub async fn start_api_receiving_stripe(&self) -> String {
        self.start_api_receiving_stripe_with(self.api_config()).await
    }

    /// [`World::start_api_receiving_stripe`] with `config`.
    pub async fn start_api_receiving_stripe_with(&self, config: api::Config) -> String {
        let api = self.start_api_with(config).await;
        self.stripe
            .send_webhooks_to(&format!("{api}/webhooks/stripe"), WEBHOOK_SECRET);
        api
    }

    /// Points the fake Bot API's webhook at the api at `api`, as `worker telegram set-webhook`
    /// does.
    pub async fn set_bot_webhook(&self, api: &str) {
        let bot = jobs::telegram::client::TelegramClient::new(
            &jobs::config::Secret::new(BOT_TOKEN),
            self.telegram.url(),
            "test",
        )
        .unwrap();
        bot.set_webhook(
            &format!("{api}/webhooks/telegram"),
            TELEGRAM_WEBHOOK_SECRET,
            &jobs::telegram::client::BOT_UPDATES,
        )
        .await
        .unwrap();
    }

    /// Waits up to `timeout` for a message to `chat_id` whose text starts with `start`, and
    /// returns the first.
    pub async fn told(&self, chat_id: i64, start: &str, timeout: Duration) -> SentMessage {
        let deadline = Instant::now() + timeout;
        loop {
            let found = (self.telegram.messages_to(chat_id).into_iter()).find(|m| m.text.starts_with(start));
            if let Some(message) = found {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "{chat_id} was never told {start:?}: {:?}",
                self.telegram.texts_to(chat_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the fake Bot API holds more than `seen` messages to `chat_id`, and returns the
    /// first one after those; panics after `timeout`.
    pub async fn message_after(&self, chat_id: i64, seen: usize, timeout: Duration) -> SentMessage {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.telegram.messages_to(chat_id).into_iter().nth(seen) {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for message {} to {chat_id}; it has: {:?}",
                seen + 1,
                self.telegram.texts_to(chat_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes job `id` dead, as if it had exhausted its attempts, for ops to find and retry.
    pub async fn exhaust(&self, id: i64) {
        sqlx::query("UPDATE jobs SET state = 'dead', finished_at = now(), attempt = max_attempts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("making the job dead");
    }

    /// Starts `worker run` inside this process; stop it with [`InProcessWorker::stop`].
    pub fn start_worker(&self, config: worker::config::Config) -> InProcessWorker {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker::startup::run(config, async move {
            let _ = stopped.await;
        }));
        InProcessWorker { stop: Some(stop), task }
    }

    /// Enqueues a notification with `key`, as a producer would.
    pub async fn notify(&self, key: &str, chat_id: i64, text: &str) -> Enqueued {
        let message = SendMessage {
            chat_id,
            text: text.into(),
            parse_mode: None,
            buttons: vec![],
            invoice: None,
            broadcast_id: None,
        };
        let mut tx = self.pool.begin().await.unwrap();
        let enqueued = enqueue(&mut tx, &NewJob::new(&message, key)).await.unwrap();
        tx.commit().await.unwrap();
        enqueued
    }

    /// The result of `sql`, a query returning one count.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until job `id` is in `state`, or panics after `timeout`.
    pub async fn wait_for_job(&self, id: i64, state: &str, timeout: Duration) {
        let sql = format!("SELECT count(*) FROM jobs WHERE id = {id} AND state = '{state}'");
        self.wait_for_count(&sql, 1, timeout).await;
    }

    /// Waits until `sql` (a single count) returns `want`, or panics after `timeout`.
    pub async fn wait_for_count(&self, sql: &str, want: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(sql).await;
            if n == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for `{sql}` to be {want}, it is {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The state, attempt and errors of job `id`.
    pub async fn job(&self, id: i64) -> (String, i32, serde_json::Value) {
        sqlx::query_as("SELECT state, attempt, errors FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

impl World {
    /// Starts `worker run` from binary `worker` as a separate process, as a worker dyno runs it,
    /// sending at `per_second`. `WORKER_LOG` sets its log filter.
    pub fn spawn_worker_process(&self, worker: &str, per_second: f64) -> std::process::Child {
        self.worker_process(worker, per_second)
            .spawn()
            .expect("starting the worker binary")
    }

    /// The command [`World::spawn_worker_process`] runs, for a test that sets more of its
    /// environment before starting it.
    pub fn worker_process(&self, worker: &str, per_second: f64) -> std::process::Command {
        let mut command = std::process::Command::new(worker);
        command
            .arg("run")
            .env("DATABASE_URL", &self.database_url)
            .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
            .env("TELEGRAM_API_URL", self.telegram.url())
            .env("TELEGRAM_MESSAGES_PER_SECOND", per_second.to_string())
            .env("PLANS", PLANS)
            .env("STRIPE_SECRET_KEY", sandbox::stripe::SECRET_KEY)
            .env("STRIPE_API_URL", self.stripe.url())
            .env("CHECKOUT_SUCCESS_URL", SUCCESS_URL)
            .env("CHECKOUT_CANCEL_URL", CANCEL_URL)
            .env("BILLING_PORTAL_RETURN_URL", PORTAL_RETURN_URL)
            .env("BILLING_PORTAL_LINK", PORTAL_LINK)
            .env(
                "RUST_LOG",
                std::env::var("WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null());
        command
    }
}

/// A Mini App's `initData` for the Telegram user `profile` (`{"id": …, "first_name": …}`),
/// signed now with the test bot's token, as Telegram gives it to the app.
pub fn init_data_for(profile: &serde_json::Value) -> String {
    let now = chrono::Utc::now().timestamp().to_string();
    api::auth::init_data::sign(&[("user", &profile.to_string()), ("auth_date", &now)], BOT_TOKEN)
}

/// Posts `event` to the api at `api` as Stripe does: signed with [`WEBHOOK_SECRET`] now.
/// Returns the answer's status.
pub async fn post_stripe_event(http: &reqwest::Client, api: &str, event: &serde_json::Value) -> u16 {
    let body = event.to_string();
    let now = chrono::Utc::now().timestamp();
    http.post(format!("{api}/webhooks/stripe"))
        .header(
            "Stripe-Signature",
            sandbox::stripe::sign_webhook(&body, WEBHOOK_SECRET, now),
        )
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// GETs `url` as the holder of user token `token` and reads the JSON answer.
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends `signal` (e.g. "KILL", "TERM") to `child`.
pub fn signal(child: &std::process::Child, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Waits for `child` to exit without blocking the runtime, which serves the fake Bot API the
/// child may still be talking to.
pub async fn exited(child: &mut std::process::Child) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// InProcessWorker is a `worker run` on this test's runtime.
pub struct InProcessWorker {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    /// Signals shutdown (as SIGTERM does) and waits for the worker to exit cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .await
            .expect("the worker task panicked")
            .expect("the worker failed");
    }
}
