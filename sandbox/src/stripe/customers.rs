//! Customers and the Billing Portal: `POST /v1/customers`, `POST /v1/billing_portal/sessions`
//! and the hosted portal page.

#[allow(unused_imports)]
use super::*;

pub(super) fn create_customer(state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let mut customer = fixture("customer");
    customer["id"] = json!(new_id("cus_", 14));
    customer["created"] = json!(now());
    customer["livemode"] = json!(false);
    customer["discount"] = Value::Null;
    customer["metadata"] = Value::Object(map_param(form, "metadata"));
    for field in ["email", "name", "description", "phone"] {
        customer[field] = or_null(param(form, field));
    }
    state.customers.push(customer.clone());
    Ok(customer)
}

pub(super) fn create_portal_session(url: &str, state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let customer = param(form, "customer").ok_or_else(|| Refusal::missing("customer"))?;
    if !customer.starts_with("cus_") {
        return Err(Refusal::no_such("customer", customer, "customer"));
    }
    let id = new_id("bps_", 24);
    let mut session = fixture("billing_portal.session");
    session["id"] = json!(id);
    session["url"] = json!(format!("{url}/portal/{id}"));
    session["customer"] = json!(customer);
    session["return_url"] = or_null(param(form, "return_url"));
    session["flow"] = Value::Null;
    session["created"] = json!(now());
    session["livemode"] = json!(false);
    state.portal_sessions.push(session.clone());
    Ok(session)
}

/// The hosted Billing Portal page.
#[handler]
pub(super) fn portal(Path(id): Path<String>, shared: Data<&Arc<Shared>>) -> String {
    let state = shared.state.lock().unwrap();
    match state.portal_sessions.iter().find(|s| s["id"] == id.as_str()) {
        Some(session) => format!("Fake billing portal of customer {}", session["customer"]),
        None => format!("No such portal session: {id}"),
    }
}
