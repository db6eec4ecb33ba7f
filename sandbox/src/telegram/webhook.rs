//! `setWebhook` / `getWebhookInfo`, and delivering updates to the webhook as Telegram does.

#[allow(unused_imports)]
use super::*;

/// Records the webhook. An empty `url` removes it, as on Telegram. Unlike Telegram, plain
/// `http` is accepted, so that the local run can register a loopback address.
pub(super) fn set_webhook(shared: &Shared, params: &Params) -> poem::Response {
    let url = params.str("url").unwrap_or_default();
    let mut state = shared.state.lock().unwrap();
    if url.is_empty() {
        state.webhook = None;
        state.webhook_error = None;
        return ok(json!(true));
    }
    let scheme_ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
    if !scheme_ok {
        return error(
            400,
            "Bad Request: bad webhook: HTTPS url must be provided for webhook",
            None,
        );
    }
    let secret_token = params.str("secret_token");
    let secret_ok = secret_token.is_none_or(|t| {
        (1..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !secret_ok {
        return error(400, "Bad Request: secret token contains unallowed characters", None);
    }
    // Without `allowed_updates` Telegram keeps the previous list.
    let allowed_updates = params
        .json("allowed_updates")
        .or_else(|| state.webhook.as_ref().map(|w| w["allowed_updates"].clone()))
        .unwrap_or(Value::Null);
    state.webhook = Some(json!({
        "url": url,
        "secret_token": secret_token,
        "allowed_updates": allowed_updates,
        "drop_pending_updates": params.bool("drop_pending_updates").unwrap_or(false),
    }));
    state.webhook_error = None;
    ok(json!(true))
}

/// A `WebhookInfo` with every field Telegram always sends (and teloxide requires).
pub(super) fn get_webhook_info(shared: &Shared) -> poem::Response {
    let state = shared.state.lock().unwrap();
    let Some(webhook) = &state.webhook else {
        return ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}));
    };
    let mut info = json!({
        "url": webhook["url"],
        "has_custom_certificate": false,
        "pending_update_count": 0,
        "max_connections": 40,
    });
    if webhook["allowed_updates"].is_array() {
        info["allowed_updates"] = webhook["allowed_updates"].clone();
    }
    if let Some((date, message)) = &state.webhook_error {
        info["last_error_date"] = json!(date);
        info["last_error_message"] = json!(message);
    }
    ok(info)
}

/// Posts `update` to the webhook at `url` and returns the JSON it answered with (`null` for an
/// empty body). A failure is recorded for `getWebhookInfo`, in Telegram's words.
pub(super) async fn deliver(
    shared: &Shared,
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    update: &Value,
) -> Result<Value, String> {
    let mut request = client.post(url).json(update);
    if let Some(secret) = secret {
        request = request.header(crate::telegram_updates::SECRET_HEADER, secret);
    }
    let outcome = match request.send().await {
        Err(e) => Err(format!("Connection failed: {e}")),
        Ok(response) if !response.status().is_success() => {
            Err(format!("Wrong response from the webhook: {}", response.status()))
        }
        Ok(response) => match response.bytes().await {
            Err(e) => Err(format!("Connection failed: {e}")),
            Ok(body) if body.is_empty() => Ok(Value::Null),
            Ok(body) => serde_json::from_slice(&body).map_err(|_| "Wrong response from the webhook: not JSON".into()),
        },
    };
    if let Err(why) = &outcome {
        shared.state.lock().unwrap().webhook_error = Some((unix_now(), why.clone()));
    }
    outcome
}
