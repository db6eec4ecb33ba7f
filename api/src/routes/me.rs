//! `GET /v1/me/entitlements`: what the signed-in user may use right now.

use chrono::{DateTime, Utc};
use jobs::billing::Plans;
use jobs::billing::entitlements::{self, Entitlement as Stored, Status};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use crate::auth::UserAuth;
use crate::error::Problem;

/// MeApi serves `/v1/me/...`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeApi;

/// EntitlementStatus is where an entitlement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum EntitlementStatus {
    /// Usable until `expires_at`.
    Active,
    /// Paused by a dispute or an unpaid subscription; may come back.
    Suspended,
    /// Ended early: cancelled, refunded.
    Revoked,
    /// Ended at the end of its paid period, without a renewal.
    Expired,
}

impl From<Status> for EntitlementStatus {
    fn from(s: Status) -> EntitlementStatus {
        match s {
            Status::Active => EntitlementStatus::Active,
            Status::Suspended => EntitlementStatus::Suspended,
            Status::Revoked => EntitlementStatus::Revoked,
            Status::Expired => EntitlementStatus::Expired,
        }
    }
}

/// Entitlement is access a user has, from one payment source.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Entitlement {
    /// The plan bought, by code.
    pub plan: String,
    /// The access the plan gives, e.g. `pro`; several plans may give the same.
    pub entitlement: String,
    /// Where the payment came from: `stripe:<subscription id>` or `telegram_stars:<charge id>`.
    pub source: String,
    pub status: EntitlementStatus,
    /// When the access ends unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Whether the provider will charge again at `expires_at`.
    pub renews: bool,
    /// The private Telegram chats the plan opens, by id.
    pub chats: Vec<i64>,
}

impl Entitlement {
    /// The answer's view of a stored entitlement; `None` for one without an end, which an
    /// active one never is.
    fn of(e: Stored, plans: &Plans) -> Option<Entitlement> {
        Some(Entitlement {
            expires_at: e.expires_at?,
            chats: plans.get(&e.plan).map(|p| p.chats.clone()).unwrap_or_default(),
            plan: e.plan,
            entitlement: e.entitlement,
            source: e.source,
            status: e.status.into(),
            renews: e.renews,
        })
    }
}

/// Entitlements are a user's usable entitlements.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Entitlements {
    /// Active and not expired, latest expiry first; empty when the user has none.
    pub entitlements: Vec<Entitlement>,
}

#[OpenApi(prefix_path = "/v1/me", tag = "Tag::Me")]
impl MeApi {
    /// My entitlements
    ///
    /// The caller's entitlements that are usable now: active and not expired.
    #[oai(path = "/entitlements", method = "get", operation_id = "list_my_entitlements")]
    async fn entitlements(
        &self,
        auth: UserAuth,
        pool: Data<&PgPool>,
        plans: Data<&Plans>,
    ) -> Result<Json<Entitlements>, Problem> {
        let active = entitlements::active_for(&mut *pool.acquire().await?, auth.0.id).await?;
        Ok(Json(Entitlements {
            entitlements: active.into_iter().filter_map(|e| Entitlement::of(e, &plans)).collect(),
        }))
    }
}
