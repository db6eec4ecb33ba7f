//! The bot's conversation: the commands users write to it in private chats and the buttons they
//! press under its messages, answered from the webhook's transaction.
//!
//! Nothing here calls Telegram. An answer is a `notifications` job keyed by the update
//! (`bot_reply:<update_id>`), so that a repeated update (which the inbox does not hand here
//! anyway) sends nothing twice and every answer keeps the send pace. What needs a provider first
//! (a Stripe Checkout or Billing Portal page, a Stars subscription's invoice link) is a billing
//! request with the chat to answer in; the `checkout` worker that settles it sends the link
//! ([`link_message`]).
//!
//! The bot's buttons carry callback data `plan:<code>` (show the plan and how to pay),
//! `stars:<code>` and `card:<code>` (pay it so), `billing` and `plans` (what `/billing` and
//! `/plans` answer). A
//! `/start plan-<code>` deep link opens a plan.
//!
//! # Layout
//! - this module: commands, choices and their answers.
//! - [`texts`]: every text the bot says, configurable.

pub mod texts;

pub use texts::{Text, Texts};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::access;
use crate::billing::EntitlementsJob;
use crate::billing::entitlements::{self, Entitlement, Provider};
use crate::billing::plans::{Plan, Plans};
use crate::billing::requests::{self, BillingRequest, Created, Kind, RequestStatus};
use crate::billing::stars;
use crate::billing::stripe::customer_of;
use crate::queue::{NewJob, enqueue};
use crate::telegram::{Button, Invoice, MAX_INVOICE_DESCRIPTION_CHARS, SendMessage};

/// Bot is what the conversation is held with: the catalogue it sells and what it says.
#[derive(Debug, Clone, Copy)]
pub struct Bot<'a> {
    pub plans: &'a Plans,
    pub texts: &'a Texts,
}

/// Command is a command the bot knows, as written in a private chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `/start`, with a deep link's payload when there is one.
    Start(Option<&'a str>),
    Plans,
    Buy,
    Status,
    Billing,
    Help,
    /// A command the bot does not know, or text that is not a command.
    Unknown,
}

impl<'a> Command<'a> {
    /// The command `text` is: `/name`, `/name@bot`, `/name payload`.
    pub fn parse(text: &'a str) -> Command<'a> {
        let text = text.trim();
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let name = word.split_once('@').map_or(word, |(name, _)| name);
        match name.to_ascii_lowercase().as_str() {
            "/start" => Command::Start(Some(rest.trim()).filter(|p| !p.is_empty())),
            "/plans" => Command::Plans,
            "/buy" => Command::Buy,
            "/status" => Command::Status,
            "/billing" => Command::Billing,
            "/help" => Command::Help,
            _ => Command::Unknown,
        }
    }
}

/// The commands the bot's menu lists (`setMyCommands`), with their descriptions' texts.
pub const MENU: [(&str, Text); 5] = [
    ("plans", Text::CommandPlans),
    ("buy", Text::CommandBuy),
    ("status", Text::CommandStatus),
    ("billing", Text::CommandBilling),
    ("help", Text::CommandHelp),
];

/// Choice is a press of one of the bot's own buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a> {
    /// Show this plan and how it can be paid.
    Plan(&'a str),
    /// Pay this plan with Telegram Stars.
    Stars(&'a str),
    /// Pay this plan by card, through Stripe Checkout.
    Card(&'a str),
    /// Manage the card subscription: what `/billing` answers.
    Billing,
    /// List the plans: what `/plans` answers.
    Plans,
    /// Send the invite links to the paid chats the user's plans open and they are not in.
    Links,
}

impl<'a> Choice<'a> {
    /// The choice a button's callback data stands for, if it is one of ours.
    pub fn parse(data: &'a str) -> Option<Choice<'a>> {
        match data {
            "billing" => return Some(Choice::Billing),
            "plans" => return Some(Choice::Plans),
            "links" => return Some(Choice::Links),
            _ => {}
        }
        let (kind, code) = data.split_once(':')?;
        match kind {
            "plan" => Some(Choice::Plan(code)),
            "stars" => Some(Choice::Stars(code)),
            "card" => Some(Choice::Card(code)),
            _ => None,
        }
    }

    /// Its callback data (at most 38 bytes: plan codes are at most 32).
    pub fn data(self) -> String {
        match self {
            Choice::Plan(code) => format!("plan:{code}"),
            Choice::Stars(code) => format!("stars:{code}"),
            Choice::Card(code) => format!("card:{code}"),
            Choice::Billing => "billing".to_string(),
            Choice::Plans => "plans".to_string(),
            Choice::Links => "links".to_string(),
        }
    }
}

/// The deep link payload that opens plan `code`: `t.me/<bot>?start=plan-<code>`.
pub fn plan_start_payload(code: &str) -> String {
    format!("plan-{code}")
}

/// Answers `text`, written by `user_id` in its private chat with the bot, in update `update_id`.
/// Run it in the webhook's transaction.
pub async fn on_message(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    update_id: i64,
    user_id: i64,
    text: &str,
) -> Result<(), sqlx::Error> {
    let reply = match Command::parse(text) {
        Command::Start(payload) => match payload.and_then(|p| p.strip_prefix("plan-")) {
            Some(code) => plan_view(conn, bot, user_id, code).await?,
            // Plain, or a promo's deep link (whose click the inbox records).
            None => plan_list(bot, user_id, bot.texts.get(Text::Welcome)),
        },
        Command::Plans | Command::Buy => plan_list(bot, user_id, bot.texts.get(Text::Plans)),
        Command::Status => status(conn, bot, user_id).await?,
        Command::Billing => billing(conn, bot, user_id).await?,
        Command::Help => Some(text_message(user_id, bot.texts.get(Text::Help))),
        Command::Unknown => Some(text_message(
            user_id,
            bot.texts.render(Text::Unknown, &[("help", &bot.texts.get(Text::Help))]),
        )),
    };
    reply_to(conn, update_id, reply).await
}

/// Answers `choice`, a button pressed by `user_id` in its private chat, in update `update_id`.
/// Run it in the webhook's transaction.
pub async fn on_choice(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    update_id: i64,
    user_id: i64,
    choice: Choice<'_>,
) -> Result<(), sqlx::Error> {
    let reply = match choice {
        Choice::Plan(code) => plan_view(conn, bot, user_id, code).await?,
        Choice::Stars(code) => match bot.plans.get(code).filter(|p| p.stars_price.is_some()) {
            None => unavailable(bot, user_id),
            Some(plan) if plan.period_days == stars::SUBSCRIPTION_PERIOD_DAYS => {
                // A Stars subscription: only an invoice link can sell one.
                request_link(conn, bot, user_id, Kind::StarsInvoice, Some(code)).await?
            }
            Some(plan) => match renewing(conn, user_id, code).await? {
                Some(held) => already_subscribed(bot, user_id, plan, &held),
                None => invoice_message(bot, user_id, code, plan),
            },
        },
        Choice::Card(code) => match bot.plans.get(code).filter(|p| p.stripe_price.is_some()) {
            None => unavailable(bot, user_id),
            Some(_) => request_link(conn, bot, user_id, Kind::Checkout, Some(code)).await?,
        },
        Choice::Billing => billing(conn, bot, user_id).await?,
        Choice::Plans => plan_list(bot, user_id, bot.texts.get(Text::Plans)),
        Choice::Links => send_links(conn, bot, update_id, user_id).await?,
    };
    reply_to(conn, update_id, reply).await
}

/// The message that hands the user the link a settled bot request made, or says why there is
/// none; `None` for a request still pending, or from elsewhere than the bot.
pub fn link_message(bot: Bot<'_>, request: &BillingRequest) -> Option<SendMessage> {
    let chat_id = request.reply_chat_id?;
    let plan = request.plan.as_deref().and_then(|code| bot.plans.get(code));
    let plan_name = plan.map_or("", |p| p.name.as_str());
    match (request.status, request.url.as_deref()) {
        (RequestStatus::Ready, Some(url)) => {
            let (text, button) = match request.kind {
                Kind::Checkout => (
                    bot.texts.render(Text::CardLink, &[("plan", plan_name)]),
                    bot.texts.get(Text::PayCardButton),
                ),
                Kind::StarsInvoice => {
                    let stars = plan.and_then(|p| p.stars_price).unwrap_or_default().to_string();
                    (
                        bot.texts
                            .render(Text::StarsLink, &[("plan", plan_name), ("stars", &stars)]),
                        bot.texts.render(Text::PayStarsButton, &[("stars", &stars)]),
                    )
                }
                Kind::Portal => (bot.texts.get(Text::PortalLink), bot.texts.get(Text::PortalButton)),
            };
            Some(SendMessage {
                buttons: vec![vec![Button::url(button, url)]],
                ..text_message(chat_id, text)
            })
        }
        (RequestStatus::Failed, _) => Some(text_message(
            chat_id,
            bot.texts.render(
                Text::LinkFailed,
                &[("reason", request.failure.as_deref().unwrap_or_default())],
            ),
        )),
        _ => None,
    }
}

/// The `notifications` job of [`link_message`], keyed by the request, so that the worker that
/// settles it and a webhook that finds it settled send it once between them.
pub fn link_job(bot: Bot<'_>, request: &BillingRequest) -> Option<NewJob> {
    link_message(bot, request).map(|m| NewJob::new(&m, format!("billing_request_reply:{}", request.id)))
}

async fn reply_to(conn: &mut PgConnection, update_id: i64, reply: Option<SendMessage>) -> Result<(), sqlx::Error> {
    if let Some(message) = reply {
        enqueue(conn, &NewJob::new(&message, format!("bot_reply:{update_id}"))).await?;
    }
    Ok(())
}

/// A message of `text` to `chat_id`, without buttons.
pub fn text_message(chat_id: i64, text: String) -> SendMessage {
    SendMessage {
        chat_id,
        text,
        parse_mode: None,
        buttons: Vec::new(),
        invoice: None,
        broadcast_id: None,
    }
}

/// How a plan can be paid, e.g. `⭐ 250 / 💳 card`.
fn prices(bot: Bot<'_>, plan: &Plan) -> String {
    let stars = plan
        .stars_price
        .map(|stars| bot.texts.render(Text::PriceStars, &[("stars", &stars.to_string())]));
    let card = plan.stripe_price.as_ref().map(|_| bot.texts.get(Text::PriceCard));
    stars.into_iter().chain(card).collect::<Vec<_>>().join(" / ")
}

/// `text` above a button for every plan on sale.
fn plan_list(bot: Bot<'_>, chat_id: i64, text: String) -> Option<SendMessage> {
    let buttons = bot
        .plans
        .iter()
        .filter(|(_, plan)| plan.on_sale())
        .map(|(code, plan)| {
            let label = bot.texts.render(
                Text::PlanButton,
                &[("plan", &plan.name), ("prices", &prices(bot, plan))],
            );
            vec![Button::callback(label, Choice::Plan(code).data())]
        })
        .collect();
    Some(SendMessage {
        buttons,
        ..text_message(chat_id, text)
    })
}

fn unavailable(bot: Bot<'_>, chat_id: i64) -> Option<SendMessage> {
    plan_list(bot, chat_id, bot.texts.get(Text::PlanUnavailable))
}

/// Plan `code` and a button for each way to pay it; what the user holds of it first.
async fn plan_view(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    user_id: i64,
    code: &str,
) -> Result<Option<SendMessage>, sqlx::Error> {
    let Some(plan) = bot.plans.get(code).filter(|p| p.on_sale()) else {
        return Ok(unavailable(bot, user_id));
    };
    if let Some(held) = renewing(conn, user_id, code).await? {
        return Ok(already_subscribed(bot, user_id, plan, &held));
    }
    let days = plan.period_days.to_string();
    let mut text = bot.texts.render(
        Text::Plan,
        &[("plan", &plan.name), ("days", &days), ("prices", &prices(bot, plan))],
    );
    // One-off Stars periods of a plan queue up (see billing::stars): a new one starts when the
    // last ends. A subscription bought now starts now, whatever the user holds.
    if plan.stars_price.is_some() && plan.period_days != stars::SUBSCRIPTION_PERIOD_DAYS {
        let held = entitlements::active_for(&mut *conn, user_id).await?;
        let queued = held
            .iter()
            .filter(|e| e.plan == code && e.provider() == Provider::TelegramStars && !e.renews)
            .filter_map(|e| e.expires_at)
            .max();
        if let Some(until) = queued {
            text.push_str("\n\n");
            text.push_str(
                &bot.texts
                    .render(Text::PlanExtends, &[("plan", &plan.name), ("until", &date(until))]),
            );
        }
    }
    // On sale, so at least one button.
    let mut row = Vec::new();
    if let Some(stars) = plan.stars_price {
        let label = bot.texts.render(Text::PayStarsButton, &[("stars", &stars.to_string())]);
        row.push(Button::callback(label, Choice::Stars(code).data()));
    }
    if plan.stripe_price.is_some() {
        row.push(Button::callback(
            bot.texts.get(Text::PayCardButton),
            Choice::Card(code).data(),
        ));
    }
    Ok(Some(SendMessage {
        buttons: vec![row],
        ..text_message(user_id, text)
    }))
}

/// The user's renewing entitlement to plan `code`, latest first: the purchase guard.
async fn renewing(conn: &mut PgConnection, user_id: i64, code: &str) -> Result<Option<Entitlement>, sqlx::Error> {
    Ok(entitlements::renewing(conn, user_id, code).await?.into_iter().next())
}

fn already_subscribed(bot: Bot<'_>, chat_id: i64, plan: &Plan, held: &Entitlement) -> Option<SendMessage> {
    let text = match held.expires_at.filter(|at| *at > Utc::now()) {
        Some(until) => bot.texts.render(
            Text::AlreadySubscribed,
            &[
                ("plan", &plan.name),
                ("until", &date(until)),
                ("provider", provider(held)),
            ],
        ),
        // A Stripe renewal being charged, or retried after a failed payment.
        None => bot.texts.render(
            Text::AlreadySubscribedRenewing,
            &[("plan", &plan.name), ("provider", provider(held))],
        ),
    };
    Some(text_message(chat_id, text))
}

/// A one-off plan's Stars invoice, sent into the chat (`sendInvoice`).
fn invoice_message(bot: Bot<'_>, chat_id: i64, code: &str, plan: &Plan) -> Option<SendMessage> {
    let days = plan.period_days.to_string();
    let description = bot
        .texts
        .render(Text::InvoiceDescription, &[("plan", &plan.name), ("days", &days)]);
    // Telegram's limit; the configured text is at most 200 characters and a plan sold for Stars
    // has a name of at most 32, so only an unusual combination is cut.
    let description: String = description.chars().take(MAX_INVOICE_DESCRIPTION_CHARS).collect();
    Some(SendMessage {
        invoice: Some(Invoice {
            title: plan.name.clone(),
            payload: code.to_string(),
            amount_stars: plan.stars_price.unwrap_or_default(),
        }),
        ..text_message(chat_id, description)
    })
}

/// A billing request whose link the `checkout` worker sends into the chat; an earlier request
/// that answers this one sends its link now, or once it is settled.
async fn request_link(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    user_id: i64,
    kind: Kind,
    code: Option<&str>,
) -> Result<Option<SendMessage>, sqlx::Error> {
    Ok(
        match requests::create(conn, user_id, kind, code, None, Some(user_id)).await? {
            Created::New(_) => None,
            Created::Existing(request) => match requests::reply_in(conn, request.id, user_id).await? {
                // Pending: its worker sends the link when it settles it.
                None => None,
                Some(settled) => {
                    if let Some(job) = link_job(bot, &settled) {
                        enqueue(conn, &job).await?;
                    }
                    None
                }
            },
            Created::Limited { retry_after } => {
                let minutes = retry_after.as_secs().div_ceil(60).max(1).to_string();
                Some(text_message(
                    user_id,
                    bot.texts.render(Text::RateLimited, &[("minutes", &minutes)]),
                ))
            }
            Created::AlreadySubscribed(held) => {
                let plan = code.and_then(|c| bot.plans.get(c));
                plan.and_then(|plan| already_subscribed(bot, user_id, plan, &held))
            }
        },
    )
}

/// `/status`: every active entitlement, when it ends, whether it renews, and the paid chats it
/// opens; a button for the invite links of those the user is not in.
async fn status(conn: &mut PgConnection, bot: Bot<'_>, user_id: i64) -> Result<Option<SendMessage>, sqlx::Error> {
    let held = entitlements::active_for(conn, user_id).await?;
    if held.is_empty() {
        return Ok(Some(text_message(user_id, bot.texts.get(Text::StatusNone))));
    }
    let joined = access::joined(conn, user_id, &chats_of(bot, &held)).await?;
    let mut lines = vec![bot.texts.get(Text::StatusHeader)];
    let mut missing = false;
    for e in &held {
        let plan = bot.plans.get(&e.plan);
        let name = plan.map_or(e.plan.as_str(), |p| p.name.as_str());
        let until = e.expires_at.map(date).unwrap_or_default();
        let line = if e.renews { Text::StatusRenews } else { Text::StatusEnds };
        lines.push(
            bot.texts
                .render(line, &[("plan", name), ("until", &until), ("provider", provider(e))]),
        );
        let chats = plan.map_or(&[][..], |p| p.chats.as_slice());
        if !chats.is_empty() {
            let inside = chats.iter().filter(|c| joined.contains(c)).count();
            missing |= inside < chats.len();
            let (inside, chats) = (inside.to_string(), chats.len().to_string());
            lines.push(
                bot.texts
                    .render(Text::StatusChats, &[("joined", &inside), ("chats", &chats)]),
            );
        }
    }
    let buttons = if missing {
        vec![vec![Button::callback(
            bot.texts.get(Text::LinksButton),
            Choice::Links.data(),
        )]]
    } else {
        Vec::new()
    };
    Ok(Some(SendMessage {
        buttons,
        ..text_message(user_id, lines.join("\n"))
    }))
}

/// The paid chats the entitlements `held` open, each once.
fn chats_of(bot: Bot<'_>, held: &[Entitlement]) -> Vec<i64> {
    let mut chats: Vec<i64> = (held.iter())
        .filter_map(|e| bot.plans.get(&e.plan))
        .flat_map(|p| p.chats.iter().copied())
        .collect();
    chats.sort_unstable();
    chats.dedup();
    chats
}

/// The links button of `/status`: an access job per paid chat the user's active entitlements
/// open and they are not in, which sends its unused link again or a new one (and nothing here);
/// if there is none, says so.
async fn send_links(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    update_id: i64,
    user_id: i64,
) -> Result<Option<SendMessage>, sqlx::Error> {
    let chats = chats_of(bot, &entitlements::active_for(conn, user_id).await?);
    let joined = access::joined(conn, user_id, &chats).await?;
    let missing: Vec<i64> = chats.into_iter().filter(|c| !joined.contains(c)).collect();
    if missing.is_empty() {
        return Ok(Some(text_message(user_id, bot.texts.get(Text::LinksNone))));
    }
    for chat_id in missing {
        let job = EntitlementsJob::SyncAccess(access::SyncAccess {
            user_id,
            chat_id,
            resend: true,
        });
        enqueue(conn, &NewJob::new(&job, format!("access_ask:{update_id}:{chat_id}"))).await?;
    }
    Ok(None)
}

/// `/billing`: a Billing Portal link for a Stripe customer, what Telegram offers for Stars.
async fn billing(conn: &mut PgConnection, bot: Bot<'_>, user_id: i64) -> Result<Option<SendMessage>, sqlx::Error> {
    if customer_of(conn, user_id).await?.is_some() {
        return request_link(conn, bot, user_id, Kind::Portal, None).await;
    }
    let held = entitlements::active_for(conn, user_id).await?;
    let text = if held.iter().any(|e| e.provider() == Provider::TelegramStars) {
        Text::BillingStars
    } else {
        Text::BillingNone
    };
    Ok(Some(text_message(user_id, bot.texts.get(text))))
}

/// Who charges for an entitlement, as the bot tells users.
fn provider(e: &Entitlement) -> &'static str {
    match e.provider() {
        Provider::Stripe => "card",
        Provider::TelegramStars => "Telegram Stars",
    }
}

fn date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_with_or_without_the_bots_name_and_a_payload() {
        assert_eq!(Command::parse("/start"), Command::Start(None));
        assert_eq!(Command::parse("/start plan-pro"), Command::Start(Some("plan-pro")));
        assert_eq!(Command::parse("/start@paygate_bot  x "), Command::Start(Some("x")));
        assert_eq!(Command::parse("/STATUS"), Command::Status);
        assert_eq!(Command::parse("/buy@paygate_bot"), Command::Buy);
        assert_eq!(Command::parse("/billing"), Command::Billing);
        assert_eq!(Command::parse("/plans"), Command::Plans);
        assert_eq!(Command::parse("/help me"), Command::Help);
        for other in ["/started", "hello", "", "/", "start"] {
            assert_eq!(Command::parse(other), Command::Unknown, "{other:?}");
        }
    }

    #[test]
    fn choices_round_trip_through_callback_data_and_fit_telegrams_limit() {
        let longest = "p".repeat(crate::billing::plans::MAX_CODE_LEN);
        for choice in [
            Choice::Plan(&longest),
            Choice::Stars(&longest),
            Choice::Card("pro"),
            Choice::Billing,
            Choice::Plans,
            Choice::Links,
        ] {
            let data = choice.data();
            assert!(data.len() <= crate::telegram::MAX_CALLBACK_DATA_BYTES, "{data}");
            assert_eq!(Choice::parse(&data), Some(choice));
        }
        for other in ["promo:a:b", "plan", "gold:pro", ""] {
            assert_eq!(Choice::parse(other), None, "{other:?}");
        }
    }
}
