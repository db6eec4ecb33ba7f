//! Checkout: `POST /v1/checkout/sessions` and the hosted page whose opening is paying, which
//! sends the payment's events to the webhook as Stripe would.

#[allow(unused_imports)]
use super::*;

pub(super) fn create_checkout_session(
    url: &str,
    state: &mut State,
    form: &[(String, String)],
) -> Result<Value, Refusal> {
    let mode = param(form, "mode").ok_or_else(|| Refusal::missing("mode"))?;
    if !matches!(mode, "payment" | "setup" | "subscription") {
        return Err(Refusal::invalid(
            None,
            &format!("Invalid mode: must be one of payment, setup, or subscription (got '{mode}')"),
            Some("mode"),
        ));
    }
    let prices: Vec<(&str, &str)> = form
        .iter()
        .filter(|(k, _)| k.starts_with("line_items[") && k.ends_with("][price]"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if prices.is_empty() && mode != "setup" {
        return Err(Refusal::missing("line_items"));
    }
    if let Some((name, price)) = prices
        .iter()
        .find(|(_, price)| !price.starts_with("price_") || state.rejected_prices.contains(*price))
    {
        return Err(Refusal::no_such("price", price, name));
    }
    let customer = param(form, "customer");
    if let Some(id) = customer.filter(|id| !id.starts_with("cus_")) {
        return Err(Refusal::no_such("customer", id, "customer"));
    }
    let id = new_id("cs_test_", 58);
    let created = now();
    let mut session = fixture("checkout.session");
    session["id"] = json!(id);
    session["url"] = json!(format!("{url}/pay/{id}"));
    session["mode"] = json!(mode);
    session["client_reference_id"] = or_null(param(form, "client_reference_id"));
    session["customer"] = or_null(customer);
    session["customer_email"] = or_null(param(form, "customer_email"));
    session["metadata"] = Value::Object(map_param(form, "metadata"));
    session["success_url"] = or_null(param(form, "success_url"));
    session["cancel_url"] = or_null(param(form, "cancel_url"));
    session["status"] = json!("open");
    session["payment_status"] = json!("unpaid");
    session["subscription"] = Value::Null;
    session["payment_intent"] = Value::Null;
    session["invoice"] = Value::Null;
    session["customer_details"] = Value::Null;
    session["collected_information"] = Value::Null;
    session["currency"] = json!(CURRENCY);
    session["currency_conversion"] = Value::Null;
    session["amount_subtotal"] = json!(PAYMENT_AMOUNT);
    session["amount_total"] = json!(PAYMENT_AMOUNT);
    session["shipping_cost"] = Value::Null;
    session["shipping_address_collection"] = Value::Null;
    session["total_details"] = json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0});
    session["created"] = json!(created);
    session["expires_at"] = json!(created + 24 * 60 * 60);
    session["livemode"] = json!(false);
    if let Some((_, price)) = prices.first() {
        state.session_prices.insert(id.clone(), price.to_string());
    }
    state.checkout_sessions.push(session.clone());
    Ok(session)
}

/// The hosted Checkout page: paying is opening it. Sends the payment's events to the configured
/// webhook endpoint, as Stripe would once the customer paid.
#[handler]
pub(super) async fn pay(Path(id): Path<String>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let page = |status: u16, text: String| {
        poem::Response::builder()
            .status(poem::http::StatusCode::from_u16(status).unwrap_or_default())
            .content_type("text/plain; charset=utf-8")
            .body(text)
    };
    let (session, price) = {
        let state = shared.state.lock().unwrap();
        let session = state.checkout_sessions.iter().find(|s| s["id"] == id.as_str()).cloned();
        (session, state.session_prices.get(&id).cloned())
    };
    let Some(session) = session else {
        return page(404, format!("No such checkout session: {id}"));
    };
    let user_id: i64 = session["client_reference_id"]
        .as_str()
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    let plan = session["metadata"]["plan"].as_str().unwrap_or("unknown");
    let tag: String = id.trim_start_matches("cs_test_").chars().take(14).collect();
    let subscription =
        crate::stripe_events::Subscription::new(&tag, user_id, plan, price.as_deref().unwrap_or("price_sandbox"));
    let now = now();
    let (life, events) = Life::paid_checkout(subscription.clone(), now);
    shared.state.lock().unwrap().lives.push(life);
    let deliveries = match deliver(&shared, &events).await {
        Ok(deliveries) => deliveries,
        Err((_, why)) => return page(200, format!("Paid ({why})")),
    };
    if let Some(failed) = deliveries.iter().find(|d| !d.succeeded()) {
        let why = failed.status.map_or(failed.answer.clone(), |s| format!("answered {s}"));
        return page(502, format!("The webhook endpoint {} {why}", failed.endpoint));
    }
    page(
        200,
        format!(
            "Paid: subscription {} of user {user_id} to {plan}. You can close this page.",
            subscription.id
        ),
    )
}
