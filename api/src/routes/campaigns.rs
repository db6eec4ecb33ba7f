//! `/v1/ops/campaigns` and `/v1/ops/broadcasts`: operators create promo campaigns, pause and
//! resume them, preview the next promo, send one now, and watch broadcasts and campaign
//! statistics. The same operations as the `worker campaigns` CLI, through [`jobs::marketing`].
//!
//! Writes stay in the web process's lane: creating a campaign writes its rows; "send now"
//! writes the broadcast with its first fan-out job, in one transaction. Sending is the workers'.

use chrono::{DateTime, Utc};
use jobs::marketing::broadcasts::{self, Progress, Started};
use jobs::marketing::campaigns::{
    self, Audience, ButtonAction, Campaign, CampaignError, CampaignSpec, NewPromo, PromoButton, Schedule,
};
use jobs::marketing::{Settings, stats};
use jobs::telegram as tg;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sqlx::PgPool;

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
#[oai(deny_unknown_fields)]
pub struct PromoButtonRequest {
    /// The button's label.
    pub text: JsonString,
    pub action: Action,
}

/// PromoRequest is one promo of a campaign.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
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
#[oai(deny_unknown_fields)]
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

/// CampaignView is a campaign as it stands.
#[derive(Debug, Object)]
pub struct CampaignView {
    pub name: String,
    pub audience: AudienceKind,
    /// The chats of a `chats` audience; empty otherwise.
    pub chat_ids: Vec<i64>,
    /// Set for an every-N-hours schedule.
    pub every_hours: Option<u32>,
    /// Set for a cron schedule (UTC).
    pub cron: Option<String>,
    /// The promos' names, in rotation order.
    pub promos: Vec<String>,
    /// The promo the next broadcast sends.
    pub next_promo: String,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
    /// The latest scheduled slot that became a broadcast.
    pub last_slot: Option<DateTime<Utc>>,
    /// When the next scheduled broadcast is due; null while paused.
    pub next_slot: Option<DateTime<Utc>>,
}

impl From<Campaign> for CampaignView {
    fn from(c: Campaign) -> CampaignView {
        let (audience, chat_ids) = match c.audience {
            Audience::AllUsers => (AudienceKind::AllUsers, vec![]),
            Audience::WithoutEntitlement => (AudienceKind::WithoutEntitlement, vec![]),
            Audience::Chats { chat_ids } => (AudienceKind::Chats, chat_ids),
        };
        let (every_hours, cron) = match c.schedule {
            Schedule::Every { hours } => (Some(hours), None),
            Schedule::Cron { expression } => (None, Some(expression)),
        };
        CampaignView {
            name: c.name,
            audience,
            chat_ids,
            every_hours,
            cron,
            promos: c.promos,
            next_promo: c.next_promo,
            paused: c.paused,
            created_at: c.created_at,
            last_slot: c.last_slot,
            next_slot: c.next_slot,
        }
    }
}

/// ButtonView is an inline button as sent.
#[derive(Debug, Object)]
pub struct ButtonView {
    pub text: String,
    pub url: Option<String>,
    pub callback_data: Option<String>,
}

/// PromoPreview is the message the campaign's next broadcast sends.
#[derive(Debug, Object)]
pub struct PromoPreview {
    pub campaign: String,
    pub promo: String,
    pub text: String,
    pub parse_mode: Option<ParseMode>,
    /// Rows of inline buttons, with their deep links and callback data rendered.
    pub buttons: Vec<Vec<ButtonView>>,
}

/// BroadcastStarted names the broadcast a send-now began.
#[derive(Debug, Object)]
pub struct BroadcastStarted {
    pub broadcast_id: i64,
    pub campaign: String,
    pub promo: String,
    /// Where to watch it: `GET` for its progress.
    pub status_url: String,
}

impl From<Started> for BroadcastStarted {
    fn from(s: Started) -> BroadcastStarted {
        BroadcastStarted {
            status_url: format!("/v1/ops/broadcasts/{}", s.broadcast_id),
            broadcast_id: s.broadcast_id,
            campaign: s.campaign,
            promo: s.promo,
        }
    }
}

/// BroadcastProgress is where a broadcast stands.
#[derive(Debug, Object)]
pub struct BroadcastProgress {
    pub id: i64,
    pub campaign: String,
    pub promo: String,
    /// The schedule slot it was sent for; null for a send-now.
    pub slot: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Whether every recipient has been queued; until then `total` grows.
    pub fanned_out: bool,
    /// Recipients queued so far.
    pub total: i64,
    pub sent: i64,
    /// Messages whose job died (see the dead jobs of the `notifications` queue).
    pub failed: i64,
    /// Recipients who blocked the bot.
    pub unreachable: i64,
    pub pending: i64,
    /// When the pending messages will have gone out at the broadcast's share (90%) of
    /// `TELEGRAM_MESSAGES_PER_SECOND`; null when nothing is pending.
    pub expected_finish_at: Option<DateTime<Utc>>,
    /// When its per-recipient rows were pruned (`BROADCAST_RETENTION_DAYS` after its fan-out
    /// finished) and these counts kept on the broadcast instead; null until then.
    pub summarised_at: Option<DateTime<Utc>>,
}

impl From<Progress> for BroadcastProgress {
    fn from(p: Progress) -> BroadcastProgress {
        BroadcastProgress {
            id: p.id,
            campaign: p.campaign,
            promo: p.promo,
            slot: p.slot,
            created_at: p.created_at,
            fanned_out: p.fanned_out,
            total: p.total,
            sent: p.sent,
            failed: p.failed,
            unreachable: p.unreachable,
            pending: p.pending,
            expected_finish_at: p.expected_finish_at,
            summarised_at: p.summarised_at,
        }
    }
}

/// Revenue is an amount in one currency, in its smallest unit (cents; Stars are whole).
#[derive(Debug, Object)]
pub struct Revenue {
    pub currency: String,
    pub amount: i64,
}

/// PromoStats are one promo's figures over the range.
#[derive(Debug, Object)]
pub struct PromoStats {
    pub promo: String,
    /// Messages delivered by broadcasts begun in the range.
    pub sends: i64,
    /// Distinct users who clicked one of its buttons in the range.
    pub unique_clickers: i64,
    /// unique_clickers / sends; 0 without sends.
    pub click_through_rate: f64,
    /// Payments in the range attributed (last touch) to its clicks.
    pub conversions: i64,
    /// conversions / unique_clickers; 0 without clickers.
    pub conversion_rate: f64,
    /// The attributed payments' sum, per currency.
    pub revenue: Vec<Revenue>,
}

/// CampaignStats are a campaign's figures per promo over `[from, to)`.
#[derive(Debug, Object)]
pub struct CampaignStats {
    pub campaign: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub promos: Vec<PromoStats>,
}

impl From<stats::CampaignStats> for CampaignStats {
    fn from(s: stats::CampaignStats) -> CampaignStats {
        CampaignStats {
            campaign: s.campaign,
            from: s.from,
            to: s.to,
            promos: s
                .promos
                .into_iter()
                .map(|p| PromoStats {
                    promo: p.promo,
                    sends: p.sends,
                    unique_clickers: p.unique_clickers,
                    click_through_rate: p.click_through_rate,
                    conversions: p.conversions,
                    conversion_rate: p.conversion_rate,
                    revenue: p
                        .revenue
                        .into_iter()
                        .map(|r| Revenue {
                            currency: r.currency,
                            amount: r.amount,
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

fn campaign_response(result: Result<Campaign, CampaignError>) -> Result<CampaignResponse, Problem> {
    match result {
        Ok(c) => Ok(CampaignResponse::Ok(Json(c.into()))),
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
        match campaigns::create(&pool, &campaign, settings.bot_username.as_deref()).await {
            Ok(c) => {
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
        campaign_response(campaigns::set_paused(&pool, &name, true).await)
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
        campaign_response(campaigns::set_paused(&pool, &name, false).await)
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
        let Some(next) = campaigns::next_promo(&pool, &name).await? else {
            return Ok(PreviewResponse::NotFound(no_campaign(&name)));
        };
        Ok(PreviewResponse::Ok(Json(PromoPreview {
            campaign: next.campaign,
            promo: next.promo,
            text: next.message.text,
            parse_mode: next.message.parse_mode.map(ParseMode::from_telegram),
            buttons: next
                .message
                .buttons
                .into_iter()
                .map(|row| row.into_iter().map(button_view).collect())
                .collect(),
        })))
    }

    /// Send now
    ///
    /// Begins a broadcast of the next promo at once, outside the schedule (also for a paused
    /// campaign), and advances the rotation.
    #[oai(path = "/campaigns/:name/send", method = "post", operation_id = "send_campaign_now")]
    async fn send(&self, _auth: AdminAuth, pool: Data<&PgPool>, name: Path<String>) -> Result<SendResponse, Problem> {
        match broadcasts::begin(&pool, &name, None).await? {
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

fn button_view(b: tg::Button) -> ButtonView {
    ButtonView {
        text: b.text,
        url: b.url,
        callback_data: b.callback_data,
    }
}
