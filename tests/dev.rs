//! `cargo run --bin dev`: the whole system on this machine.
//!
//! A throwaway PostgreSQL (unless `DATABASE_URL` is set), the fake Telegram Bot API (unless
//! `TELEGRAM_BOT_TOKEN` is set; opening `/sandbox/pay/<slug>` on it pays a Stars invoice link),
//! the fake Stripe (unless `STRIPE_SECRET_KEY` is set; opening a Checkout URL it hands out pays it
//! and sends the webhooks), the release step (`worker migrate`, and with the fake Bot API
//! `worker telegram set-webhook` to the local API, as an operator runs it once), then the `web`
//! (`api`) and `worker` processes exactly as the Procfile runs them. Every other variable gets a
//! local default unless set. Ctrl-C stops everything and removes the throwaway database.

use std::process::{Child, Command};

use anyhow::{Context, bail};
use sandbox::postgres::{Durability, TempCluster};
use sandbox::stripe::FakeStripe;
use sandbox::telegram::{FakeTelegram, Limits};

const FAKE_BOT_TOKEN: &str = "123456:sandbox-token";
const DEV_ADMIN_TOKEN: &str = "dev-admin-token-change-me";
const DEV_WEBHOOK_SECRET: &str = "whsec_sandbox_local_only";
/// The Telegram webhook's secret token with the fake Bot API. A real bot's operator chooses
/// their own (`TELEGRAM_WEBHOOK_SECRET`), so it has no default then.
const DEV_TELEGRAM_WEBHOOK_SECRET: &str = "dev-telegram-secret-local-only";
const DEV_JWT_SECRET: &str = "dev-jwt-secret-local-only-0123456789";
/// The Telegram user id the printed development token signs in as; the fake Bot API shows the
/// messages sent to this chat.
const DEV_USER_ID: i64 = 42;
/// How long the printed development token stays valid (the API checks `exp`, not the lifetime).
const DEV_TOKEN_TTL_SECS: i64 = 12 * 60 * 60;
/// The paid chat both local plans open; the fake Bot API makes the bot its administrator.
const DEV_CHAT: i64 = -100_100;
const DEV_PLANS: &str = r#"{
    "pro_monthly": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro_monthly", "stars_price": 250, "chats": [-100100]},
    "week_pass": {"name": "Week pass", "entitlement": "pro", "period_days": 7, "stars_price": 75, "chats": [-100100]}}"#;

/// The URL fragment Telegram opens a Mini App with for `user_id`: `initData` signed with the
/// bot's token now (valid as long as the sign-in accepts its `auth_date`), which Telegram's
/// `telegram-web-app.js` reads from `tgWebAppData`.
fn mini_app_fragment(bot_token: &str, user_id: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let user = serde_json::json!({"id": user_id, "first_name": "Dev"}).to_string();
    let init_data = api::auth::init_data::sign(&[("user", &user), ("auth_date", &now)], bot_token);
    form_urlencoded::Serializer::new(String::new())
        .append_pair("tgWebAppData", &init_data)
        .append_pair("tgWebAppVersion", "8.0")
        .append_pair("tgWebAppPlatform", "web")
        .finish()
}

/// A user JWT for `user_id` with the claims the API checks (HS256, `sub`, `iss`, `aud`, `exp`),
/// so a newcomer can call the user endpoints before Mini App sign-in exists on their machine.
fn dev_user_token(secret: &str, issuer: &str, audience: &str, user_id: i64) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let claims = serde_json::json!({
        "sub": user_id.to_string(),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + DEV_TOKEN_TTL_SECS,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?)
}

/// The value of `var`, or `default` when it is unset or empty.
fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let admin_token = std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| DEV_ADMIN_TOKEN.into());

    let (_cluster, database_url) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            eprintln!("dev: starting a throwaway PostgreSQL…");
            let cluster = TempCluster::start(Durability::Production)?;
            let url = cluster.url("postgres");
            (Some(cluster), url)
        }
    };
    let (fake_telegram, telegram_env) = match std::env::var("TELEGRAM_BOT_TOKEN") {
        Ok(token) if !token.is_empty() => (None, vec![("TELEGRAM_BOT_TOKEN".to_string(), token)]),
        _ => {
            let fake = FakeTelegram::start_on("127.0.0.1:8081", FAKE_BOT_TOKEN, Limits::default())
                .await
                .context("starting the fake Bot API on 127.0.0.1:8081")?;
            let env = vec![
                ("TELEGRAM_BOT_TOKEN".to_string(), FAKE_BOT_TOKEN.to_string()),
                ("TELEGRAM_API_URL".to_string(), fake.url().to_string()),
                (
                    "TELEGRAM_WEBHOOK_SECRET".to_string(),
                    env_or("TELEGRAM_WEBHOOK_SECRET", DEV_TELEGRAM_WEBHOOK_SECRET),
                ),
                // Promos' deep-link buttons name the bot.
                (
                    "TELEGRAM_BOT_USERNAME".to_string(),
                    env_or("TELEGRAM_BOT_USERNAME", "paygate_dev_bot"),
                ),
            ];
            (Some(fake), env)
        }
    };

    let (fake_stripe, mut stripe_env) = match std::env::var("STRIPE_SECRET_KEY") {
        Ok(key) if !key.is_empty() => (None, vec![("STRIPE_SECRET_KEY".to_string(), key)]),
        _ => {
            let fake = FakeStripe::start_on("127.0.0.1:8082", sandbox::stripe::SECRET_KEY)
                .await
                .context("starting the fake Stripe API on 127.0.0.1:8082")?;
            let env = vec![
                ("STRIPE_SECRET_KEY".to_string(), sandbox::stripe::SECRET_KEY.to_string()),
                ("STRIPE_API_URL".to_string(), fake.url().to_string()),
            ];
            (Some(fake), env)
        }
    };
    let webhook_secret = env_or("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET);
    if let Some(fake) = &fake_stripe {
        let first_secret = webhook_secret.split(',').next().unwrap_or_default().trim();
        fake.send_webhooks_to(&format!("http://127.0.0.1:{port}/webhooks/stripe"), first_secret);
    }
    let site = format!("http://127.0.0.1:{port}");
    for (var, default) in [
        ("STRIPE_WEBHOOK_SECRET", webhook_secret.clone()),
        ("PLANS", DEV_PLANS.to_string()),
        ("JWT_SECRET", DEV_JWT_SECRET.to_string()),
        ("CHECKOUT_SUCCESS_URL", format!("{site}/docs#paid")),
        ("CHECKOUT_CANCEL_URL", format!("{site}/docs#cancelled")),
        ("BILLING_PORTAL_RETURN_URL", format!("{site}/docs")),
        ("BILLING_PORTAL_LINK", format!("{site}/docs#billing")),
    ] {
        // PLANS_FILE stands in for PLANS when set.
        if var == "PLANS" && std::env::var("PLANS_FILE").is_ok_and(|f| !f.is_empty()) {
            continue;
        }
        stripe_env.push((var.to_string(), env_or(var, &default)));
    }

    eprintln!("dev: building api and worker…");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "-p", "api", "-p", "worker"]);
    // What `cargo run` told this binary about itself, which build scripts would see as a change
    // (ring's reruns on CARGO_MANIFEST_DIR) and rebuild the TLS stack and all above it.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            build.env_remove(&var);
        }
    }
    if !build.status()?.success() {
        bail!("cargo build failed");
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the dev binary has a directory")?
        .to_path_buf();
    let process = |name: &str| {
        let mut cmd = Command::new(bin_dir.join(name));
        cmd.env("DATABASE_URL", &database_url)
            .env("PORT", &port)
            .env("ADMIN_TOKEN", &admin_token);
        cmd.envs(telegram_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(stripe_env.iter().map(|(k, v)| (k, v)));
        cmd
    };

    if !process("worker").arg("migrate").status()?.success() {
        bail!("worker migrate failed");
    }
    if fake_telegram.is_some() {
        // The fake records the webhook before the API listens; it posts to it only when paid.
        let mut set_webhook = process("worker");
        set_webhook.args([
            "telegram",
            "set-webhook",
            "--url",
            &format!("http://127.0.0.1:{port}/webhooks/telegram"),
        ]);
        // Off the runtime's threads: the command talks to the fake Bot API this runtime serves.
        let status = tokio::task::spawn_blocking(move || set_webhook.status()).await??;
        if !status.success() {
            bail!("worker telegram set-webhook failed");
        }
    }
    let mut children: Vec<Child> = vec![process("api").spawn()?, process("worker").arg("run").spawn()?];

    let fake_url = fake_telegram.as_ref().map(|f| f.url().to_string());
    println!(
        "\npaygate is running.\n  API          http://127.0.0.1:{port}\n  Swagger UI   http://127.0.0.1:{port}/docs\n  Metrics      http://127.0.0.1:{port}/metrics (Authorization: Bearer {admin_token})\n  Database     {database_url}"
    );
    if let Some(url) = &fake_url {
        println!("  Fake Bot API {url} (messages it received: {url}/sandbox/messages)");
    }
    if let Some(fake) = &fake_stripe {
        let url = fake.url();
        println!(
            "  Fake Stripe  {url} (requests it received: {url}/sandbox/requests, webhooks it sent: {url}/sandbox/webhooks)"
        );
    }
    println!("  Ops console  http://127.0.0.1:{port}/ops (sign in with {admin_token})");
    if fake_telegram.is_some() {
        println!(
            "  Mini App     http://127.0.0.1:{port}/app#{} (user {DEV_USER_ID}, as Telegram opens it)",
            mini_app_fragment(FAKE_BOT_TOKEN, DEV_USER_ID)
        );
    }
    println!(
        "\nSend a Telegram message through the pipeline:\n  curl -s -X POST http://127.0.0.1:{port}/v1/ops/notifications \\\n    -H 'Authorization: Bearer {admin_token}' -H 'Content-Type: application/json' \\\n    -d '{{\"chat_id\": 42, \"text\": \"Hello from paygate\"}}'"
    );
    if let Some(url) = &fake_url {
        println!("  curl -s {url}/sandbox/messages");
    }
    if let Some(url) = &fake_url {
        println!(
            "\nTalk to the bot as Telegram user {DEV_USER_ID}: write to it, press its buttons, read its answers:\n  curl -s -X POST \"{url}/sandbox/write?user_id={DEV_USER_ID}&text=/start\"\n  curl -s -X POST \"{url}/sandbox/press?user_id={DEV_USER_ID}&data=plan:pro_monthly\"\n  curl -s -X POST \"{url}/sandbox/press?user_id={DEV_USER_ID}&data=card:pro_monthly\"    # or stars:pro_monthly\n  curl -s {url}/sandbox/messages    # the bot's answers; open the last one's button URL to pay\n  curl -s -X POST \"{url}/sandbox/write?user_id={DEV_USER_ID}&text=/status\""
        );
    }
    if let Some(url) = &fake_url {
        println!(
            "\nThe whole journey in the paid chat {DEV_CHAT}, with the week pass (one-off, Stars):\n  curl -s -X POST \"{url}/sandbox/write?user_id={DEV_USER_ID}&text=/start\"\n  curl -s -X POST \"{url}/sandbox/press?user_id={DEV_USER_ID}&data=plan:week_pass\"\n  curl -s -X POST \"{url}/sandbox/press?user_id={DEV_USER_ID}&data=stars:week_pass\"    # an invoice in the chat\n  curl -s {url}/sandbox/messages    # its invoice.link is https://t.me/$<slug>\n  curl -s \"{url}/sandbox/pay/<slug>?user_id={DEV_USER_ID}\"    # paid: the bot confirms and sends a single-use invite link\n  curl -s -X POST \"{url}/sandbox/join?user_id={DEV_USER_ID}&link=<the join button's https://t.me/+… url>\"\n  curl -s {url}/sandbox/chats    # {DEV_USER_ID} is a member; /status says 1 of 1 chats\nEnd it early, as if its week ran out 7 hours ago; the worker's expiry pass (every minute) ends it,\nremoves {DEV_USER_ID} from the chat and tells them:\n  psql '{database_url}' -c \"UPDATE entitlements SET expires_at = now() - interval '7 hours' WHERE user_id = {DEV_USER_ID} AND plan = 'week_pass'\"\n  curl -s {url}/sandbox/chats    # {DEV_USER_ID} has left\n  curl -s http://127.0.0.1:{port}/v1/ops/access/audit -H 'Authorization: Bearer {admin_token}'    # who is where they should not be"
        );
    }
    let user_token = dev_user_token(
        &env_or("JWT_SECRET", DEV_JWT_SECRET),
        &env_or("JWT_ISSUER", "paygate"),
        &env_or("JWT_AUDIENCE", "paygate-api"),
        DEV_USER_ID,
    )?;
    println!(
        "\nBuy a plan as Telegram user {DEV_USER_ID} (this token is valid for 12 hours):\n  export TOKEN={user_token}\n  curl -s -X POST http://127.0.0.1:{port}/v1/billing/checkout -H \"Authorization: Bearer $TOKEN\" \\\n    -H 'Content-Type: application/json' -d '{{\"plan\": \"pro_monthly\"}}'\n  curl -s \"http://127.0.0.1:{port}/v1/billing/checkout/<id>?wait=10\" -H \"Authorization: Bearer $TOKEN\""
    );
    if fake_stripe.is_some() {
        println!("  curl -s <url>    # opening the fake Checkout URL pays it and sends the signed webhooks");
    }
    if let Some(url) = &fake_url {
        println!(
            "Or pay in Telegram Stars (<slug> is what follows https://t.me/$ in the invoice url):\n  curl -s -X POST http://127.0.0.1:{port}/v1/billing/stars-invoice -H \"Authorization: Bearer $TOKEN\" \\\n    -H 'Content-Type: application/json' -d '{{\"plan\": \"pro_monthly\"}}'\n  curl -s \"http://127.0.0.1:{port}/v1/billing/stars-invoice/<id>?wait=10\" -H \"Authorization: Bearer $TOKEN\"\n  curl -s \"{url}/sandbox/pay/<slug>?user_id={DEV_USER_ID}\"    # pays it as Telegram would"
        );
    }
    println!("Then:\n  curl -s http://127.0.0.1:{port}/v1/me/entitlements -H \"Authorization: Bearer $TOKEN\"");
    if let Some(url) = &fake_url {
        println!("  curl -s {url}/sandbox/messages    # the bot's confirmation to user {DEV_USER_ID}");
    }
    if let Some(fake) = &fake_stripe {
        let url = fake.url();
        println!(
            "\nSend Stripe's events for user {DEV_USER_ID}'s subscription on demand, as `stripe trigger` does (any of {}):\n  curl -s -X POST \"{url}/sandbox/trigger/checkout.session.completed?user_id={DEV_USER_ID}&plan=pro_monthly&price=price_pro_monthly\"\n  curl -s -X POST \"{url}/sandbox/trigger/invoice.payment_failed?user_id={DEV_USER_ID}\"\n  curl -s -X POST \"{url}/sandbox/trigger/charge.refunded?user_id={DEV_USER_ID}\"\n  curl -s -X POST {url}/sandbox/webhooks/<evt_…>/resend    # delivers one again, as Stripe retries",
            sandbox::stripe::TRIGGERS.join(", ")
        );
    }
    println!(
        "\nRun a promo campaign to chat {DEV_USER_ID} now, then watch the broadcast and the campaign's stats:\n  curl -s -X POST http://127.0.0.1:{port}/v1/ops/campaigns -H 'Authorization: Bearer {admin_token}' \\\n    -H 'Content-Type: application/json' -d '{{\"name\": \"winter\", \"audience\": \"chats\", \"chat_ids\": [{DEV_USER_ID}], \"promos\": [{{\"name\": \"a\", \"text\": \"Pro for less this week\", \"buttons\": [{{\"text\": \"Get Pro\", \"action\": \"deep_link\"}}, {{\"text\": \"Tell me more\", \"action\": \"callback\"}}]}}]}}'\n  curl -s -X POST http://127.0.0.1:{port}/v1/ops/campaigns/winter/send -H 'Authorization: Bearer {admin_token}'\n  curl -s http://127.0.0.1:{port}/v1/ops/broadcasts/<broadcast_id> -H 'Authorization: Bearer {admin_token}'\n  curl -s http://127.0.0.1:{port}/v1/ops/campaigns/winter/stats -H 'Authorization: Bearer {admin_token}'"
    );
    println!("\nCtrl-C stops everything.");

    tokio::signal::ctrl_c().await?;
    eprintln!("dev: stopping…");
    for child in &children {
        // SIGTERM, as Heroku stops a dyno: the processes finish or hand back their work.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    Ok(())
}
