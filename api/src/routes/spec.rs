//! The spec as it is served and checked in: poem-openapi's document of [`super::Api`], then the
//! refinements poem-openapi cannot derive itself, each a rule over the whole document:
//!
//! - every object a `/v1` request body is made of says `additionalProperties: false`, as the
//!   server refuses unknown fields (`deny_unknown_fields`, which poem-openapi does not
//!   document); the webhook bodies stay open, since Stripe and Telegram add fields;
//! - a documented field whose type is a `$ref` is `description` + `allOf: [{$ref}]`, not
//!   poem-openapi's `allOf: [{$ref}, {description}]`, whose second, typeless member some
//!   generators refuse ("Cannot take allOf a non-object").

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The spec, pretty-printed: what `GET /openapi.json` serves and `openapi/openapi.json` holds.
pub fn openapi_json() -> &'static str {
    static SPEC: OnceLock<String> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(&super::service().spec()).expect("poem-openapi writes JSON");
        close_request_objects(&mut doc);
        plain_refs(&mut doc);
        serde_json::to_string_pretty(&doc).expect("a JSON value prints")
    })
}

/// The Swagger UI page of the refined spec.
pub fn swagger_ui_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let service = super::service();
        // The page embeds the document it was made from, as written; it is swapped for the refined one.
        service.swagger_ui_html().replacen(&service.spec(), openapi_json(), 1)
    })
}

/// The component name of a `$ref` to `#/components/schemas/<name>`.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/components/schemas/")
}

/// Every component schema `schema` refers to, directly or through its properties, items and
/// compositions, into `found`.
fn referenced(doc: &Value, schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(fields) => {
            if let Some(name) = ref_name(schema)
                && !found.iter().any(|f| f == name)
            {
                found.push(name.to_string());
                referenced(doc, &doc["components"]["schemas"][name], found);
            }
            for value in fields.values() {
                referenced(doc, value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| referenced(doc, item, found)),
        _ => {}
    }
}

fn close_request_objects(doc: &mut Value) {
    let mut closed = Vec::new();
    for (path, operations) in doc["paths"].as_object().into_iter().flatten() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for operation in operations.as_object().into_iter().flatten().map(|(_, op)| op) {
            for media in operation["requestBody"]["content"].as_object().into_iter().flatten() {
                referenced(doc, &media.1["schema"], &mut closed);
            }
        }
    }
    for name in closed {
        let schema = &mut doc["components"]["schemas"][&name];
        if schema["type"] == "object" {
            schema["additionalProperties"] = json!(false);
        }
    }
}

fn plain_refs(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::Array(all_of)) = fields.get_mut("allOf")
                && all_of.len() == 2
                && ref_name(&all_of[0]).is_some()
                && all_of[1].get("type").is_none()
                && all_of[1].get("properties").is_none()
            {
                all_of.truncate(1);
            }
            fields.values_mut().for_each(plain_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        serde_json::from_str(openapi_json()).unwrap()
    }

    #[test]
    fn every_object_of_a_v1_request_body_is_closed_and_the_webhooks_are_open() {
        let doc = spec();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "Notification",
            "Button",
            "DeadJobFilter",
            "RefundRequest",
            "CampaignRequest",
            "PromoRequest",
            "PromoButtonRequest",
            "SignInRequest",
            "CheckoutRequest",
            "PortalRequest",
        ] {
            assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
        }
        for name in ["StripeEvent", "StripeEventData", "Refund", "JobDetail"] {
            assert!(schemas[name].get("additionalProperties").is_none(), "{name}");
        }
    }

    #[test]
    fn the_swagger_page_shows_the_refined_spec() {
        assert!(swagger_ui_html().contains(openapi_json()));
    }

    #[test]
    fn a_documented_ref_keeps_its_description_beside_a_single_all_of() {
        let doc = spec();
        let parse_mode = &doc["components"]["schemas"]["Notification"]["properties"]["parse_mode"];
        assert_eq!(parse_mode["allOf"], json!([{"$ref": "#/components/schemas/ParseMode"}]));
        assert!(parse_mode["description"].as_str().is_some_and(|d| !d.is_empty()));
        // Nowhere is an allOf member left without a type or properties.
        fn check(value: &Value) {
            match value {
                Value::Object(fields) => {
                    for member in fields.get("allOf").and_then(Value::as_array).into_iter().flatten() {
                        assert!(
                            ref_name(member).is_some()
                                || member.get("type").is_some()
                                || member.get("properties").is_some(),
                            "{member}"
                        );
                    }
                    fields.values().for_each(check);
                }
                Value::Array(items) => items.iter().for_each(check),
                _ => {}
            }
        }
        check(&doc);
    }
}
