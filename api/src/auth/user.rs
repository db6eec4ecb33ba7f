//! Who a user is: the holder of a user token, an HS256 JWT signed with `JWT_SECRET`.
//!
//! A token names the user's Telegram id in `sub` (a decimal string), carries our `iss` and
//! `aud`, and expires [`USER_TOKEN_TTL`] after it was issued. Only HS256 is accepted (a token
//! whose header names another algorithm, `none` included, is refused before its signature is
//! looked at), and `exp`, `iss`, `aud` and `sub` are all required. Every refusal is a 401
//! `unauthorized`; the reason is logged, never the token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::error::{Problem, ProblemKind};

/// How long a user token is valid after it was issued.
pub const USER_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// How far past `exp` a token is still taken, for clocks that disagree a little.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;

/// User access: `Authorization: Bearer <user token>`, an HS256 JWT whose `sub` is the user's
/// Telegram id.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "userToken", bearer_format = "JWT", checker = "check_user")]
pub struct UserAuth(pub User);

/// User is the caller a valid user token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// The Telegram user id, always positive.
    pub id: i64,
}

/// Claims are what a user token says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// A token for `user_id` (a Telegram user id, positive), issued at `now` and valid for
/// [`USER_TOKEN_TTL`], under `jwt`'s secret, issuer and audience.
pub fn issue_user_token(jwt: &JwtConfig, user_id: i64, now: DateTime<Utc>) -> String {
    let iat = now.timestamp();
    let claims = Claims {
        sub: user_id.to_string(),
        iss: jwt.issuer.clone(),
        aud: jwt.audience.clone(),
        iat,
        exp: iat + USER_TOKEN_TTL.as_secs() as i64,
    };
    let key = EncodingKey::from_secret(jwt.secret.expose().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 signs any claims with an HMAC key")
}

/// TokenError is why a user token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token's subject is not a Telegram user id")]
    BadSubject,
}

/// UserTokens checks user tokens; built once from [`JwtConfig`] and handed to the app as
/// request data.
#[derive(Clone)]
pub struct UserTokens {
    key: DecodingKey,
    validation: Validation,
}

impl UserTokens {
    /// A checker of tokens signed with `jwt.secret` for `jwt.issuer` and `jwt.audience`.
    pub fn new(jwt: &JwtConfig) -> UserTokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.leeway = EXPIRY_LEEWAY_SECS;
        validation.set_issuer(&[&jwt.issuer]);
        validation.set_audience(&[&jwt.audience]);
        UserTokens {
            key: DecodingKey::from_secret(jwt.secret.expose().as_bytes()),
            validation,
        }
    }

    /// The user `token` names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<User, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(e.to_string()),
        })?;
        let id = parse_user_id(&data.claims.sub).ok_or(TokenError::BadSubject)?;
        Ok(User { id })
    }
}

/// A Telegram user id written as a canonical positive decimal (no sign, no leading zero).
fn parse_user_id(sub: &str) -> Option<i64> {
    let id: i64 = sub.parse().ok()?;
    (id > 0 && id.to_string() == sub).then_some(id)
}

async fn check_user(req: &Request, bearer: Bearer) -> poem::Result<User> {
    let Some(tokens) = req.data::<UserTokens>() else {
        let missing = std::io::Error::other("the app was built without UserTokens");
        return Err(Problem::internal(&missing).into());
    };
    match tokens.verify(&bearer.token) {
        Ok(user) => Ok(user),
        Err(err) => {
            tracing::info!(reason = %err, "user token refused");
            let detail = match err {
                TokenError::Expired => "the user token has expired; sign in again",
                _ => "the user token is not valid; sign in again",
            };
            Err(Problem::new(ProblemKind::Unauthorized, detail).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use jobs::config::Secret;
    use serde_json::json;

    use super::*;

    fn config() -> JwtConfig {
        JwtConfig {
            secret: Secret::new("0123456789abcdef0123456789abcdef"),
            issuer: "paygate".into(),
            audience: "paygate-api".into(),
        }
    }

    fn signed(alg: Algorithm, claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
        let now = Utc::now().timestamp();
        json!({"sub": sub, "iss": "paygate", "aud": "paygate-api", "iat": now, "exp": now + exp_in})
    }

    #[test]
    fn an_issued_token_names_its_user_for_fifteen_minutes() {
        let jwt = config();
        let tokens = UserTokens::new(&jwt);
        let token = issue_user_token(&jwt, 42, Utc::now());
        assert_eq!(tokens.verify(&token), Ok(User { id: 42 }));
        let old = issue_user_token(&jwt, 42, Utc::now() - TimeDelta::seconds(15 * 60 + 10));
        assert_eq!(tokens.verify(&old), Err(TokenError::Expired));
        let within_leeway = issue_user_token(&jwt, 42, Utc::now() - TimeDelta::seconds(15 * 60 + 2));
        assert_eq!(tokens.verify(&within_leeway), Ok(User { id: 42 }));
    }

    #[test]
    fn other_algorithms_and_other_keys_are_refused() {
        let jwt = config();
        let tokens = UserTokens::new(&jwt);
        let secret = jwt.secret.expose();
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = signed(alg, &claims("42", 60), secret);
            assert!(matches!(tokens.verify(&token), Err(TokenError::Invalid(_))), "{alg:?}");
        }
        let other_key = signed(Algorithm::HS256, &claims("42", 60), "another-secret-another-secret-00");
        assert!(matches!(tokens.verify(&other_key), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn every_claim_is_required_and_checked() {
        let jwt = config();
        let tokens = UserTokens::new(&jwt);
        let secret = jwt.secret.expose();
        let mut cases = Vec::new();
        for field in ["sub", "iss", "aud", "exp"] {
            let mut c = claims("42", 60);
            c.as_object_mut().unwrap().remove(field);
            cases.push((format!("no {field}"), c));
        }
        let mut wrong_iss = claims("42", 60);
        wrong_iss["iss"] = json!("someone-else");
        cases.push(("wrong iss".into(), wrong_iss));
        let mut wrong_aud = claims("42", 60);
        wrong_aud["aud"] = json!("another-api");
        cases.push(("wrong aud".into(), wrong_aud));
        let mut numeric_sub = claims("42", 60);
        numeric_sub["sub"] = json!(42);
        cases.push(("numeric sub".into(), numeric_sub));
        for (what, c) in cases {
            let token = signed(Algorithm::HS256, &c, secret);
            assert!(tokens.verify(&token).is_err(), "{what} passed");
        }
    }

    #[test]
    fn the_subject_is_a_canonical_positive_decimal() {
        assert_eq!(parse_user_id("42"), Some(42));
        assert_eq!(parse_user_id("9007199254740993"), Some(9_007_199_254_740_993));
        for bad in ["0", "-5", "+5", "042", "4.2", "abc", "", " 42", "99999999999999999999"] {
            assert_eq!(parse_user_id(bad), None, "{bad:?}");
        }
        let jwt = config();
        let token = signed(Algorithm::HS256, &claims("alice", 60), jwt.secret.expose());
        assert_eq!(UserTokens::new(&jwt).verify(&token), Err(TokenError::BadSubject));
    }
}
