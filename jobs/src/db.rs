//! Connecting to PostgreSQL, migrating our schema, pruning old rows, and the one kind of text it
//! cannot store.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::QueryAs;
use sqlx::{Connection, FromRow, PgConnection, PgPool, Postgres};

/// How long opening a pool, or a connection of it, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a pool of at most `max_connections` to `url`. A failure says why: a malformed URL, or
/// the server's own answer (connection refused, no such database, a password refused) rather than
/// the pool's "timed out".
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let opened = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await;
    match opened {
        // The pool retries until its timeout and then hides the cause: one plain attempt shows it.
        Err(sqlx::Error::PoolTimedOut) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
                Ok(Err(cause)) => Err(cause),
                _ => Err(sqlx::Error::PoolTimedOut),
            }
        }
        opened => opened,
    }
}

/// Applies every migration in `migrations/` that the database has not seen yet. Safe to run again
/// and from several processes at once: sqlx serialises migrators with an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Created is what an idempotent create stored: a new row, or the one an earlier call with the
/// same idempotency key stored (and then nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    New(T),
    Existing(T),
}

impl<T> Created<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Created<U> {
        match self {
            Created::New(t) => Created::New(f(t)),
            Created::Existing(t) => Created::Existing(f(t)),
        }
    }
}

/// A query that reads rows of type `R`.
pub type RowQuery<'q, R> = QueryAs<'q, Postgres, R, PgArguments>;

/// Inserts a row once per idempotency key: `insert` is an `INSERT … ON CONFLICT DO NOTHING
/// RETURNING …`; when it returns nothing the key was taken, and `existing` (the `SELECT` of the
/// row under that key) reads the first row stored with it.
pub async fn insert_once<'q, R>(
    conn: &mut PgConnection,
    insert: RowQuery<'q, R>,
    existing: RowQuery<'q, R>,
) -> Result<Created<R>, sqlx::Error>
where
    R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    match insert.fetch_optional(&mut *conn).await? {
        Some(row) => Ok(Created::New(row)),
        None => Ok(Created::Existing(existing.fetch_one(conn).await?)),
    }
}

/// How many rows one pruning statement deletes at most, so that none holds many locks.
pub const PRUNE_BATCH: i64 = 5000;

/// Runs `statement`, which deletes at most `$2` rows older than `$1` seconds, until it deletes
/// fewer than that; returns how many it deleted in all.
pub async fn delete_in_batches(pool: &PgPool, statement: &'static str, age: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(statement)
            .bind(age.as_secs_f64())
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// What a refusal of U+0000 says about it, for the callers' messages.
pub const NUL: &str = "U+0000 (NUL), which PostgreSQL cannot store";

/// Whether `value`, serialised to JSON, holds U+0000 in any string or object key.
///
/// PostgreSQL stores U+0000 neither in `text` (the byte is refused) nor in `jsonb` (the escape
/// `\u0000` is refused), so a value holding it fails the statement that writes it: a request
/// that would be a 500 half-way through its transaction. Input is checked with this where it
/// arrives, before anything is written. JSON can carry U+0000 only as that escape (its hex
/// digits are all zeros, so it has one spelling; `\U0000` and a raw NUL byte are not JSON), so
/// checking the parsed value is exact, where a search of the raw body for `\u0000` would also
/// refuse the six characters `\\u0000`, which are text like any other.
pub fn holds_nul<T: Serialize + ?Sized>(value: &T) -> bool {
    // Serialising our own types cannot fail (their keys are strings); if one ever did, its
    // payload could not be written either, and that failure is reported where it is written.
    serde_json::to_value(value).is_ok_and(|value| json_holds_nul(&value))
}

/// Whether the JSON `value` holds U+0000 in any string or object key; see [`holds_nul`].
pub fn json_holds_nul(value: &Value) -> bool {
    nul_at(value).is_some()
}

/// The JSON Pointer (RFC 6901) of the first string of `value` that holds U+0000, or of the
/// object one of whose keys does, for a message that names it: `/promos/0/text`; the empty
/// pointer is the root.
pub fn nul_at(value: &Value) -> Option<String> {
    pointer_to(value, &|v| matches!(v, Value::String(s) if s.contains('\0')), &|key| {
        key.contains('\0')
    })
}

/// The JSON Pointer (RFC 6901) of the first place in `value`, depth first in document order,
/// that is a value `found` holds for, or an object one of whose keys `key_found` holds for; the
/// empty pointer is the root.
pub fn pointer_to(value: &Value, found: &dyn Fn(&Value) -> bool, key_found: &dyn Fn(&str) -> bool) -> Option<String> {
    // A key is named by its pointer with `~` and `/` escaped as `~0` and `~1`.
    let escaped = |key: &str| key.replace('~', "~0").replace('/', "~1");
    if found(value) {
        return Some(String::new());
    }
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| pointer_to(item, found, key_found).map(|at| format!("/{i}{at}"))),
        Value::Object(fields) => fields.iter().find_map(|(key, value)| {
            if key_found(key) {
                Some(String::new())
            } else {
                pointer_to(value, found, key_found).map(|at| format!("/{}{at}", escaped(key)))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_is_found_in_strings_and_keys_at_any_depth() {
        assert!(holds_nul("a\0b"));
        assert!(holds_nul(&json!({"a": [1, {"b": "x\u{0}"}]})));
        assert!(holds_nul(&json!({"k\u{0}": 1})));
        assert!(holds_nul(&[Some("ok"), Some("\0")]));
        assert!(!holds_nul(&json!({"a": [1, null, true, "x"], "b": {"c": "\u{1}"}})));
        assert!(!holds_nul(""));
    }

    #[test]
    fn the_escape_is_nul_and_the_escaped_backslash_is_text() {
        let parsed = |raw: &str| serde_json::from_str::<Value>(raw);
        assert!(json_holds_nul(&parsed(r#"{"a": "x\u0000"}"#).unwrap()));
        assert!(json_holds_nul(&parsed(r#"{"x\u0000": 1}"#).unwrap()));
        let at = |json: &str| nul_at(&parsed(json).unwrap());
        assert_eq!(
            at(r#"{"promos": [{"name": "a"}, {"text": "x\u0000"}]}"#).as_deref(),
            Some("/promos/1/text")
        );
        assert_eq!(at(r#"{"a/b~": {"k\u0000": 1}}"#).as_deref(), Some("/a~1b~0"));
        assert_eq!(at(r#""\u0000""#).as_deref(), Some(""));
        assert_eq!(at(r#"{"a": ["\\u0000"]}"#), None);
        // Six characters of text, stored as they are.
        assert!(!json_holds_nul(&parsed(r#"{"a": "x\\u0000"}"#).unwrap()));
        assert!(!json_holds_nul(&parsed(r#"{"a": "\u0001\u00e9"}"#).unwrap()));
        // Not JSON at all: an upper-case `\U` escape and a raw NUL byte.
        assert!(parsed(r#"{"a": "x\U0000"}"#).is_err());
        assert!(parsed("{\"a\": \"x\0\"}").is_err());
    }
}
