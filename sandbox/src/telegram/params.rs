//! Request parameters, read the ways Telegram reads them: JSON, a URL-encoded form, or
//! `multipart/form-data`.

#[allow(unused_imports)]
use super::*;

/// Params are a request's parameters however they came. In a form every value is text, numbers
/// and booleans included, and arrays and objects are JSON inside it; the getters read both.
#[derive(Debug, Default)]
pub(super) struct Params(pub(super) Map<String, Value>);

impl Params {
    /// The parameters of a body of `content_type`, or `None` when it cannot be read.
    pub(super) fn parse(content_type: &str, body: &[u8]) -> Option<Params> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if body.is_empty() {
            return Some(Params::default());
        }
        match media_type {
            "application/json" => serde_json::from_slice(body).ok().map(Params),
            "application/x-www-form-urlencoded" => {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
                Some(Params(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
            }
            "multipart/form-data" => multipart_fields(content_type, body).map(Params),
            _ => None,
        }
    }

    pub(super) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.as_str()
    }

    pub(super) fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name)? {
            Value::String(text) => text.trim().parse().ok(),
            value => value.as_i64(),
        }
    }

    pub(super) fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            Value::String(text) => text.parse().ok(),
            value => value.as_bool(),
        }
    }

    pub(super) fn json(&self, name: &str) -> Option<Value> {
        match self.0.get(name)? {
            Value::String(text) => serde_json::from_str(text).ok(),
            value => Some(value.clone()),
        }
    }
}

/// The fields of a `multipart/form-data` body, as text (a file's bytes too, lossily: the fake
/// has no use for certificates).
pub(super) fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Map<String, Value>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let body = String::from_utf8_lossy(body);
    let mut fields = Map::new();
    for part in body.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (headers, value) = part.strip_prefix("\r\n")?.split_once("\r\n\r\n")?;
        let name = headers
            .split("\r\n")
            .find(|h| h.to_ascii_lowercase().starts_with("content-disposition:"))?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))?
            .trim_matches('"');
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_string(), Value::String(value.to_string()));
    }
    Some(fields)
}
