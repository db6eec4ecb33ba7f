//! Campaigns: their definition (promos, audience, schedule), how ops create and change them, and
//! when their next broadcast is due.
//!
//! A campaign's promos are fixed when it is created and sent in rotation: broadcast `k` sends
//! promo `k mod n`. Their buttons are rendered once, at creation: a deep-link button opens
//! `https://t.me/<bot>?start=promo-<campaign>-<promo>`, a callback button carries
//! `promo:<campaign>:<promo>`, so that a click names what was clicked (see [`crate::tracking`]).
//!
//! # Layout
//! - `schedule`: [`Schedule`] (every N hours or cron), cron parsing with standard weekdays, and
//!   which slot of a campaign is due.
//! - `promo`: promos and their buttons, [`PromoMessage`] rendering, and the checks and spec
//!   conversion ([`CampaignSpec`] to [`NewCampaign`]) a campaign passes before it is stored.
//! - `store`: the SQL: [`create`], [`find`], [`list`], [`set_paused`], [`next_promo`], and what the
//!   scheduler reads; [`Campaign`] as stored.
//!
//! Here: [`Audience`] and [`CampaignError`], which all three share.

mod promo;
mod schedule;
mod store;

use serde::{Deserialize, Serialize};

pub use promo::{
    ButtonAction, CampaignSpec, MAX_BUTTONS, MAX_LISTED_CHATS, MAX_PROMOS, NewCampaign, NewPromo, PromoButton,
    PromoMessage,
};
pub use schedule::{DEFAULT_EVERY_HOURS, Schedule};
pub use store::{Campaign, NextPromo, create, find, list, next_promo, set_paused};
pub(crate) use store::{lock, unpaused};

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
