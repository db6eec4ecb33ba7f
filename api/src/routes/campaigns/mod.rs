//! `/v1/ops/campaigns` and `/v1/ops/broadcasts`: operators create promo campaigns, pause and
//! resume them, preview the next promo, send one now, and watch broadcasts and campaign
//! statistics. The same operations as the `worker campaigns` CLI, through [`jobs::marketing`].
//!
//! Writes stay in the web process's lane: creating a campaign writes its rows; "send now"
//! writes the broadcast with its first fan-out job, in one transaction. Sending is the workers'.

//!
//! The request bodies, the responses and the operations are here; the objects the responses
//! carry, and how they are made from `jobs`' types, are in `views`.

mod views;

use chrono::{DateTime, Utc};
use jobs::marketing::broadcasts;
use jobs::marketing::campaigns::{self, ButtonAction, CampaignError, CampaignSpec, NewPromo, PromoButton};
use jobs::marketing::{Settings, stats};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sqlx::PgPool;

pub use views::{
    BroadcastProgress, BroadcastStarted, ButtonView, CampaignStats, CampaignView, PromoPreview, PromoStats, Revenue,
};

use super::Tag;
use super::json_string::JsonString;
use super::notifications::ParseMode;
use crate::auth::AdminAuth;
use crate::error::{Problem, ProblemDetails, ProblemKind};

/// CampaignsApi serves `/v1/ops/campaigns` and `/v1/ops/broadcasts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CampaignsApi;

/// AudienceKind is who a campaign's broadcasts go to, resolved when each broadcast begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AudienceKind {
    /// Every user who wrote to the bot (or signed in to the Mini App allowing messages), less
    /// those who blocked it and banned users.
    AllUsers,
    /// The same, less users with an active entitlement.
    WithoutEntitlement,
    /// The chats in `chat_ids` (users, groups, channels), less those that blocked the bot.
    Chats,
}

/// Action is what a promo button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Action {
    /// Opens the bot with `https://t.me/<bot>?start=promo-<campaign>-<promo>` (needs
    /// `TELEGRAM_BOT_USERNAME`).
    DeepLink,
    /// Sends `promo:<campaign>:<promo>` back to the bot.
    Callback,
}

/// PromoButtonRequest is a call-to-action button.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct PromoButtonRequest {
    /// The button's label.
    pub text: JsonString,
    pub action: Action,
}

/// PromoRequest is one promo of a campaign.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct PromoRequest {
    /// 1 to 24 of `A-Z a-z 0-9 _`, unique in the campaign.
    pub name: JsonString,
    /// The message text: not blank, at most 4096 characters.
    pub text: JsonString,
    /// How Telegram reads the text's formatting; plain text when absent.
    pub parse_mode: Option<ParseMode>,
    /// 1 to 8 buttons, one per row.
    pub buttons: Vec<PromoButtonRequest>,
}

/// CampaignRequest is a campaign to create. Its promos are sent in the order given, in rotation.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct CampaignRequest {
    /// 1 to 24 of `A-Z a-z 0-9 _`; the campaign's id.
    pub name: JsonString,
    pub audience: AudienceKind,
    /// The chats of a `chats` audience (1 to 2,000); only with it.
    pub chat_ids: Option<Vec<i64>>,
    /// Send every this many hours (1 to 8760), counted from creation; 4 when neither this nor
    /// `cron` is given.
    pub every_hours: Option<u32>,
    /// Or send on this five-field cron schedule, in UTC (`minute hour day month weekday`).
    pub cron: Option<JsonString>,
    /// 1 to 20 promos.
    pub promos: Vec<PromoRequest>,
}

impl CampaignRequest {
    fn into_spec(self) -> CampaignSpec {
        CampaignSpec {
            name: self.name.0,
            audience: match self.audience {
                AudienceKind::AllUsers => "all_users",
                AudienceKind::WithoutEntitlement => "without_entitlement",
                AudienceKind::Chats => "chats",
            }
            .into(),
            chat_ids: self.chat_ids,
            every_hours: self.every_hours,
            cron: self.cron.map(String::from),
            promos: self
                .promos
                .into_iter()
                .map(|p| NewPromo {
                    name: p.name.0,
                    text: p.text.0,
                    parse_mode: p.parse_mode.map(ParseMode::into_telegram),
                    buttons: p
                        .buttons
                        .into_iter()
                        .map(|b| PromoButton {
                            text: b.text.0,
                            action: match b.action {
                                Action::DeepLink => ButtonAction::DeepLink,
                                Action::Callback => ButtonAction::Callback,
                            },
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// CreateResponse is the answer to a new campaign.
#[derive(ApiResponse)]
pub enum CreateResponse {
    /// The campaign, created.
    #[oai(status = 201)]
    Created(Json<CampaignView>),
    /// A campaign of this name exists (`conflict`).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemDetails>),
}

/// CampaignResponse is one campaign, or why not.
#[derive(ApiResponse)]
pub enum CampaignResponse {
    #[oai(status = 200)]
    Ok(Json<CampaignView>),
    /// No campaign has this name (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// PreviewResponse is the next promo, or why not.
#[derive(ApiResponse)]
pub enum PreviewResponse {
    #[oai(status = 200)]
    Ok(Json<PromoPreview>),
    /// No campaign has this name (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// SendResponse is the broadcast a send-now began, or why not.
#[derive(ApiResponse)]
pub enum SendResponse {
    /// The broadcast began: its recipients are being queued.
    #[oai(status = 202)]
    Accepted(Json<BroadcastStarted>),
    /// No campaign has this name (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// ProgressResponse is a broadcast's progress, or why not.
#[derive(ApiResponse)]
pub enum ProgressResponse {
    #[oai(status = 200)]
    Ok(Json<BroadcastProgress>),
    /// No broadcast has this id (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// StatsResponse is a campaign's statistics, or why not.
#[derive(ApiResponse)]
pub enum StatsResponse {
    #[oai(status = 200)]
    Ok(Json<CampaignStats>),
    /// No campaign has this name (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

fn no_campaign(name: &str) -> Json<ProblemDetails> {
    Json(Problem::not_found(format!("no campaign named {name:?}")).body())
}

/// Pauses or resumes campaign `name`, in a transaction of its own.
async fn set_paused(pool: &PgPool, name: &str, paused: bool) -> Result<CampaignResponse, Problem> {
    let mut tx = pool.begin().await?;
    match campaigns::set_paused(&mut tx, name, paused).await {
        Ok(c) => {
            tx.commit().await?;
            Ok(CampaignResponse::Ok(Json(c.into())))
        }
        Err(CampaignError::NotFound(name)) => Ok(CampaignResponse::NotFound(no_campaign(&name))),
        Err(e) => Err(campaign_problem(e)),
    }
}

fn campaign_problem(e: CampaignError) -> Problem {
    match e {
        CampaignError::Invalid(m) => Problem::new(ProblemKind::InvalidCampaign, m),
        CampaignError::Exists(_) => Problem::conflict(e.to_string()),
        CampaignError::NotFound(_) => Problem::not_found(e.to_string()),
        CampaignError::Database(e) => e.into(),
    }
}

#[OpenApi(prefix_path = "/v1/ops", tag = "Tag::Marketing")]
impl CampaignsApi {
    /// Create a campaign
    ///
    /// Its first scheduled broadcast is one period (or the next cron slot) after now; `send`
    /// sends one at once. Promos and buttons are checked as Telegram would check them.
    #[oai(path = "/campaigns", method = "post", operation_id = "create_campaign")]
    async fn create(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        settings: Data<&Settings>,
        body: Json<CampaignRequest>,
    ) -> Result<CreateResponse, Problem> {
        let campaign = body.0.into_spec().into_campaign().map_err(campaign_problem)?;
        let mut tx = pool.begin().await?;
        match campaigns::create(&mut tx, &campaign, settings.bot_username.as_deref()).await {
            Ok(c) => {
                tx.commit().await?;
                tracing::info!(campaign = c.name, "campaign created");
                Ok(CreateResponse::Created(Json(c.into())))
            }
            Err(e @ CampaignError::Exists(_)) => {
                Ok(CreateResponse::Conflict(Json(Problem::conflict(e.to_string()).body())))
            }
            Err(e) => Err(campaign_problem(e)),
        }
    }

    /// List campaigns
    #[oai(path = "/campaigns", method = "get", operation_id = "list_campaigns")]
    async fn list(&self, _auth: AdminAuth, pool: Data<&PgPool>) -> Result<Json<Vec<CampaignView>>, Problem> {
        let all = campaigns::list(&pool).await?;
        Ok(Json(all.into_iter().map(CampaignView::from).collect()))
    }

    /// Show a campaign
    #[oai(path = "/campaigns/:name", method = "get", operation_id = "show_campaign")]
    async fn show(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        name: Path<String>,
    ) -> Result<CampaignResponse, Problem> {
        match campaigns::find(&pool, &name).await? {
            Some(c) => Ok(CampaignResponse::Ok(Json(c.into()))),
            None => Ok(CampaignResponse::NotFound(no_campaign(&name))),
        }
    }

    /// Pause a campaign
    ///
    /// No scheduled broadcast begins while it is paused; broadcasts under way go on.
    #[oai(path = "/campaigns/:name/pause", method = "post", operation_id = "pause_campaign")]
    async fn pause(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        name: Path<String>,
    ) -> Result<CampaignResponse, Problem> {
        set_paused(&pool, &name, true).await
    }

    /// Resume a campaign
    ///
    /// Slots that fell in the pause are skipped: the next broadcast is the next slot from now.
    #[oai(path = "/campaigns/:name/resume", method = "post", operation_id = "resume_campaign")]
    async fn resume(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        name: Path<String>,
    ) -> Result<CampaignResponse, Problem> {
        set_paused(&pool, &name, false).await
    }

    /// Preview the next promo
    ///
    /// The message the campaign's next broadcast (scheduled or sent now) will send.
    #[oai(
        path = "/campaigns/:name/next-promo",
        method = "get",
        operation_id = "preview_next_promo"
    )]
    async fn preview(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        name: Path<String>,
    ) -> Result<PreviewResponse, Problem> {
        match campaigns::next_promo(&pool, &name).await? {
            Some(next) => Ok(PreviewResponse::Ok(Json(next.into()))),
            None => Ok(PreviewResponse::NotFound(no_campaign(&name))),
        }
    }

    /// Send now
    ///
    /// Begins a broadcast of the next promo at once, outside the schedule (also for a paused
    /// campaign), and advances the rotation.
    #[oai(path = "/campaigns/:name/send", method = "post", operation_id = "send_campaign_now")]
    async fn send(&self, _auth: AdminAuth, pool: Data<&PgPool>, name: Path<String>) -> Result<SendResponse, Problem> {
        let mut tx = pool.begin().await?;
        let started = broadcasts::begin(&mut tx, &name, None).await?;
        tx.commit().await?;
        match started {
            Some(started) => Ok(SendResponse::Accepted(Json(started.into()))),
            None => Ok(SendResponse::NotFound(no_campaign(&name))),
        }
    }

    /// Campaign statistics
    ///
    /// Per promo over `[from, to)`: sends, unique clickers, click-through rate, conversions
    /// (payments attributed to the payer's last click within the attribution window),
    /// conversion rate and revenue. `from` defaults to the campaign's creation, `to` to now.
    #[oai(path = "/campaigns/:name/stats", method = "get", operation_id = "campaign_stats")]
    async fn stats(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        name: Path<String>,
        /// Start of the range (RFC 3339), inclusive.
        from: Query<Option<DateTime<Utc>>>,
        /// End of the range (RFC 3339), exclusive.
        to: Query<Option<DateTime<Utc>>>,
    ) -> Result<StatsResponse, Problem> {
        if let (Some(from), Some(to)) = (from.0, to.0)
            && from > to
        {
            return Err(Problem::invalid_request("from must not be after to"));
        }
        match stats::campaign(&pool, &name, from.0, to.0).await? {
            Some(s) => Ok(StatsResponse::Ok(Json(s.into()))),
            None => Ok(StatsResponse::NotFound(no_campaign(&name))),
        }
    }

    /// Broadcast progress
    ///
    /// Recipients by outcome while the broadcast runs, and when it should finish at the send
    /// rate.
    #[oai(path = "/broadcasts/:id", method = "get", operation_id = "show_broadcast")]
    async fn progress(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        settings: Data<&Settings>,
        id: Path<i64>,
    ) -> Result<ProgressResponse, Problem> {
        match broadcasts::progress(&pool, id.0, settings.messages_per_second).await? {
            Some(p) => Ok(ProgressResponse::Ok(Json(p.into()))),
            None => Ok(ProgressResponse::NotFound(Json(
                Problem::not_found(format!("no broadcast {}", id.0)).body(),
            ))),
        }
    }
}
