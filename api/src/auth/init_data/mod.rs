//! Telegram Mini App sign-in: whether an `initData` string was signed by Telegram for our bot,
//! is fresh, and names a user. Pure: the caller passes the keys and the current time.
//!
//! `initData` is a form-urlencoded query string. Telegram signs the *decoded* fields, so a value
//! percent-encoded another way (`%7b` for `%7B`, `%20` for `+`) still verifies. Two signatures
//! exist (<https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app>):
//! - `hash`, an HMAC-SHA256 under a key derived from the bot token, over every field but `hash`
//!   (`signature` included);
//! - `signature`, an Ed25519 signature by Telegram over `"{bot_id}:WebAppData\n"` and every field
//!   but `hash` and `signature`, for holders of Telegram's public key instead of the token.
//!
//! # Checks, in order
//! 1. Shape: pairs, unique keys, a well-formed `hash`. Nothing here depends on a key.
//! 2. Signature: the HMAC `hash`, else (with a public key configured) the Ed25519 `signature`.
//! 3. Freshness, then U+0000 in any value (decoded, and inside `user`'s JSON: PostgreSQL could
//!    not store it), then `user`. Nothing the caller sent is interpreted before it
//!    is authenticated: forged data is [`InitDataError::BadHash`] whatever its date, so a caller
//!    without a signature learns nothing of our clock or `max_age`, and [`InitDataError::Stale`]
//!    only ever means "genuine but old: reopen the Mini App".

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use jobs::config::Secret;
use jobs::db::{holds_nul, json_holds_nul};
use sha2::Sha256;

use self::InitDataError::{BadHash, Malformed};

type HmacSha256 = Hmac<Sha256>;

/// TELEGRAM_PUBLIC_KEY_PRODUCTION is the hex Ed25519 key Telegram signs `signature` with.
pub const TELEGRAM_PUBLIC_KEY_PRODUCTION: &str = "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d";

/// TELEGRAM_PUBLIC_KEY_TEST is the hex Ed25519 key of Telegram's test environment.
pub const TELEGRAM_PUBLIC_KEY_TEST: &str = "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec";

/// FUTURE_SKEW is how far ahead of our clock `auth_date` may be: Telegram's clock and ours
/// disagree by a few seconds; anything further ahead was not issued by a sane clock and is
/// refused rather than trusted for longer than `max_age`.
pub const FUTURE_SKEW: Duration = Duration::from_secs(30);

/// The HMAC key that turns the bot token into the secret key, fixed by Telegram.
const WEB_APP_DATA: &[u8] = b"WebAppData";

/// base64url for `signature`: Telegram sends it unpadded; padding is tolerated on decoding since
/// it changes none of the 64 bytes.
const SIGNATURE_BASE64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// InitDataKeys is what `initData` is checked against. Its Debug shows no secret.
#[derive(Debug, Clone)]
pub struct InitDataKeys {
    /// The bot token, from which the HMAC key is derived.
    pub bot_token: Secret,
    /// The bot's id, the digits of the token before `:`; part of what Ed25519 signs.
    pub bot_id: u64,
    /// Telegram's Ed25519 key ([`TELEGRAM_PUBLIC_KEY_PRODUCTION`] or
    /// [`TELEGRAM_PUBLIC_KEY_TEST`]); `None` accepts the HMAC `hash` only.
    pub ed25519_public_key: Option<VerifyingKey>,
    /// How old `auth_date` may be.
    pub max_age: Duration,
}

/// InitData is what a verified `initData` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    /// The user who opened the Mini App.
    pub user: WebAppUser,
    /// When Telegram issued the data, in unix seconds.
    pub auth_date: i64,
    /// Present when the Mini App was opened from an inline button; used to answer it.
    pub query_id: Option<String>,
    /// The `startapp` parameter of the link that opened the Mini App.
    pub start_param: Option<String>,
    /// The kind of chat the Mini App was opened from (`private`, `group`, …).
    pub chat_type: Option<String>,
    /// A stable id of the chat the Mini App was opened from.
    pub chat_instance: Option<String>,
    /// Which signature vouched for the data.
    pub verified_by: Verification,
}

/// Verification is the signature that vouched for an `initData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The HMAC `hash`, under our bot token.
    Hmac,
    /// Telegram's Ed25519 `signature`, under the configured public key.
    Ed25519,
}

/// WebAppUser is Telegram's `WebAppUser`, the fields we keep (others are ignored): the profile a
/// sign-in hands to the worker that stores it.
pub type WebAppUser = jobs::billing::users::Profile;

/// InitDataError is why an `initData` was refused. Its Display never shows the hash, the
/// signature, the token or a value sent: [`InitDataError::Malformed`] carries a fixed text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitDataError {
    /// Not a query string Telegram would send, or a required field is missing or wrong.
    #[error("initData is malformed: {0}")]
    Malformed(&'static str),
    /// A key appears twice (after decoding): which one would be signed is ambiguous.
    #[error("initData repeats the key {0:?}")]
    DuplicateKey(String),
    /// There is no `hash` field.
    #[error("initData has no hash")]
    MissingHash,
    /// Neither the `hash` nor the `signature` verifies.
    #[error("initData is not signed by Telegram for this bot")]
    BadHash,
    /// `auth_date` is older than `max_age`.
    #[error("initData is too old; the Mini App must be reopened")]
    Stale,
    /// `auth_date` is further ahead of our clock than [`FUTURE_SKEW`].
    #[error("initData is dated in the future")]
    FromTheFuture,
}

/// Why signed `initData` holding U+0000 is refused. Telegram never sends it (its objects are
/// escaped JSON, its other values ids and digits), and the profile could not be stored.
const NUL_IN_A_VALUE: &str = "a value holds U+0000 (NUL), which cannot be stored";

/// The longest key [`InitDataError::DuplicateKey`] repeats: it is the caller's text.
const SHOWN_KEY_LEN: usize = 32;

/// verify checks `raw` (the `Telegram.WebApp.initData` string, as sent) against `keys` at `now`
/// (unix seconds) and returns what it says; see the module doc for the order of checks.
pub fn verify(raw: &str, keys: &InitDataKeys, now: i64) -> Result<InitData, InitDataError> {
    let fields = parse(raw)?;
    let hash = fields.get("hash").ok_or(InitDataError::MissingHash)?;
    let hash = decode_hash(hash)?;

    let verified_by = if hmac_verifies(&fields, keys.bot_token.expose(), &hash) {
        Verification::Hmac
    } else if keys
        .ed25519_public_key
        .as_ref()
        .is_some_and(|key| ed25519_verifies(&fields, keys.bot_id, key))
    {
        Verification::Ed25519
    } else {
        return Err(BadHash);
    };

    let auth_date = fields.get("auth_date").ok_or(Malformed("`auth_date` is missing"))?;
    let auth_date = parse_unix_seconds(auth_date).ok_or(Malformed("`auth_date` is not unix seconds"))?;
    check_freshness(auth_date, now, keys.max_age)?;
    if holds_nul(&fields) {
        return Err(Malformed(NUL_IN_A_VALUE));
    }

    let raw_user = fields.get("user").ok_or(Malformed("`user` is missing"))?;
    // The serde error is dropped: it would quote the user's name or whatever else was sent.
    let user: WebAppUser = serde_json::from_str(raw_user)
        .map_err(|_| Malformed("`user` is not a JSON user with an integer `id` and a `first_name`"))?;
    if user.id <= 0 {
        return Err(Malformed("`user` has an `id` that is not positive"));
    }
    // The escape `\u0000` anywhere in the user object, in a field we keep or not: the profile
    // travels as a job's `jsonb` payload.
    if serde_json::from_str::<serde_json::Value>(raw_user).is_ok_and(|user| json_holds_nul(&user)) {
        return Err(Malformed(NUL_IN_A_VALUE));
    }

    let text = |key: &str| fields.get(key).map(|value| value.to_string());
    Ok(InitData {
        user,
        auth_date,
        query_id: text("query_id"),
        start_param: text("start_param"),
        chat_type: text("chat_type"),
        chat_instance: text("chat_instance"),
        verified_by,
    })
}

/// sign builds the `initData` Telegram's client would send for `fields` under `bot_token`:
/// form-urlencoded in the order given, then `hash` (the HMAC over the decoded fields). For the
/// fake Telegram, the dev tools and tests; `fields` must not contain `hash`.
pub fn sign(fields: &[(&str, &str)], bot_token: &str) -> String {
    let sorted: BTreeMap<&str, &str> = fields.iter().copied().collect();
    let mut mac = hmac_under(&secret_key(bot_token));
    mac.update(data_check_string(sorted.into_iter(), &["hash"]).as_bytes());
    let hash = hex::encode(mac.finalize().into_bytes());
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .append_pair("hash", &hash)
        .finish()
}

/// verifying_key_from_hex reads an Ed25519 public key written as 64 hex digits, as Telegram
/// publishes them; `None` if it is not one.
pub fn verifying_key_from_hex(hex: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// The decoded fields by key; a BTreeMap since the data-check-string wants them sorted.
type Fields<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// The fields of `raw`, refusing what Telegram never sends: empty input, empty pairs, pairs
/// without `=` (which a lenient decoder reads as an empty value), repeated keys, and a `=` or a
/// line break in a key or a line break in a value. The last two would make the data-check-string
/// ambiguous: `a=1&b=2` and `a=1%0Ab%3D2` sign the same text, so one field could be forged into
/// or folded out of another under a genuine hash. Telegram's values never hold a raw line break
/// (objects are escaped JSON), so refusing them costs nothing.
///
/// Percent-decoding is UTF-8 lossy: a value that is not UTF-8 decodes to something Telegram did
/// not sign, and fails the hash.
fn parse(raw: &str) -> Result<Fields<'_>, InitDataError> {
    if raw.is_empty() {
        return Err(Malformed("it is empty"));
    }
    let mut fields = Fields::new();
    for pair in raw.split('&') {
        if !pair.contains('=') {
            return Err(Malformed("a pair has no `=`"));
        }
        // One pair at a time through the form decoder: `+` is a space, as in Telegram's own
        // telegram-web-app.js, and `%XX` a byte.
        let Some((key, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            return Err(Malformed("a pair has no `=`"));
        };
        if key.is_empty() {
            return Err(Malformed("a key is empty"));
        }
        if key.contains(['=', '\n']) || value.contains('\n') {
            return Err(Malformed("a key holds `=` or a line break, or a value a line break"));
        }
        if fields.contains_key(&key) {
            return Err(InitDataError::DuplicateKey(key.chars().take(SHOWN_KEY_LEN).collect()));
        }
        fields.insert(key, value);
    }
    Ok(fields)
}

/// The 32 bytes of `hash`, which must be 64 lowercase hex digits as Telegram sends it: one
/// spelling per hash, so nothing downstream compares two spellings of the same one.
fn decode_hash(hash: &str) -> Result<[u8; 32], InitDataError> {
    let malformed = Malformed("`hash` is not 64 lowercase hex digits");
    if !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed);
    }
    let mut bytes = [0; 32];
    hex::decode_to_slice(hash, &mut bytes).map_err(|_| malformed)?;
    Ok(bytes)
}

/// `key=value` lines of the sorted fields but those in `skip`, joined by `\n`.
fn data_check_string<'a>(sorted: impl Iterator<Item = (&'a str, &'a str)>, skip: &[&str]) -> String {
    let lines: Vec<String> = sorted
        .filter(|(key, _)| !skip.contains(key))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    lines.join("\n")
}

fn sorted_fields<'a>(fields: &'a Fields<'_>) -> impl Iterator<Item = (&'a str, &'a str)> {
    fields.iter().map(|(key, value)| (key.as_ref(), value.as_ref()))
}

fn hmac_under(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes a key of any length")
}

/// HMAC_SHA256(key = "WebAppData", msg = bot_token).
fn secret_key(bot_token: &str) -> [u8; 32] {
    let mut mac = hmac_under(WEB_APP_DATA);
    mac.update(bot_token.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `hash` is the HMAC of the fields under the bot token, compared in constant time.
fn hmac_verifies(fields: &Fields<'_>, bot_token: &str, hash: &[u8; 32]) -> bool {
    let mut mac = hmac_under(&secret_key(bot_token));
    mac.update(data_check_string(sorted_fields(fields), &["hash"]).as_bytes());
    mac.verify_slice(hash).is_ok()
}

/// Whether `signature` is Telegram's Ed25519 signature of the fields for `bot_id` under `key`.
/// `verify_strict` refuses the malleable and small-order forms plain `verify` lets through.
fn ed25519_verifies(fields: &Fields<'_>, bot_id: u64, key: &VerifyingKey) -> bool {
    let Some(signature) = fields.get("signature") else {
        return false;
    };
    let Some(bytes) = SIGNATURE_BASE64
        .decode(signature.as_bytes())
        .ok()
        .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
    else {
        return false;
    };
    let message = format!(
        "{bot_id}:WebAppData\n{}",
        data_check_string(sorted_fields(fields), &["hash", "signature"])
    );
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&bytes))
        .is_ok()
}

/// Unix seconds written as plain digits (no sign, no spaces), as Telegram writes `auth_date`.
fn parse_unix_seconds(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Refuses an `auth_date` older than `max_age` or more than [`FUTURE_SKEW`] ahead of `now`;
/// both bounds are inclusive.
fn check_freshness(auth_date: i64, now: i64, max_age: Duration) -> Result<(), InitDataError> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if auth_date < now.saturating_sub(secs(max_age)) {
        return Err(InitDataError::Stale);
    }
    if auth_date > now.saturating_add(secs(FUTURE_SKEW)) {
        return Err(InitDataError::FromTheFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
