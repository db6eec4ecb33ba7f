use ed25519_dalek::{Signer, SigningKey};

use super::*;

/// The output of `python3 api/tests/vectors/init_data.py`, an independent signer written
/// from Telegram's documentation with Python's standard library. Rerun it after changing
/// the script and paste its output here.
const PYTHON_VECTOR: &str = "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22%D0%81%D0%BB%D0%BA%D0%B0+%F0%9F%8E%84%22%2C%22last_name%22%3A%22%D0%98%D0%B2%D0%B0%D0%BD%D0%BE%D0%B2%D0%B0%22%2C%22username%22%3A%22yolka_test%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2Fyolka.svg%22%7D&chat_instance=-3788475317572404878&chat_type=private&auth_date=1733580000&signature=SignatureIsAnyFixedStringForTheHashCheck_0123456789&hash=755552155fa71c79caf7e23c0ed13f75fe3584a7055bea1d2996a48d77e01a4c";

/// The script's fields, decoded.
const PYTHON_USER: &str = r#"{"id":279058397,"first_name":"Ёлка 🎄","last_name":"Иванова","username":"yolka_test","language_code":"ru","is_premium":true,"allows_write_to_pm":true,"photo_url":"https:\/\/t.me\/i\/userpic\/320\/yolka.svg"}"#;
const PYTHON_FIELDS: [(&str, &str); 6] = [
    ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc"),
    ("user", PYTHON_USER),
    ("chat_instance", "-3788475317572404878"),
    ("chat_type", "private"),
    ("auth_date", "1733580000"),
    ("signature", "SignatureIsAnyFixedStringForTheHashCheck_0123456789"),
];
const PYTHON_AUTH_DATE: i64 = 1_733_580_000;

const BOT_TOKEN: &str = "7342037142:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const BOT_ID: u64 = 7_342_037_142;
const NOW: i64 = 1_750_000_000;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const USER: &str = r#"{"id":42,"first_name":"Ann","username":"ann","is_bot":false}"#;

fn keys() -> InitDataKeys {
    InitDataKeys {
        bot_token: Secret::new(BOT_TOKEN),
        bot_id: BOT_ID,
        ed25519_public_key: None,
        max_age: DAY,
    }
}

fn keys_with(public_key: VerifyingKey) -> InitDataKeys {
    InitDataKeys {
        ed25519_public_key: Some(public_key),
        ..keys()
    }
}

/// A signed `initData` for user 42 issued at `auth_date`.
fn signed_at(auth_date: i64) -> String {
    sign(
        &[
            ("query_id", "AAE1"),
            ("user", USER),
            ("auth_date", &auth_date.to_string()),
        ],
        BOT_TOKEN,
    )
}

fn third_party_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// What Telegram sends a third party: `signature` by `signer` over the fields for `bot_id`,
/// and a `hash` under a token the verifier does not hold.
fn signed_third_party(fields: &[(&str, &str)], bot_id: u64, signer: &SigningKey) -> String {
    let sorted: BTreeMap<&str, &str> = fields.iter().copied().collect();
    let message = format!("{bot_id}:WebAppData\n{}", data_check_string(sorted.into_iter(), &[]));
    let signature = SIGNATURE_BASE64.encode(signer.sign(message.as_bytes()).to_bytes());
    let mut all = fields.to_vec();
    all.push(("signature", &signature));
    sign(&all, "1:another bot's token")
}

fn third_party_fields() -> [(&'static str, &'static str); 3] {
    [("user", USER), ("auth_date", "1749999000"), ("chat_type", "sender")]
}

#[test]
fn the_python_vector_verifies() {
    let data = verify(PYTHON_VECTOR, &keys(), PYTHON_AUTH_DATE + 60).unwrap();
    assert_eq!(data.user.id, 279_058_397);
    assert_eq!(data.user.first_name, "Ёлка 🎄");
    assert_eq!(data.user.last_name.as_deref(), Some("Иванова"));
    assert_eq!(data.user.username.as_deref(), Some("yolka_test"));
    assert_eq!(
        data.user.photo_url.as_deref(),
        Some("https://t.me/i/userpic/320/yolka.svg")
    );
    assert!(data.user.is_premium && data.user.allows_write_to_pm);
    assert_eq!(data.auth_date, PYTHON_AUTH_DATE);
    assert_eq!(data.query_id.as_deref(), Some("AAHdF6IQAAAAAN0XohDhrOrc"));
    assert_eq!(data.chat_type.as_deref(), Some("private"));
    assert_eq!(data.chat_instance.as_deref(), Some("-3788475317572404878"));
    assert_eq!(data.start_param, None);
    assert_eq!(data.verified_by, Verification::Hmac);
}

#[test]
fn sign_agrees_with_the_python_vector() {
    let ours = sign(&PYTHON_FIELDS, BOT_TOKEN);
    let hash_of = |raw: &str| raw.rsplit_once("&hash=").map(|(_, hash)| hash.to_owned());
    assert_eq!(hash_of(&ours), hash_of(PYTHON_VECTOR));
    // Both encode as application/x-www-form-urlencoded (space as `+`), so the whole
    // string matches too.
    assert_eq!(ours, PYTHON_VECTOR);
}

#[test]
fn signed_init_data_verifies_and_says_who() {
    let raw = sign(
        &[
            ("query_id", "AAE1"),
            ("user", USER),
            ("auth_date", "1749999000"),
            ("start_param", "ref_abc"),
        ],
        BOT_TOKEN,
    );
    let data = verify(&raw, &keys(), NOW).unwrap();
    let user = WebAppUser {
        id: 42,
        first_name: "Ann".into(),
        last_name: None,
        username: Some("ann".into()),
        language_code: None,
        is_premium: false,
        allows_write_to_pm: false,
        photo_url: None,
    };
    assert_eq!(data.user, user);
    assert_eq!(data.auth_date, 1_749_999_000);
    assert_eq!(data.query_id.as_deref(), Some("AAE1"));
    assert_eq!(data.start_param.as_deref(), Some("ref_abc"));
    assert_eq!((data.chat_type, data.chat_instance), (None, None));
    assert_eq!(data.verified_by, Verification::Hmac);
}

#[test]
fn a_tampered_user_is_refused() {
    let raw = signed_at(NOW);
    let tampered = raw.replacen("%22Ann%22", "%22Ana%22", 1);
    assert_ne!(tampered, raw);
    assert_eq!(verify(&tampered, &keys(), NOW), Err(BadHash));
    let tampered_vector = PYTHON_VECTOR.replacen("279058397", "279058398", 1);
    assert_eq!(verify(&tampered_vector, &keys(), PYTHON_AUTH_DATE), Err(BadHash));
}

#[test]
fn another_bots_token_is_refused() {
    let raw = sign(
        &[("user", USER), ("auth_date", &NOW.to_string())],
        "7342037142:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsax",
    );
    assert_eq!(verify(&raw, &keys(), NOW), Err(BadHash));
}

#[test]
fn data_older_than_max_age_is_stale() {
    let max_age = DAY.as_secs() as i64;
    assert!(verify(&signed_at(NOW - max_age), &keys(), NOW).is_ok());
    assert_eq!(
        verify(&signed_at(NOW - max_age - 1), &keys(), NOW),
        Err(InitDataError::Stale)
    );
    assert_eq!(verify(PYTHON_VECTOR, &keys(), NOW), Err(InitDataError::Stale));
}

#[test]
fn the_future_is_accepted_within_the_skew_only() {
    let skew = FUTURE_SKEW.as_secs() as i64;
    assert!(verify(&signed_at(NOW + skew), &keys(), NOW).is_ok());
    assert_eq!(
        verify(&signed_at(NOW + skew + 1), &keys(), NOW),
        Err(InitDataError::FromTheFuture)
    );
}

#[test]
fn forged_data_is_bad_hash_whatever_its_date() {
    for auth_date in [NOW, NOW - 10 * DAY.as_secs() as i64, NOW + 3600] {
        let forged = sign(
            &[("user", USER), ("auth_date", &auth_date.to_string())],
            "1:not our token",
        );
        assert_eq!(verify(&forged, &keys(), NOW), Err(BadHash), "auth_date {auth_date}");
    }
}

#[test]
fn a_missing_hash_is_refused() {
    let raw = format!("user={}&auth_date={NOW}", USER);
    assert_eq!(verify(&raw, &keys(), NOW), Err(InitDataError::MissingHash));
}

#[test]
fn what_telegram_never_sends_is_malformed() {
    let valid = signed_at(NOW);
    for raw in [
        String::new(),
        format!("{valid}&"),
        format!("&{valid}"),
        valid.replacen("&", "&&", 1),
        format!("lonely&{valid}"),
        format!("=x&{valid}"),
    ] {
        assert!(matches!(verify(&raw, &keys(), NOW), Err(Malformed(_))), "{raw:?}");
    }
}

#[test]
fn a_repeated_key_is_refused_however_it_is_encoded() {
    let valid = signed_at(NOW);
    for extra in ["auth_date=1", "auth%5Fdate=1", "hash=00"] {
        let raw = format!("{extra}&{valid}");
        let key = if extra.starts_with("hash") { "hash" } else { "auth_date" };
        assert_eq!(
            verify(&raw, &keys(), NOW),
            Err(InitDataError::DuplicateKey(key.into())),
            "{raw}"
        );
    }
}

#[test]
fn the_hash_must_be_64_lowercase_hex_digits() {
    let valid = signed_at(NOW);
    let (body, hash) = valid.rsplit_once("&hash=").unwrap();
    let malformed = Malformed("`hash` is not 64 lowercase hex digits");
    for bad in [
        hash.to_uppercase(),
        hash[..62].to_owned(),
        format!("{hash}00"),
        format!("{}zz", &hash[..62]),
    ] {
        assert_eq!(
            verify(&format!("{body}&hash={bad}"), &keys(), NOW),
            Err(malformed.clone()),
            "{bad}"
        );
    }
    let wrong = format!("{body}&hash={}", "0".repeat(64));
    assert_eq!(verify(&wrong, &keys(), NOW), Err(BadHash));
}

#[test]
fn awkward_values_round_trip_through_sign() {
    for value in ["a&b=c", "100%", "%41", "1+1 = 2", "  ", "", "Ёлка 🎄", "?#;/\\\"'"] {
        let raw = sign(
            &[("user", USER), ("auth_date", &NOW.to_string()), ("start_param", value)],
            BOT_TOKEN,
        );
        let data = verify(&raw, &keys(), NOW).unwrap_or_else(|err| panic!("{value:?}: {err}"));
        assert_eq!(data.start_param.as_deref(), Some(value));
    }
}

#[test]
fn the_check_is_on_decoded_values() {
    let raw = sign(
        &[("user", USER), ("auth_date", &NOW.to_string()), ("start_param", "a b")],
        BOT_TOKEN,
    );
    assert!(raw.contains("%7B%22") && raw.contains("start_param=a+b"), "{raw}");
    let respelled = raw
        .replace("%7B", "%7b")
        .replace("a+b", "a%20b")
        .replace("auth_date", "auth%5fdate");
    let data = verify(&respelled, &keys(), NOW).unwrap();
    assert_eq!((data.user.id, data.start_param.as_deref()), (42, Some("a b")));
}

#[test]
fn line_breaks_are_refused_even_when_signed() {
    let raw = sign(
        &[("user", USER), ("auth_date", &NOW.to_string()), ("start_param", "a\nb")],
        BOT_TOKEN,
    );
    assert!(matches!(verify(&raw, &keys(), NOW), Err(Malformed(_))));
    let raw = sign(
        &[("user", USER), ("auth_date", &NOW.to_string()), ("a=b", "c")],
        BOT_TOKEN,
    );
    assert!(matches!(verify(&raw, &keys(), NOW), Err(Malformed(_))));
}

#[test]
fn nul_in_any_value_is_refused_once_signed_and_stale_data_stays_stale() {
    let now = NOW.to_string();
    for fields in [
        // Decoded from %00, in a value or a key.
        vec![("user", USER), ("auth_date", now.as_str()), ("query_id", "AA\0")],
        vec![("user", USER), ("auth_date", now.as_str()), ("k\0", "v")],
        // The JSON escape inside `user`, in a field we keep, one we ignore, or a key.
        vec![
            ("auth_date", now.as_str()),
            ("user", r#"{"id":42,"first_name":"A\u0000nn"}"#),
        ],
        vec![
            ("auth_date", now.as_str()),
            ("user", r#"{"id":42,"first_name":"Ann","photo_url":"\u0000"}"#),
        ],
        vec![
            ("auth_date", now.as_str()),
            ("user", r#"{"id":42,"first_name":"Ann","\u0000":1}"#),
        ],
    ] {
        let signed = sign(&fields, BOT_TOKEN);
        assert_eq!(
            verify(&signed, &keys(), NOW),
            Err(Malformed(NUL_IN_A_VALUE)),
            "{fields:?}"
        );
        let forged = sign(&fields, "1:not our token");
        assert_eq!(verify(&forged, &keys(), NOW), Err(BadHash), "{fields:?}");
        assert_eq!(
            verify(&signed, &keys(), NOW + 2 * DAY.as_secs() as i64),
            Err(InitDataError::Stale)
        );
    }
    // The six characters `\u0000` (its backslash escaped) are a name like any other.
    let raw = sign(
        &[
            ("auth_date", now.as_str()),
            ("user", r#"{"id":42,"first_name":"A\\u0000nn"}"#),
        ],
        BOT_TOKEN,
    );
    assert_eq!(verify(&raw, &keys(), NOW).unwrap().user.first_name, r"A\u0000nn");
}

#[test]
fn a_field_cannot_be_folded_into_another() {
    // Genuinely signed `chat_instance` and `chat_type`: the data-check-string lines
    // `chat_instance=1` and `chat_type=group` are also what one `chat_instance` holding
    // "1\nchat_type=group" would give, under the same hash.
    let raw = sign(
        &[
            ("user", USER),
            ("auth_date", &NOW.to_string()),
            ("chat_instance", "1"),
            ("chat_type", "group"),
        ],
        BOT_TOKEN,
    );
    let hash = raw.rsplit_once("&hash=").unwrap().1;
    let folded = format!(
        "user={}&auth_date={NOW}&chat_instance=1%0Achat_type%3Dgroup&hash={hash}",
        urlencoded(USER)
    );
    assert!(matches!(verify(&folded, &keys(), NOW), Err(Malformed(_))));
}

#[test]
fn auth_date_and_user_are_read_only_once_signed() {
    let now = NOW.to_string();
    for fields in [
        vec![("user", USER)],
        vec![("user", USER), ("auth_date", "+1749999000")],
        vec![("user", USER), ("auth_date", "1749999000.5")],
        vec![("auth_date", now.as_str())],
        vec![("auth_date", now.as_str()), ("user", "{not json")],
        vec![("auth_date", now.as_str()), ("user", r#"{"first_name":"Ann"}"#)],
        vec![
            ("auth_date", now.as_str()),
            ("user", r#"{"id":4.2,"first_name":"Ann"}"#),
        ],
        vec![
            ("auth_date", now.as_str()),
            ("user", r#"{"id":"42","first_name":"Ann"}"#),
        ],
        vec![
            ("auth_date", now.as_str()),
            ("user", r#"{"id":-42,"first_name":"Ann"}"#),
        ],
    ] {
        let signed = sign(&fields, BOT_TOKEN);
        assert!(matches!(verify(&signed, &keys(), NOW), Err(Malformed(_))), "{fields:?}");
        let forged = sign(&fields, "1:not our token");
        assert_eq!(verify(&forged, &keys(), NOW), Err(BadHash), "{fields:?}");
    }
}

#[test]
fn a_third_party_signature_verifies_under_its_key() {
    let signer = third_party_key();
    let raw = signed_third_party(&third_party_fields(), BOT_ID, &signer);
    let data = verify(&raw, &keys_with(signer.verifying_key()), NOW).unwrap();
    assert_eq!((data.user.id, data.verified_by), (42, Verification::Ed25519));
    assert_eq!(data.chat_type.as_deref(), Some("sender"));
    // Padded base64url is the same signature.
    let padded = raw.replacen("&hash=", "%3D%3D&hash=", 1);
    assert!(verify(&padded, &keys_with(signer.verifying_key()), NOW).is_ok());
}

#[test]
fn a_third_party_signature_needs_a_configured_key() {
    let signer = third_party_key();
    let raw = signed_third_party(&third_party_fields(), BOT_ID, &signer);
    assert_eq!(verify(&raw, &keys(), NOW), Err(BadHash));
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    assert_eq!(verify(&raw, &keys_with(other), NOW), Err(BadHash));
}

#[test]
fn a_third_party_signature_covers_every_field_and_the_bot() {
    let signer = third_party_key();
    let keys = keys_with(signer.verifying_key());
    let raw = signed_third_party(&third_party_fields(), BOT_ID, &signer);
    let tampered = raw.replacen("sender", "senDer", 1);
    assert_ne!(tampered, raw);
    assert_eq!(verify(&tampered, &keys, NOW), Err(BadHash));
    let for_another_bot = signed_third_party(&third_party_fields(), BOT_ID + 1, &signer);
    assert_eq!(verify(&for_another_bot, &keys, NOW), Err(BadHash));
    let without_signature = sign(&third_party_fields(), "1:another bot's token");
    assert_eq!(verify(&without_signature, &keys, NOW), Err(BadHash));
    let garbled = raw.replacen("signature=", "signature=%21", 1);
    assert_eq!(verify(&garbled, &keys, NOW), Err(BadHash));
    // A genuine third-party signature does not excuse stale data.
    let old = [("user", USER), ("auth_date", "1"), ("chat_type", "sender")];
    let stale = signed_third_party(&old, BOT_ID, &signer);
    assert_eq!(verify(&stale, &keys, NOW), Err(InitDataError::Stale));
}

#[test]
fn telegrams_public_keys_are_ed25519_keys() {
    for hex in [TELEGRAM_PUBLIC_KEY_PRODUCTION, TELEGRAM_PUBLIC_KEY_TEST] {
        let key = verifying_key_from_hex(hex).unwrap();
        assert_eq!(hex::encode(key.as_bytes()), hex);
    }
    assert_eq!(verifying_key_from_hex(&TELEGRAM_PUBLIC_KEY_TEST[..62]), None);
    assert_eq!(verifying_key_from_hex("zz"), None);
}

#[test]
fn errors_and_keys_show_no_secret() {
    let raw = signed_at(NOW - 10 * DAY.as_secs() as i64);
    let hash = raw.rsplit_once("&hash=").unwrap().1;
    let errors = [
        verify(&raw, &keys(), NOW).unwrap_err(),
        verify(&raw.replace(hash, &hash.to_uppercase()), &keys(), NOW).unwrap_err(),
        verify(&format!("{raw}x"), &keys(), NOW).unwrap_err(),
        verify(&format!("hash=1&{raw}"), &keys(), NOW).unwrap_err(),
    ];
    for err in errors {
        let shown = err.to_string();
        assert!(!shown.contains(hash) && !shown.to_lowercase().contains(hash), "{shown}");
        assert!(!shown.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{shown}");
    }
    assert!(!format!("{:?}", keys()).contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"));
}

fn urlencoded(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
