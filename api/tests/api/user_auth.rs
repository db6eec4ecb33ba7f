//! User tokens: only an unexpired HS256 JWT we signed, for us, naming a Telegram user, gets in.

use chrono::{TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, assert_problem, jwt, spawn_app, user_token};

const ME: &str = "/v1/me/entitlements";

/// base64url without padding, as JWTs encode their parts.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Valid claims for user 42, with `change` applied.
fn claims(change: impl FnOnce(&mut Value)) -> Value {
    let now = Utc::now().timestamp();
    let mut c = json!({"sub": "42", "iss": "paygate", "aud": "paygate-api", "iat": now, "exp": now + 600});
    change(&mut c);
    c
}

/// `claims` signed with `alg` under the test app's JWT secret.
fn signed(alg: Algorithm, claims: &Value) -> String {
    let key = EncodingKey::from_secret(jwt().secret.expose().as_bytes());
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let resp = app.get(ME).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{what}");
    let body = assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(!body.to_string().contains(token), "the answer never echoes the token");
}

#[tokio::test]
async fn a_token_we_issued_gets_in() {
    let app = spawn_app().await;
    let resp = app.get_user(ME, 42).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Signed by hand with the same claims the issuer writes: the two agree.
    let resp = app
        .get(ME)
        .bearer_auth(signed(Algorithm::HS256, &claims(|_| {})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = spawn_app().await;
    let issued = Utc::now() - TimeDelta::minutes(16);
    let token = api::auth::issue_user_token(&jwt(), 42, issued);
    assert_refused(&app, &token, "issued 16 minutes ago").await;
    let resp = app.get(ME).bearer_auth(&token).send().await.unwrap();
    let body = assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
}

#[tokio::test]
async fn an_unsigned_token_is_refused() {
    let app = spawn_app().await;
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(claims(|_| {}).to_string().as_bytes());
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
        assert_refused(&app, &token, "alg none").await;
    }
}

#[tokio::test]
async fn another_algorithm_with_the_same_secret_is_refused() {
    let app = spawn_app().await;
    for alg in [Algorithm::HS512, Algorithm::HS384] {
        assert_refused(&app, &signed(alg, &claims(|_| {})), &format!("{alg:?}")).await;
    }
    // An RS256 header over an HMAC signature: the header alone refuses it.
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let good = signed(Algorithm::HS256, &claims(|_| {}));
    let (_, rest) = good.split_once('.').unwrap();
    assert_refused(&app, &format!("{header}.{rest}"), "RS256 header").await;
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let app = spawn_app().await;
    let good = user_token(42);
    let parts: Vec<&str> = good.split('.').collect();
    // Another user's claims under user 42's signature.
    let other = b64url(claims(|c| c["sub"] = json!("43")).to_string().as_bytes());
    assert_refused(&app, &format!("{}.{other}.{}", parts[0], parts[2]), "claims swapped").await;
    // One character of the signature changed.
    let mut sig = parts[2].to_string();
    let last = sig.pop().unwrap();
    sig.push(if last == 'A' { 'B' } else { 'A' });
    assert_refused(&app, &format!("{}.{}.{sig}", parts[0], parts[1]), "signature changed").await;
    // Signed under another key.
    let foreign = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(|_| {}),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    assert_refused(&app, &foreign, "another key").await;
}

#[tokio::test]
async fn wrong_or_missing_claims_are_refused() {
    let app = spawn_app().await;
    let without = |field: &'static str| claims(move |c| drop(c.as_object_mut().unwrap().remove(field)));
    let cases = [
        ("wrong issuer", claims(|c| c["iss"] = json!("someone-else"))),
        ("wrong audience", claims(|c| c["aud"] = json!("another-api"))),
        ("non-numeric subject", claims(|c| c["sub"] = json!("alice"))),
        ("zero subject", claims(|c| c["sub"] = json!("0"))),
        ("negative subject", claims(|c| c["sub"] = json!("-42"))),
        ("no issuer", without("iss")),
        ("no audience", without("aud")),
        ("no expiry", without("exp")),
        ("no subject", without("sub")),
    ];
    for (what, claims) in cases {
        assert_refused(&app, &signed(Algorithm::HS256, &claims), what).await;
    }
}

#[tokio::test]
async fn no_token_or_the_admin_token_is_refused() {
    let app = spawn_app().await;
    let resp = app.get(ME).send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_refused(&app, TOKEN, "the admin token").await;
    assert_refused(&app, "not-a-jwt", "garbage").await;
}

#[tokio::test]
async fn a_user_token_does_not_open_ops_routes() {
    let app = spawn_app().await;
    let resp = app
        .get("/v1/ops/queues")
        .bearer_auth(user_token(42))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
