//! `worker telegram …`: the bot's webhook at Telegram, and bans.

use clap::Subcommand;

/// TelegramCommand is one of the `worker telegram` subcommands.
#[derive(Debug, Subcommand)]
pub enum TelegramCommand {
    /// Points the bot's webhook at `TELEGRAM_WEBHOOK_URL` (or --url) with
    /// `TELEGRAM_WEBHOOK_SECRET` as its secret token, for the updates the bot acts on, and sets
    /// its menu of commands (in the texts of `BOT_TEXTS`) and, with `MINI_APP_URL`, its menu
    /// button to the Mini App. Updates waiting at Telegram are kept.
    SetWebhook {
        /// The public URL of `POST /webhooks/telegram`, e.g. https://<app>.herokuapp.com/webhooks/telegram.
        #[arg(long)]
        url: Option<String>,
    },
    /// Shows the webhook as Telegram sees it: its URL, updates waiting, the last delivery error.
    WebhookInfo,
    /// Bans a user: their pre-checkout queries are refused from now on (needs DATABASE_URL).
    Ban { user_id: i64 },
    /// Lifts a user's ban (needs DATABASE_URL).
    Unban { user_id: i64 },
}

/// Runs `command`: against the Bot API of `TELEGRAM_BOT_TOKEN` (at `TELEGRAM_API_URL`), or for
/// bans against the database.
pub async fn run(command: TelegramCommand) -> anyhow::Result<()> {
    use jobs::bot::{MENU, Text, Texts};
    use jobs::config::required;
    use jobs::telegram::client::BOT_UPDATES;

    match command {
        TelegramCommand::SetWebhook { url } => {
            let url = match url {
                Some(url) => url,
                None => required("TELEGRAM_WEBHOOK_URL")?,
            };
            let secret = required("TELEGRAM_WEBHOOK_SECRET")?;
            let texts = Texts::from_env()?;
            let bot = bot()?;
            bot.set_webhook(&url, &secret, &BOT_UPDATES).await?;
            let kinds: Vec<String> = BOT_UPDATES
                .iter()
                .filter_map(|kind| Some(serde_json::to_value(kind).ok()?.as_str()?.to_string()))
                .collect();
            println!("webhook set: {url} ({})", kinds.join(", "));
            let menu: Vec<(&str, String)> = MENU
                .iter()
                .map(|(command, text)| (*command, texts.get(*text)))
                .collect();
            bot.set_my_commands(&menu).await?;
            let commands: Vec<String> = MENU.iter().map(|(command, _)| format!("/{command}")).collect();
            println!("commands set: {}", commands.join(" "));
            if let Some(app) = mini_app_url()? {
                bot.set_menu_button(&texts.get(Text::AppButton), &app).await?;
                println!("menu button set: {app}");
            }
        }
        TelegramCommand::WebhookInfo => {
            let (url, pending, last_error) = bot()?.webhook_info().await?;
            let url = if url.is_empty() { "(none)" } else { url.as_str() };
            println!("url: {url}\npending updates: {pending}");
            if let Some(error) = last_error {
                println!("last error: {error}");
            }
        }
        TelegramCommand::Ban { user_id } => set_banned(user_id, true).await?,
        TelegramCommand::Unban { user_id } => set_banned(user_id, false).await?,
    }
    Ok(())
}

/// `MINI_APP_URL`, if set: the Mini App's page (`https://<app>/app`), which Telegram opens over
/// HTTPS only.
fn mini_app_url() -> anyhow::Result<Option<String>> {
    let Some(url) = jobs::config::optional("MINI_APP_URL") else {
        return Ok(None);
    };
    match reqwest::Url::parse(&url) {
        Ok(parsed) if parsed.scheme() == "https" => Ok(Some(url)),
        Ok(_) => anyhow::bail!("MINI_APP_URL must be an https:// URL: Telegram opens Mini Apps over HTTPS only"),
        Err(e) => anyhow::bail!("MINI_APP_URL is not a URL: {e}"),
    }
}

/// The Bot API client of `TELEGRAM_BOT_TOKEN`, at `TELEGRAM_API_URL`.
fn bot() -> anyhow::Result<jobs::telegram::client::TelegramClient> {
    use jobs::config::{Secret, optional, required};
    use jobs::telegram::client::{DEFAULT_API_URL, TelegramClient};

    let token = Secret::new(required("TELEGRAM_BOT_TOKEN")?);
    let api_url = optional("TELEGRAM_API_URL").unwrap_or_else(|| DEFAULT_API_URL.into());
    TelegramClient::new(&token, &api_url, "paygate-worker/cli").map_err(anyhow::Error::msg)
}

async fn set_banned(user_id: i64, banned: bool) -> anyhow::Result<()> {
    let pool = jobs::db::connect(&jobs::config::required("DATABASE_URL")?, 2).await?;
    let mut conn = pool.acquire().await?;
    jobs::billing::users::set_banned(&mut conn, user_id, banned).await?;
    println!("user {user_id} {}", if banned { "banned" } else { "unbanned" });
    Ok(())
}
