//! Stripe's error envelopes, scripted failures, and which answers an `Idempotency-Key` replays.

#[allow(unused_imports)]
use super::*;

// An error answer: Stripe's envelope and the status that goes with it.
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) error: Value,
}

impl Refusal {
    pub(super) fn invalid(code: Option<&str>, message: &str, param: Option<&str>) -> Refusal {
        Refusal {
            status: 400,
            error: stripe_error("invalid_request_error", code, message, param),
        }
    }

    pub(super) fn missing(param: &str) -> Refusal {
        Refusal::invalid(
            Some("parameter_missing"),
            &format!("Missing required param: {param}."),
            Some(param),
        )
    }

    pub(super) fn no_such(kind: &str, id: &str, param: &str) -> Refusal {
        Refusal::invalid(
            Some("resource_missing"),
            &format!("No such {kind}: '{id}'"),
            Some(param),
        )
    }
}

pub(super) fn stripe_error(kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Value {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    json!({ "error": error })
}

/// The body Stripe sends with `status`, for scripted failures.
pub(super) fn scripted(status: u16) -> Value {
    match status {
        400 => stripe_error(
            "invalid_request_error",
            Some("resource_missing"),
            "No such price: 'price_x'",
            Some("line_items[0][price]"),
        ),
        401 => stripe_error(
            "invalid_request_error",
            None,
            "Invalid API Key provided: sk_test_****",
            None,
        ),
        402 => {
            let mut body = stripe_error("card_error", Some("card_declined"), "Your card was declined.", None);
            body["error"]["decline_code"] = json!("generic_decline");
            body
        }
        409 => stripe_error(
            "invalid_request_error",
            Some("lock_timeout"),
            "This object cannot be accessed right now because another API request or Stripe process is \
             currently accessing it. If you see this error intermittently, retry the request.",
            None,
        ),
        429 => stripe_error(
            "invalid_request_error",
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
            None,
        ),
        500..=599 => stripe_error("api_error", None, "An unknown error occurred", None),
        _ => stripe_error(
            "invalid_request_error",
            None,
            "The request was refused (scripted).",
            None,
        ),
    }
}

// Stripe keeps an answer under its idempotency key once the endpoint started executing; not
// when it refused the caller at the door, was busy (409), throttled (429) or failed itself.
pub(super) fn remembered_by_key(status: u16) -> bool {
    !matches!(status, 401 | 409 | 429 | 500..=599)
}

pub(super) fn json_response(answer: &Answer, key: Option<&str>, replayed: bool) -> poem::Response {
    let mut response = poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(answer.status).expect("a valid status"))
        .content_type("application/json");
    if let Some(key) = key {
        response = response.header("Idempotency-Key", key);
    }
    if replayed {
        response = response.header("Idempotent-Replayed", "true");
    }
    response.body(answer.body.clone())
}
