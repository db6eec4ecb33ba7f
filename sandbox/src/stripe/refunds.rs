//! Refunds: `POST /v1/refunds`, of a payment intent or a charge, whole or in part, at most the
//! amount paid.

#[allow(unused_imports)]
use super::*;

/// The other half of a payment, so that tests can predict it: charge `ch_X` (or `py_X`) belongs
/// to payment intent `pi_X`, and `pi_X`'s charge is `ch_X`.
pub(super) fn payment_pair(form: &[(String, String)]) -> Result<(String, String), Refusal> {
    match (param(form, "charge"), param(form, "payment_intent")) {
        (Some(_), Some(_)) => Err(Refusal::invalid(
            None,
            "You cannot specify both `charge` and `payment_intent`.",
            Some("payment_intent"),
        )),
        (Some(charge), None) => {
            let suffix = charge
                .strip_prefix("ch_")
                .or_else(|| charge.strip_prefix("py_"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::no_such("charge", charge, "charge"))?;
            Ok((charge.to_string(), format!("pi_{suffix}")))
        }
        (None, Some(intent)) => {
            let suffix = intent
                .strip_prefix("pi_")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::no_such("payment_intent", intent, "payment_intent"))?;
            Ok((format!("ch_{suffix}"), intent.to_string()))
        }
        (None, None) => Err(Refusal::invalid(
            Some("parameter_missing"),
            "One of the following params should be provided for this request: payment_intent or charge.",
            None,
        )),
    }
}

pub(super) fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

pub(super) fn create_refund(state: &mut State, form: &[(String, String)]) -> Result<Value, Refusal> {
    let (charge, payment_intent) = payment_pair(form)?;
    let refunded = state.refunded.get(&charge).copied().unwrap_or(0);
    let left = PAYMENT_AMOUNT - refunded;
    let amount = match param(form, "amount") {
        None => left,
        Some(raw) => match raw.parse::<i64>() {
            Ok(amount) if amount > 0 => amount,
            _ => {
                return Err(Refusal::invalid(
                    None,
                    &format!("Invalid positive integer: {raw}"),
                    Some("amount"),
                ));
            }
        },
    };
    if left == 0 {
        return Err(Refusal::invalid(
            Some("charge_already_refunded"),
            &format!("Charge {charge} has already been refunded."),
            None,
        ));
    }
    if amount > left {
        return Err(Refusal::invalid(
            Some("amount_too_large"),
            &format!(
                "Refund amount ({}) is greater than unrefunded amount on charge ({})",
                dollars(amount),
                dollars(left)
            ),
            Some("amount"),
        ));
    }
    let reason = param(form, "reason");
    if let Some(reason) = reason.filter(|r| !matches!(*r, "duplicate" | "fraudulent" | "requested_by_customer")) {
        return Err(Refusal::invalid(
            None,
            &format!("Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer (got '{reason}')"),
            Some("reason"),
        ));
    }
    let mut refund = fixture("refund");
    refund["id"] = json!(new_id("re_", 24));
    refund["amount"] = json!(amount);
    refund["charge"] = json!(charge);
    refund["payment_intent"] = json!(payment_intent);
    refund["currency"] = json!(CURRENCY);
    refund["status"] = json!("succeeded");
    refund["reason"] = or_null(reason);
    refund["metadata"] = Value::Object(map_param(form, "metadata"));
    refund["created"] = json!(now());
    state.refunded.insert(charge, refunded + amount);
    state.refunds.push(refund.clone());
    Ok(refund)
}
