//! Promos and the campaign being created: promo buttons, rendering a promo into the
//! [`PromoMessage`] every broadcast of it sends, the checks a new campaign passes, and the
//! conversion of ops' flat [`CampaignSpec`] into a [`NewCampaign`].

use serde::{Deserialize, Serialize};

use super::{Audience, CampaignError, DEFAULT_EVERY_HOURS, Schedule};
use crate::telegram::{Button, ParseMode, SendMessage};
use crate::tracking::Promo;

/// The most promos one campaign rotates through.
pub const MAX_PROMOS: usize = 20;
/// The most buttons one promo carries (one per row).
pub const MAX_BUTTONS: usize = 8;
/// The most chats a `chats` audience lists (their ids fit the API's 64 KiB body limit); larger
/// audiences are the bot's users.
pub const MAX_LISTED_CHATS: usize = 2_000;

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
            invoice: None,
            broadcast_id: Some(broadcast_id),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
