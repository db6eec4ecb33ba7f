//! Telegram Stars: `createInvoiceLink` (checked as Telegram checks a Stars invoice),
//! `refundStarPayment`, and paying a link through `GET /sandbox/pay/<slug>`, which posts the
//! pre-checkout query and the payment to the webhook as Telegram does.

#[allow(unused_imports)]
use super::*;

/// The only subscription period Telegram accepts: 30 days.
pub(super) const SUBSCRIPTION_PERIOD: i64 = 2_592_000;
/// The most Stars one period of a subscription may cost.
pub(super) const MAX_SUBSCRIPTION_STARS: i64 = 10_000;
/// The most Stars a one-off invoice may ask for.
pub(super) const MAX_ONE_OFF_STARS: i64 = 100_000;

/// Checks a Stars invoice as Telegram does (the fake knows no payment providers, so other
/// currencies are refused), records it and answers with a `https://t.me/$…` link.
pub(super) fn create_invoice_link(shared: &Shared, params: &Params) -> poem::Response {
    let mut record = match check_stars_invoice(params) {
        Ok(record) => record,
        Err(refusal) => return error(400, refusal, None),
    };
    let amount = record["prices"][0]["amount"].as_i64().unwrap_or(0);
    let period = match params.0.get("subscription_period") {
        None => None,
        Some(_) => match params.int("subscription_period") {
            Some(SUBSCRIPTION_PERIOD) => Some(SUBSCRIPTION_PERIOD),
            _ => return error(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID", None),
        },
    };
    if period.is_some() && amount > MAX_SUBSCRIPTION_STARS {
        return error(400, "Bad Request: SUBSCRIPTION_AMOUNT_INVALID", None);
    }
    let link = format!("https://t.me/${}", uuid::Uuid::new_v4().simple());
    if let Some(seconds) = period {
        record.insert("subscription_period".into(), json!(seconds));
    }
    record.insert("link".into(), json!(link));
    shared.state.lock().unwrap().invoice_links.push(Value::Object(record));
    ok(json!(link))
}

/// Checks what every Stars invoice must be, as Telegram does (the fake knows no payment
/// providers, so other currencies are refused), and returns its parameters with `prices`
/// decoded, or Telegram's description of the refusal (a 400).
pub(super) fn check_stars_invoice(params: &Params) -> Result<Map<String, Value>, &'static str> {
    if params.str("currency") != Some("XTR") {
        return Err("Bad Request: CURRENCY_INVALID");
    }
    let prices = params
        .json("prices")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default();
    match prices.len() {
        0 => return Err("Bad Request: there must be at least one price"),
        1 => {}
        // A Stars invoice has exactly one price.
        _ => return Err("Bad Request: STARS_INVOICE_INVALID"),
    }
    let amount = prices[0]["amount"].as_i64().unwrap_or(0);
    if amount <= 0 {
        return Err("Bad Request: total price must be positive");
    }
    let payload_len = params.str("payload").map_or(0, str::len);
    if !(1..=128).contains(&payload_len) {
        return Err("Bad Request: INVOICE_PAYLOAD_INVALID");
    }
    if amount > MAX_ONE_OFF_STARS {
        return Err("Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID");
    }
    let mut record = params.0.clone();
    record.insert("prices".into(), Value::Array(prices));
    Ok(record)
}

/// Refunds a payment the fake was told of ([`FakeTelegram::record_star_payment`]), once.
pub(super) fn refund_star_payment(shared: &Shared, params: &Params) -> poem::Response {
    let Some(user_id) = params.int("user_id") else {
        return error(400, "Bad Request: USER_ID_INVALID", None);
    };
    let charge_id = params.str("telegram_payment_charge_id").unwrap_or_default();
    if charge_id.is_empty() {
        return error(400, "Bad Request: CHARGE_ID_EMPTY", None);
    }
    let mut state = shared.state.lock().unwrap();
    match state.star_payments.get_mut(charge_id) {
        // Telegram does not say whether the charge is unknown or another user's.
        None => error(400, "Bad Request: CHARGE_ID_INVALID", None),
        Some((payer, _)) if *payer != user_id => error(400, "Bad Request: CHARGE_ID_INVALID", None),
        Some((_, true)) => error(400, "Bad Request: CHARGE_ALREADY_REFUNDED", None),
        Some((_, refunded)) => {
            *refunded = true;
            state.star_refunds.push((user_id, charge_id.to_string()));
            ok(json!(true))
        }
    }
}

/// Whom an invoice is paid by when `/sandbox/pay` is not told (the local run's user).
pub(super) const DEFAULT_PAYER: i64 = 42;

/// How long Telegram waits for the answer to a pre-checkout query before it cancels the payment.
pub(super) const PRE_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Paying an invoice link, for the local run and tests, where nobody can pay in Telegram:
/// `user_id` (default [`DEFAULT_PAYER`]) confirms the payment form, Telegram posts a
/// `pre_checkout_query` to the webhook, and only if the bot answers it with `ok: true` takes the
/// Stars and posts the `successful_payment` (of a subscription's first period when the invoice
/// has one). Answers in plain text what happened.
#[handler]
pub(super) async fn pay_invoice(
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    let user_id = match query.get("user_id").map(|u| u.trim().parse::<i64>()) {
        None => DEFAULT_PAYER,
        Some(Ok(id)) if id > 0 => id,
        Some(_) => return page(400, "user_id must be a Telegram user id (a positive integer)".into()),
    };
    // Tolerates the `$` of the link being pasted with the slug.
    let link = format!("https://t.me/${}", slug.trim_start_matches('$'));
    let (invoice, webhook) = {
        let state = shared.state.lock().unwrap();
        let invoice = state.invoice_links.iter().find(|i| i["link"] == link.as_str()).cloned();
        (invoice, state.webhook.clone())
    };
    let Some(invoice) = invoice else {
        return page(404, format!("No such invoice link: {link}"));
    };
    let Some(webhook) = webhook else {
        return page(409, "no webhook set: run worker telegram set-webhook".into());
    };
    let url = webhook["url"].as_str().unwrap_or_default().to_string();
    let secret = webhook["secret_token"].as_str().map(str::to_string);
    let payload = invoice["payload"].as_str().unwrap_or_default();
    let amount = invoice["prices"][0]["amount"].as_u64().unwrap_or(0) as u32;
    let currency = invoice["currency"].as_str().unwrap_or("XTR");
    let client = reqwest::Client::builder()
        .timeout(PRE_CHECKOUT_TIMEOUT)
        .build()
        .expect("a reqwest client");

    let query_id = uuid::Uuid::new_v4().as_u64_pair().0.to_string();
    let asked = crate::telegram_updates::pre_checkout_query(
        shared.next_update_id(),
        &query_id,
        user_id,
        payload,
        currency,
        amount,
    );
    let answer = match deliver(&shared, &client, &url, secret.as_deref(), &asked).await {
        Ok(body) => body,
        Err(why) => {
            return page(
                502,
                format!("Not paid: the pre-checkout query was not delivered ({why})."),
            );
        }
    };
    let answered = answer["method"] == "answerPreCheckoutQuery" && answer["pre_checkout_query_id"] == query_id.as_str();
    if !answered {
        return page(
            502,
            format!(
                "Not paid: the bot did not answer the pre-checkout query (its response: {answer}), so Telegram cancels the payment."
            ),
        );
    }
    if answer["ok"] != true {
        let reason = answer["error_message"].as_str().unwrap_or("no error_message");
        return page(402, format!("Not paid: the bot refused the payment: {reason}"));
    }

    let charge_id = format!("stx{}", uuid::Uuid::new_v4().simple());
    shared
        .state
        .lock()
        .unwrap()
        .star_payments
        .insert(charge_id.clone(), (user_id, false));
    let recurring = invoice["subscription_period"]
        .as_i64()
        .map(|period| crate::telegram_updates::Recurring {
            expiration: unix_now() as i64 + period,
            is_first: true,
        });
    let paid = crate::telegram_updates::successful_payment(
        shared.next_update_id(),
        user_id,
        payload,
        amount,
        &charge_id,
        recurring,
    );
    if let Err(why) = deliver(&shared, &client, &url, secret.as_deref(), &paid).await {
        return page(
            502,
            format!("Paid (charge {charge_id}), but the successful_payment update was not delivered ({why})."),
        );
    }
    page(
        200,
        format!("Paid: {amount} {currency} for {payload} by user {user_id}, charge {charge_id}."),
    )
}

pub(super) fn page(status: u16, text: String) -> poem::Response {
    poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(status).expect("a valid status"))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{text}\n"))
}
