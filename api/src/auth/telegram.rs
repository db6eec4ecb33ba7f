//! Who may deliver Telegram updates: whoever sends the webhook's secret token in
//! `X-Telegram-Bot-Api-Secret-Token` (Telegram does, once `worker telegram set-webhook` set it).
//! Compared in constant time and never logged; a missing or wrong one is a 401 `unauthorized`.

use jobs::config::Secret;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;

use crate::error::Problem;

/// TelegramWebhookSecret is the expected secret token, handed to the app as request data.
#[derive(Clone)]
pub struct TelegramWebhookSecret(pub Secret);

/// Telegram's access to the webhook: `X-Telegram-Bot-Api-Secret-Token: <TELEGRAM_WEBHOOK_SECRET>`.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    rename = "telegramSecretToken",
    key_name = "X-Telegram-Bot-Api-Secret-Token",
    key_in = "header",
    checker = "check_secret"
)]
pub struct TelegramAuth(Telegram);

/// Telegram is the proof that a request carried the webhook's secret token.
#[derive(Debug, Clone, Copy)]
pub struct Telegram;

async fn check_secret(req: &Request, key: ApiKey) -> poem::Result<Telegram> {
    let Some(TelegramWebhookSecret(expected)) = req.data::<TelegramWebhookSecret>() else {
        let missing = std::io::Error::other("the app was built without a TelegramWebhookSecret");
        return Err(Problem::internal(&missing).into());
    };
    if expected.matches(key.key.as_bytes()) {
        Ok(Telegram)
    } else {
        // Counted, so that someone probing for the secret shows in /metrics.
        crate::metrics::telegram_update(None, crate::metrics::WebhookOutcome::Rejected);
        Err(Problem::unauthorized().into())
    }
}
