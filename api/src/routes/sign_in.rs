//! `POST /v1/auth/telegram`: a Mini App user signs in with the `initData` Telegram gave the app.
//!
//! Verify `initData` ([`init_data::verify`]) → issue a user token (HS256, 15 minutes) → enqueue
//! the user's provisioning (the profile upsert happens in a worker) → 200. Nothing else is
//! written here.

use std::time::Instant;

use chrono::{DateTime, Utc};
use jobs::billing::users::ProvisionUser;
use jobs::queue::enqueue;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use crate::auth::init_data::{self, InitDataError, InitDataKeys};
use crate::auth::{USER_TOKEN_TTL, issue_user_token};
use crate::config::JwtConfig;
use crate::error::{Problem, ProblemKind};
use crate::metrics;

/// SignInApi serves `/v1/auth/telegram`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignInApi;

/// SignInRequest carries `initData`: one JSON body, so that every client generator takes it.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct SignInRequest {
    /// `Telegram.WebApp.initData`, exactly as the Mini App has it.
    #[oai(validator(max_length = 8192))]
    pub init_data: String,
}

/// SignedInUser is who signed in, as Telegram vouched for them.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SignedInUser {
    /// The Telegram user id: the token's `sub`.
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

/// Session is a signed-in user's token.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Session {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the token is valid for (900); sign in again with fresh `initData` after.
    pub expires_in: u64,
    pub expires_at: DateTime<Utc>,
    pub user: SignedInUser,
}

/// SignInResponse is the answer to a sign-in.
#[derive(ApiResponse)]
pub enum SignInResponse {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<Session>),
}

/// The problem for a refused `initData`: 400 `invalid-request` for what is not `initData` at all
/// or holds U+0000 (a mistake in what was sent, not in who sent it), 401 for what Telegram did
/// not sign for this bot, or signed too long ago. The detail names the check, never the data.
fn refused(error: &InitDataError) -> Problem {
    let kind = match error {
        InitDataError::Malformed(_) => ProblemKind::InvalidRequest,
        _ => ProblemKind::Unauthorized,
    };
    Problem::new(kind, error.to_string())
}

#[OpenApi(tag = "Tag::Auth")]
impl SignInApi {
    /// Sign in with Telegram
    ///
    /// Exchanges a Mini App's `initData` for a user token. The data must carry a `hash` made
    /// with this bot's token (or, when configured, Telegram's Ed25519 `signature`), and an
    /// `auth_date` no older than `TELEGRAM_INIT_DATA_MAX_AGE` and not in the future; else 401
    /// `unauthorized` saying which check failed (400 `invalid-request` when it is not `initData`
    /// at all, or when, signed, a value holds U+0000, which cannot be stored). The token is an
    /// HS256 JWT whose `sub` is the Telegram user id, valid 15 minutes. The user's profile is
    /// stored by a worker shortly after.
    #[oai(path = "/v1/auth/telegram", method = "post", operation_id = "sign_in_with_telegram")]
    async fn sign_in(
        &self,
        pool: Data<&PgPool>,
        keys: Data<&InitDataKeys>,
        jwt: Data<&JwtConfig>,
        body: Json<SignInRequest>,
    ) -> Result<SignInResponse, Problem> {
        let started = Instant::now();
        let raw = body.0.init_data.as_str();
        let now = Utc::now();
        let data = match init_data::verify(raw.trim(), &keys, now.timestamp()) {
            Ok(data) => data,
            Err(error) => {
                metrics::miniapp_session(false, started.elapsed());
                tracing::info!(error = %error, "mini app sign-in refused");
                return Err(refused(&error));
            }
        };
        let signed_in_at = DateTime::from_timestamp(data.auth_date, 0).unwrap_or(now);
        let provision = ProvisionUser {
            profile: data.user.clone(),
            signed_in_at,
        };
        let mut tx = pool.begin().await?;
        enqueue(&mut tx, &provision.job()).await?;
        tx.commit().await?;

        let token = issue_user_token(&jwt, data.user.id, now);
        metrics::miniapp_session(true, started.elapsed());
        tracing::info!(user_id = data.user.id, via = ?data.verified_by, "mini app sign-in");
        let user = data.user;
        Ok(SignInResponse::Ok(Json(Session {
            token,
            token_type: "Bearer".into(),
            expires_in: USER_TOKEN_TTL.as_secs(),
            expires_at: now + USER_TOKEN_TTL,
            user: SignedInUser {
                id: user.id,
                first_name: user.first_name,
                last_name: user.last_name,
                username: user.username,
                language_code: user.language_code,
            },
        })))
    }
}
