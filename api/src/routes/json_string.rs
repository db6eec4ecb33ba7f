//! [`JsonString`]: a request field that must be a JSON string.

use std::borrow::Cow;
use std::ops::Deref;

use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

/// JsonString is a JSON string and nothing else. poem-openapi's `String` also takes numbers
/// and booleans (`"text": 7` would become `"7"`); request bodies use this instead, so that a
/// wrong type is a 400. It documents itself as a plain `string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonString(pub String);

impl Deref for JsonString {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<JsonString> for String {
    fn from(s: JsonString) -> String {
        s.0
    }
}

impl Type for JsonString {
    const IS_REQUIRED: bool = true;

    type RawValueType = String;

    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for JsonString {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(JsonString(s)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for JsonString {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_string_is_a_json_string() {
        assert_eq!(
            JsonString::parse_from_json(Some(json!("hi"))).ok(),
            Some(JsonString("hi".into()))
        );
        for wrong in [json!(7), json!(true), json!(null), json!(["a"]), json!({"a": 1})] {
            assert!(JsonString::parse_from_json(Some(wrong.clone())).is_err(), "{wrong}");
        }
        assert!(<Option<JsonString>>::parse_from_json(None).unwrap().is_none());
        assert!(<Option<JsonString>>::parse_from_json(Some(json!(1))).is_err());
    }
}
