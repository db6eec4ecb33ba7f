//! Campaigns: their definition (promos, audience, schedule), how ops create and change them, and
//! when their next broadcast is due.
//!
//! A campaign's promos are fixed when it is created and sent in rotation: broadcast `k` sends
//! promo `k mod n`. Their buttons are rendered once, at creation: a deep-link button opens
//! `https://t.me/<bot>?start=promo-<campaign>-<promo>`, a callback button carries
//! `promo:<campaign>:<promo>`, so that a click names what was clicked (see [`crate::tracking`]).

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::telegram::{Button, ParseMode, SendMessage};
use crate::tracking::Promo;

/// The schedule a campaign gets when none is given: every four hours.
pub const DEFAULT_EVERY_HOURS: u32 = 4;
/// The most promos one campaign rotates through.
pub const MAX_PROMOS: usize = 20;
/// The most buttons one promo carries (one per row).
pub const MAX_BUTTONS: usize = 8;
/// The most chats a `chats` audience lists (their ids fit the API's 64 KiB body limit); larger
/// audiences are the bot's users.
pub const MAX_LISTED_CHATS: usize = 2_000;

/// Audience is who a campaign's broadcasts go to; resolved when each broadcast begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Audience {
    /// Every user who wrote to the bot and has neither blocked it nor been banned.
    AllUsers,
    /// The same, less users with an active entitlement.
    WithoutEntitlement,
    /// These chats (users, groups, channels), less those that blocked the bot.
    Chats { chat_ids: Vec<i64> },
}

impl Audience {
    /// The audience's stored name.
    pub const fn name(&self) -> &'static str {
        match self {
            Audience::AllUsers => "all_users",
            Audience::WithoutEntitlement => "without_entitlement",
            Audience::Chats { .. } => "chats",
        }
    }

    fn from_row(name: &str, chat_ids: Vec<i64>) -> Audience {
        match name {
            "all_users" => Audience::AllUsers,
            "without_entitlement" => Audience::WithoutEntitlement,
            _ => Audience::Chats { chat_ids },
        }
    }

    fn chat_ids(&self) -> &[i64] {
        match self {
            Audience::Chats { chat_ids } => chat_ids,
            _ => &[],
        }
    }
}

/// Schedule is when a campaign's broadcasts are due (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Every `hours` hours, counted from the campaign's creation.
    Every { hours: u32 },
    /// A five-field cron expression: minute, hour, day of month, month, day of week.
    Cron { expression: String },
}

impl Schedule {
    /// Checks the schedule; a cron expression must have five fields and parse.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Schedule::Every { hours } if (1..=8760).contains(hours) => Ok(()),
            Schedule::Every { .. } => Err("every_hours must be 1 to 8760".into()),
            Schedule::Cron { expression } => self::cron(expression).map(|_| ()),
        }
    }

    /// The latest slot at or before `now` and after `created_at`, if any: the one a worker fires.
    /// Slots missed before it are not returned, so a worker that was down catches up with one.
    pub fn latest_slot(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let slot = match self {
            Schedule::Every { hours } => {
                let period = TimeDelta::hours(i64::from(*hours));
                let periods = (now - created_at).num_seconds().div_euclid(period.num_seconds());
                (periods >= 1).then(|| created_at + period * periods as i32)?
            }
            Schedule::Cron { expression } => cron(expression)
                .ok()?
                .after(&(now + TimeDelta::seconds(1)))
                .next_back()?,
        };
        (slot > created_at && slot <= now).then_some(slot)
    }

    /// The first slot after `now`.
    pub fn next_slot(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every { hours } => {
                let period = TimeDelta::hours(i64::from(*hours));
                let periods = (now - created_at).num_seconds().div_euclid(period.num_seconds()).max(0);
                Some(created_at + period * (periods as i32 + 1))
            }
            Schedule::Cron { expression } => cron(expression).ok()?.after(&now).next(),
        }
    }
}

/// The cron crate's schedule for a standard five-field expression. The crate wants seconds first
/// and numbers weekdays 1 (Sunday) to 7, where standard cron has 0 (or 7) for Sunday to 6: the
/// weekday field is handed over as day names.
fn cron(expression: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = fields[..] else {
        return Err(format!(
            "cron {expression:?} has {} fields; give five: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    };
    if day != "*" && day != "?" && weekday != "*" && weekday != "?" {
        // Classic cron fires when either matches; the cron crate when both do. Refused rather
        // than read either way.
        return Err(format!(
            "cron {expression:?} restricts both the day of the month and the weekday; restrict one"
        ));
    }
    let weekday = weekday_names(weekday).map_err(|e| format!("cron {expression:?}: {e}"))?;
    cron::Schedule::from_str(&format!("0 {minute} {hour} {day} {month} {weekday}"))
        .map_err(|e| format!("cron {expression:?}: {e}"))
}

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A standard cron weekday field (`*`, numbers 0-7 with 0 and 7 for Sunday, names, ranges,
/// lists, steps) as the list of day names it selects.
fn weekday_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    // A day as written: 0-7, or a name; Sunday ends a range as 7, so that `SAT-SUN` runs forward.
    let day = |s: &str, ends_range: bool| -> Result<usize, String> {
        match s.parse::<usize>() {
            Ok(n @ 0..=7) => Ok(n),
            Ok(_) => Err(format!("weekday {s} is not 0 to 7")),
            Err(_) => match WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(s)) {
                Some(0) if ends_range => Ok(7),
                Some(n) => Ok(n),
                None => Err(format!("weekday {s:?} is not a number 0 to 7 or SUN to SAT")),
            },
        }
    };
    let mut selected = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<usize>().map_err(|_| format!("step {step:?}"))?),
            None => (item, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => (day(a, false)?, day(b, true)?),
            None if step > 1 => (day(range, false)?, 6),
            None => (day(range, false)?, day(range, false)?),
        };
        if first > last {
            return Err(format!("weekday range {range:?} runs backwards"));
        }
        for d in (first..=last).step_by(step) {
            selected[d % 7] = true;
        }
    }
    Ok(WEEKDAYS
        .iter()
        .zip(selected)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

/// ButtonAction is what a promo button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonAction {
    /// Opens the bot through `t.me/<bot>?start=promo-<campaign>-<promo>`.
    DeepLink,
    /// Sends `promo:<campaign>:<promo>` back to the bot.
    Callback,
}

/// PromoButton is a call-to-action button as ops describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoButton {
    pub text: String,
    pub action: ButtonAction,
}

/// NewPromo is one promo of a campaign being created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPromo {
    pub name: String,
    pub text: String,
    #[serde(default)]
    pub parse_mode: Option<ParseMode>,
    pub buttons: Vec<PromoButton>,
}

/// NewCampaign is a campaign being created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCampaign {
    pub name: String,
    pub audience: Audience,
    pub schedule: Schedule,
    pub promos: Vec<NewPromo>,
}

/// CampaignSpec is a campaign as ops write it (the body of `POST /v1/ops/campaigns`, the file
/// of `worker campaigns create`): flat, with the audience and schedule spelled as fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    /// `all_users`, `without_entitlement` or `chats`.
    pub audience: String,
    #[serde(default)]
    pub chat_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub every_hours: Option<u32>,
    #[serde(default)]
    pub cron: Option<String>,
    pub promos: Vec<NewPromo>,
}

impl CampaignSpec {
    /// The campaign the spec describes: one audience, at most one schedule (every
    /// [`DEFAULT_EVERY_HOURS`] hours when none is given).
    pub fn into_campaign(self) -> Result<NewCampaign, CampaignError> {
        let invalid = |m: &str| Err(CampaignError::Invalid(m.into()));
        let audience = match (self.audience.as_str(), self.chat_ids) {
            ("chats", Some(chat_ids)) => Audience::Chats { chat_ids },
            ("chats", None) => return invalid("a chats audience needs chat_ids"),
            ("all_users" | "without_entitlement", Some(_)) => {
                return invalid("chat_ids go only with the chats audience");
            }
            ("all_users", None) => Audience::AllUsers,
            ("without_entitlement", None) => Audience::WithoutEntitlement,
            _ => return invalid("audience must be all_users, without_entitlement or chats"),
        };
        let schedule = match (self.every_hours, self.cron) {
            (Some(_), Some(_)) => return invalid("give every_hours or cron, not both"),
            (Some(hours), None) => Schedule::Every { hours },
            (None, Some(expression)) => Schedule::Cron { expression },
            (None, None) => Schedule::Every {
                hours: DEFAULT_EVERY_HOURS,
            },
        };
        Ok(NewCampaign {
            name: self.name,
            audience,
            schedule,
            promos: self.promos,
        })
    }
}

/// PromoMessage is a promo as sent: a message without its chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoMessage {
    pub text: String,
    #[serde(default)]
    pub parse_mode: Option<ParseMode>,
    #[serde(default)]
    pub buttons: Vec<Vec<Button>>,
}

impl PromoMessage {
    /// The message to `chat_id`, as broadcast `broadcast_id` sends it.
    pub fn to(&self, chat_id: i64, broadcast_id: i64) -> SendMessage {
        SendMessage {
            chat_id,
            text: self.text.clone(),
            parse_mode: self.parse_mode,
            buttons: self.buttons.clone(),
            broadcast_id: Some(broadcast_id),
        }
    }
}

/// CampaignError is why a campaign cannot be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(String),
    #[error("a campaign named {0:?} exists already")]
    Exists(String),
    #[error("no campaign named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl NewCampaign {
    /// Checks the campaign and renders its promos' messages. Deep-link buttons need the bot's
    /// username (`bot_username`).
    pub fn render(&self, bot_username: Option<&str>) -> Result<Vec<(String, PromoMessage)>, CampaignError> {
        let invalid = |m: String| CampaignError::Invalid(m);
        if Promo::new(&self.name, "p").is_none() {
            return Err(invalid(format!(
                "campaign name {:?} must be 1 to 24 of A-Z, a-z, 0-9 and _",
                self.name
            )));
        }
        self.schedule.validate().map_err(invalid)?;
        if let Audience::Chats { chat_ids } = &self.audience {
            if chat_ids.is_empty() || chat_ids.len() > MAX_LISTED_CHATS {
                return Err(invalid(format!(
                    "a chats audience lists 1 to {MAX_LISTED_CHATS} chat ids"
                )));
            }
            if chat_ids.contains(&0) {
                return Err(invalid("chat id 0 names no chat".into()));
            }
        }
        if self.promos.is_empty() || self.promos.len() > MAX_PROMOS {
            return Err(invalid(format!("a campaign has 1 to {MAX_PROMOS} promos")));
        }
        let mut rendered = Vec::with_capacity(self.promos.len());
        for promo in &self.promos {
            let Some(names) = Promo::new(&self.name, &promo.name) else {
                return Err(invalid(format!(
                    "promo name {:?} must be 1 to 24 of A-Z, a-z, 0-9 and _",
                    promo.name
                )));
            };
            if rendered.iter().any(|(name, _)| name == &promo.name) {
                return Err(invalid(format!("two promos are named {:?}", promo.name)));
            }
            if promo.buttons.is_empty() || promo.buttons.len() > MAX_BUTTONS {
                return Err(invalid(format!(
                    "promo {:?} needs 1 to {MAX_BUTTONS} buttons",
                    promo.name
                )));
            }
            let mut buttons = Vec::with_capacity(promo.buttons.len());
            for button in &promo.buttons {
                let (url, callback_data) = match button.action {
                    ButtonAction::Callback => (None, Some(names.callback_data())),
                    ButtonAction::DeepLink => {
                        let bot = bot_username.ok_or_else(|| {
                            invalid("a deep_link button needs the bot's username: set TELEGRAM_BOT_USERNAME".into())
                        })?;
                        (
                            Some(format!("https://t.me/{bot}?start={}", names.start_payload())),
                            None,
                        )
                    }
                };
                buttons.push(vec![Button {
                    text: button.text.clone(),
                    url,
                    callback_data,
                }]);
            }
            let message = PromoMessage {
                text: promo.text.clone(),
                parse_mode: promo.parse_mode,
                buttons,
            };
            // Whatever Telegram would refuse in every message is refused now, not per recipient.
            message
                .to(1, 0)
                .validate()
                .map_err(|e| invalid(format!("promo {:?}: {e}", promo.name)))?;
            rendered.push((promo.name.clone(), message));
        }
        Ok(rendered)
    }
}

/// Campaign is a campaign as stored, with what ops want to know about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    pub name: String,
    pub audience: Audience,
    pub schedule: Schedule,
    pub promos: Vec<String>,
    /// The promo the next broadcast sends.
    pub next_promo: String,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
    /// The latest scheduled slot that became a broadcast.
    pub last_slot: Option<DateTime<Utc>>,
    /// When the next scheduled broadcast is due; none while paused.
    pub next_slot: Option<DateTime<Utc>>,
}

type CampaignRow = (
    String,
    String,
    Vec<i64>,
    Option<i32>,
    Option<String>,
    Option<DateTime<Utc>>,
    i32,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Vec<String>,
);

/// The columns [`campaign_of`] reads; the queries below repeat them because sqlx takes only
/// literal SQL.
macro_rules! select_campaign {
    ($tail:literal) => {
        concat!(
            "SELECT c.name, c.audience, c.chat_ids, c.every_hours, c.cron, c.last_slot, c.next_promo,
                    c.paused_at, c.created_at,
                    array(SELECT p.name FROM campaign_promos p WHERE p.campaign = c.name ORDER BY p.position)
             FROM campaigns c ",
            $tail
        )
    };
}

fn campaign_of(row: CampaignRow, now: DateTime<Utc>) -> Campaign {
    let (name, audience, chat_ids, every_hours, cron, last_slot, next_promo, paused_at, created_at, promos) = row;
    let schedule = schedule_of(every_hours, cron);
    let next_slot = match paused_at {
        Some(_) => None,
        None => schedule.next_slot(created_at, now),
    };
    Campaign {
        name,
        audience: Audience::from_row(&audience, chat_ids),
        next_promo: promos
            .get(next_promo as usize % promos.len().max(1))
            .cloned()
            .unwrap_or_default(),
        promos,
        schedule,
        paused: paused_at.is_some(),
        created_at,
        last_slot,
        next_slot,
    }
}

fn schedule_of(every_hours: Option<i32>, cron: Option<String>) -> Schedule {
    match cron {
        Some(expression) => Schedule::Cron { expression },
        None => Schedule::Every {
            hours: every_hours.unwrap_or(DEFAULT_EVERY_HOURS as i32) as u32,
        },
    }
}

/// Creates `campaign` with its rendered promos, in one transaction.
pub async fn create(
    pool: &PgPool,
    campaign: &NewCampaign,
    bot_username: Option<&str>,
) -> Result<Campaign, CampaignError> {
    let promos = campaign.render(bot_username)?;
    let (every_hours, cron) = match &campaign.schedule {
        Schedule::Every { hours } => (Some(*hours as i32), None),
        Schedule::Cron { expression } => (None, Some(expression.as_str())),
    };
    let mut tx = pool.begin().await?;
    let created: Option<String> = sqlx::query_scalar(
        "INSERT INTO campaigns (name, audience, chat_ids, every_hours, cron) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (name) DO NOTHING RETURNING name",
    )
    .bind(&campaign.name)
    .bind(campaign.audience.name())
    .bind(campaign.audience.chat_ids())
    .bind(every_hours)
    .bind(cron)
    .fetch_optional(&mut *tx)
    .await?;
    if created.is_none() {
        return Err(CampaignError::Exists(campaign.name.clone()));
    }
    for (position, (name, message)) in promos.iter().enumerate() {
        sqlx::query("INSERT INTO campaign_promos (campaign, position, name, message) VALUES ($1, $2, $3, $4)")
            .bind(&campaign.name)
            .bind(position as i32)
            .bind(name)
            .bind(sqlx::types::Json(message))
            .execute(&mut *tx)
            .await?;
    }
    let stored = find_in(&mut tx, &campaign.name).await?;
    tx.commit().await?;
    stored.ok_or_else(|| CampaignError::NotFound(campaign.name.clone()))
}

/// The campaign named `name`.
pub async fn find(pool: &PgPool, name: &str) -> Result<Option<Campaign>, sqlx::Error> {
    find_in(&mut *pool.acquire().await?, name).await
}

async fn find_in(conn: &mut PgConnection, name: &str) -> Result<Option<Campaign>, sqlx::Error> {
    let row: Option<CampaignRow> = sqlx::query_as(select_campaign!("WHERE c.name = $1"))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| campaign_of(r, Utc::now())))
}

/// Every campaign, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Campaign>, sqlx::Error> {
    let rows: Vec<CampaignRow> = sqlx::query_as(select_campaign!("ORDER BY c.name"))
        .fetch_all(pool)
        .await?;
    let now = Utc::now();
    Ok(rows.into_iter().map(|r| campaign_of(r, now)).collect())
}

/// Pauses (`paused`) or resumes a campaign. A resumed campaign skips the slots its pause covered:
/// its next broadcast is the next slot after the resume.
pub async fn set_paused(pool: &PgPool, name: &str, paused: bool) -> Result<Campaign, CampaignError> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE campaigns SET
             paused_at = CASE WHEN $2 THEN coalesce(paused_at, now()) END,
             skip_until = CASE WHEN NOT $2 AND paused_at IS NOT NULL THEN now() ELSE skip_until END
         WHERE name = $1",
    )
    .bind(name)
    .bind(paused)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(CampaignError::NotFound(name.into()));
    }
    let campaign = find_in(&mut tx, name).await?;
    tx.commit().await?;
    campaign.ok_or_else(|| CampaignError::NotFound(name.into()))
}

/// NextPromo is the promo a campaign's next broadcast sends, as it will look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextPromo {
    pub campaign: String,
    pub promo: String,
    pub message: PromoMessage,
}

/// The promo the next broadcast of `name` sends.
pub async fn next_promo(pool: &PgPool, name: &str) -> Result<Option<NextPromo>, sqlx::Error> {
    let row: Option<(String, sqlx::types::Json<PromoMessage>)> = sqlx::query_as(
        "SELECT p.name, p.message FROM campaigns c JOIN campaign_promos p ON p.campaign = c.name
         WHERE c.name = $1
           AND p.position = c.next_promo % (SELECT count(*) FROM campaign_promos q WHERE q.campaign = c.name)",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(promo, message)| NextPromo {
        campaign: name.into(),
        promo,
        message: message.0,
    }))
}

/// DueCampaign is what the scheduler reads of a campaign.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DueCampaign {
    pub name: String,
    every_hours: Option<i32>,
    cron: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_slot: Option<DateTime<Utc>>,
    pub skip_until: Option<DateTime<Utc>>,
    pub paused: bool,
}

impl DueCampaign {
    /// The slot to fire now, if one is due that has not fired.
    pub fn due_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let schedule = schedule_of(self.every_hours, self.cron.clone());
        let slot = schedule.latest_slot(self.created_at, now)?;
        let fired = self.last_slot.is_some_and(|last| slot <= last);
        let skipped = self.skip_until.is_some_and(|until| slot <= until);
        (!self.paused && !fired && !skipped).then_some(slot)
    }
}

/// Unpaused campaigns, as the scheduler reads them.
pub(crate) async fn unpaused(pool: &PgPool) -> Result<Vec<DueCampaign>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, every_hours, cron, created_at, last_slot, skip_until, false AS paused
         FROM campaigns WHERE paused_at IS NULL",
    )
    .fetch_all(pool)
    .await
}

/// The campaign `name`, locked for the rest of `conn`'s transaction, so that its rotation and
/// last slot move one broadcast at a time; none if it does not exist.
pub(crate) async fn lock(conn: &mut PgConnection, name: &str) -> Result<Option<DueCampaign>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, every_hours, cron, created_at, last_slot, skip_until, paused_at IS NOT NULL AS paused
         FROM campaigns WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn every_n_hours_fires_the_latest_slot_only() {
        let schedule = Schedule::Every { hours: 4 };
        let created = at("2026-12-01T10:00:00Z");
        assert_eq!(schedule.latest_slot(created, at("2026-12-01T13:59:59Z")), None);
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-01T14:00:00Z")),
            Some(at("2026-12-01T14:00:00Z"))
        );
        // Down for a day: one slot, the latest, not six.
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-02T13:00:00Z")),
            Some(at("2026-12-02T10:00:00Z"))
        );
        assert_eq!(
            schedule.next_slot(created, at("2026-12-02T13:00:00Z")),
            Some(at("2026-12-02T14:00:00Z"))
        );
    }

    #[test]
    fn cron_schedules_fire_their_latest_slot_after_creation() {
        let schedule = Schedule::Cron {
            expression: "30 9 * * *".into(),
        };
        assert_eq!(schedule.validate(), Ok(()));
        let created = at("2026-12-01T10:00:00Z");
        assert_eq!(schedule.latest_slot(created, at("2026-12-02T09:29:00Z")), None);
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-02T09:30:00Z")),
            Some(at("2026-12-02T09:30:00Z"))
        );
        assert_eq!(
            schedule.latest_slot(created, at("2026-12-05T12:00:00Z")),
            Some(at("2026-12-05T09:30:00Z"))
        );
        assert_eq!(
            schedule.next_slot(created, at("2026-12-05T12:00:00Z")),
            Some(at("2026-12-06T09:30:00Z"))
        );
        for bad in [
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "nonsense x y z w",
            "0 9 * * 8",
            "0 9 * * 5-1",
            "0 9 * * FUNDAY",
        ] {
            assert!(Schedule::Cron { expression: bad.into() }.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_weekdays_count_as_standard_cron_does() {
        let latest = |expression: &str, now: &str| {
            Schedule::Cron {
                expression: expression.into(),
            }
            .latest_slot(at("2026-11-01T00:00:00Z"), at(now))
        };
        // 2026-12-06 is a Sunday, 2026-12-07 a Monday, 2026-12-11 a Friday, 2026-12-12 a Saturday.
        assert_eq!(
            latest("0 9 * * 1-5", "2026-12-07T10:00:00Z"),
            Some(at("2026-12-07T09:00:00Z"))
        );
        assert_eq!(
            latest("0 9 * * 1-5", "2026-12-06T10:00:00Z"),
            Some(at("2026-12-04T09:00:00Z"))
        );
        for sunday in ["0", "7", "SUN", "sun"] {
            let expression = format!("0 9 * * {sunday}");
            assert_eq!(
                latest(&expression, "2026-12-07T10:00:00Z"),
                Some(at("2026-12-06T09:00:00Z")),
                "{expression}"
            );
        }
        assert_eq!(
            latest("0 9 * * 5-7", "2026-12-06T08:00:00Z"),
            Some(at("2026-12-05T09:00:00Z"))
        );
        assert_eq!(
            latest("0 9 * * MON,FRI", "2026-12-10T10:00:00Z"),
            Some(at("2026-12-07T09:00:00Z"))
        );
        assert_eq!(
            latest("0 9 * * */2", "2026-12-08T10:00:00Z"),
            Some(at("2026-12-08T09:00:00Z"))
        );
        assert_eq!(weekday_names("*/2"), Ok("SUN,TUE,THU,SAT".into()));
        assert_eq!(weekday_names("1/2"), Ok("MON,WED,FRI".into()));
        assert_eq!(weekday_names("7-7"), Ok("SUN".into()));
        assert_eq!(weekday_names("SAT-SUN"), Ok("SUN,SAT".into()));
        assert_eq!(weekday_names("MON-SUN"), Ok("SUN,MON,TUE,WED,THU,FRI,SAT".into()));
        assert_eq!(weekday_names("5-07"), Ok("SUN,FRI,SAT".into()));
        for bad in ["7-3", "SUN-SAT-MON", "", "1,", "x/2", "1/0", "8"] {
            assert!(weekday_names(bad).is_err(), "{bad}");
        }
        assert!(
            Schedule::Cron {
                expression: "0 9 1 * MON".into()
            }
            .validate()
            .is_err(),
            "day of month and weekday both restricted"
        );
    }

    #[test]
    fn a_fired_or_skipped_slot_does_not_fire_again() {
        let mut due = DueCampaign {
            name: "c".into(),
            every_hours: Some(1),
            cron: None,
            created_at: at("2026-12-01T10:00:00Z"),
            last_slot: None,
            skip_until: None,
            paused: false,
        };
        let now = at("2026-12-01T12:30:00Z");
        assert_eq!(due.due_slot(now), Some(at("2026-12-01T12:00:00Z")));
        due.last_slot = Some(at("2026-12-01T12:00:00Z"));
        assert_eq!(due.due_slot(now), None);
        due.last_slot = Some(at("2026-12-01T11:00:00Z"));
        due.skip_until = Some(at("2026-12-01T12:10:00Z"));
        assert_eq!(due.due_slot(now), None);
        assert_eq!(
            due.due_slot(at("2026-12-01T13:00:00Z")),
            Some(at("2026-12-01T13:00:00Z"))
        );
    }

    fn campaign() -> NewCampaign {
        NewCampaign {
            name: "winter".into(),
            audience: Audience::AllUsers,
            schedule: Schedule::Every { hours: 4 },
            promos: vec![NewPromo {
                name: "a".into(),
                text: "Go *Pro*".into(),
                parse_mode: Some(ParseMode::MarkdownV2),
                buttons: vec![
                    PromoButton {
                        text: "Get Pro".into(),
                        action: ButtonAction::DeepLink,
                    },
                    PromoButton {
                        text: "Tell me more".into(),
                        action: ButtonAction::Callback,
                    },
                ],
            }],
        }
    }

    #[test]
    fn promos_render_their_buttons_payloads() {
        let rendered = campaign().render(Some("paygate_bot")).unwrap();
        let buttons = &rendered[0].1.buttons;
        assert_eq!(
            buttons[0][0].url.as_deref(),
            Some("https://t.me/paygate_bot?start=promo-winter-a")
        );
        assert_eq!(buttons[1][0].callback_data.as_deref(), Some("promo:winter:a"));
    }

    #[test]
    fn invalid_campaigns_are_refused_with_a_reason() {
        let refused = |c: NewCampaign, bot: Option<&str>| match c.render(bot) {
            Err(CampaignError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(refused(campaign(), None).contains("TELEGRAM_BOT_USERNAME"));
        let mut c = campaign();
        c.name = "has-dash".into();
        assert!(refused(c, Some("b")).contains("campaign name"));
        let mut c = campaign();
        c.promos.push(c.promos[0].clone());
        assert!(refused(c, Some("b")).contains("two promos"));
        let mut c = campaign();
        c.promos[0].buttons.clear();
        assert!(refused(c, Some("b")).contains("buttons"));
        let mut c = campaign();
        c.promos[0].text = "x".repeat(5000);
        assert!(refused(c, Some("b")).contains("longer"));
        let mut c = campaign();
        c.audience = Audience::Chats { chat_ids: vec![] };
        assert!(refused(c, Some("b")).contains("chat ids"));
        let mut c = campaign();
        c.schedule = Schedule::Every { hours: 0 };
        assert!(refused(c, Some("b")).contains("every_hours"));
        let mut c = campaign();
        c.promos.clear();
        assert!(refused(c, Some("b")).contains("promos"));
    }
}
