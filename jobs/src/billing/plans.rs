//! Plans: what can be bought, at which price from which provider, and what it entitles to.
//!
//! Plans are configuration, read from `PLANS` (JSON) or the file `PLANS_FILE` names:
//!
//! ```json
//! {"pro_monthly": {"name": "Pro", "entitlement": "pro", "period_days": 30,
//!                  "stripe_price": "price_1Pgc…", "stars_price": 250}}
//! ```

use std::collections::BTreeMap;

use chrono::Duration;
use serde::Deserialize;

use crate::config::{self, ConfigError};

/// The longest plan code: the bot's buttons carry it in callback data, at most 64 bytes.
pub const MAX_CODE_LEN: usize = 32;

/// The longest name of a plan sold for Stars: it is the invoice's title, which Telegram takes up
/// to 32 characters.
pub const MAX_STARS_NAME_CHARS: usize = 32;

/// Plan is one thing a user can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// What users see, e.g. in notifications.
    pub name: String,
    /// The access the plan gives; several plans may give the same.
    pub entitlement: String,
    /// The length of one paid period.
    pub period_days: u32,
    /// The Stripe Price of the plan, when it can be bought through Stripe.
    #[serde(default)]
    pub stripe_price: Option<String>,
    /// The price in Telegram Stars, when it can be bought with Stars.
    #[serde(default)]
    pub stars_price: Option<u32>,
    /// The Telegram groups and channels the plan opens, by id (`-100…`), where the bot is an
    /// administrator that may invite and remove members.
    #[serde(default)]
    pub chats: Vec<i64>,
}

impl Plan {
    /// Whether it is sold at all (a plan kept in `PLANS` only for the entitlements it gave has
    /// no price).
    pub fn on_sale(&self) -> bool {
        self.stars_price.is_some() || self.stripe_price.is_some()
    }

    /// The length of one paid period.
    pub fn period(&self) -> Duration {
        Duration::days(i64::from(self.period_days))
    }
}

/// Plans is the configured catalogue, by plan code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(BTreeMap<String, Plan>);

impl Plans {
    /// Reads `PLANS`, or the file named by `PLANS_FILE`.
    pub fn from_env() -> Result<Plans, ConfigError> {
        match config::inline_or_file("PLANS", "PLANS_FILE")? {
            None => Err(ConfigError {
                var: "PLANS",
                problem: "is not set (nor is PLANS_FILE)".into(),
            }),
            Some((var, json)) => Plans::parse(&json).map_err(|problem| ConfigError { var, problem }),
        }
    }

    /// Parses and checks a catalogue.
    pub fn parse(json: &str) -> Result<Plans, String> {
        let plans: BTreeMap<String, Plan> =
            serde_json::from_str(json).map_err(|e| format!("is not a valid plan catalogue: {e}"))?;
        if plans.is_empty() {
            return Err("names no plan".into());
        }
        for (code, plan) in &plans {
            let fault = |what: &str| Err(format!("plan {code:?}: {what}"));
            if code.is_empty()
                || code.len() > MAX_CODE_LEN
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return fault("a code is 1 to 32 of a-z, 0-9, '_' and '-'");
            }
            if plan.entitlement.trim().is_empty() || plan.name.trim().is_empty() {
                return fault("name and entitlement must not be empty");
            }
            if crate::db::holds_nul(&(&plan.name, &plan.entitlement, &plan.stripe_price)) {
                return fault(&format!(
                    "name, entitlement and stripe_price must not hold {}",
                    crate::db::NUL
                ));
            }
            if plan.stars_price.is_some() && plan.name.chars().count() > MAX_STARS_NAME_CHARS {
                // The name is the title of its Stars invoice.
                return fault(&format!(
                    "a plan sold for Stars has a name of at most {MAX_STARS_NAME_CHARS} characters (Telegram's invoice title)"
                ));
            }
            if plan.period_days == 0 {
                return fault("period_days must be at least 1");
            }
            if plan.stripe_price.as_deref().is_some_and(|p| !p.starts_with("price_")) {
                return fault("stripe_price must be a Stripe Price id (price_…)");
            }
            if plan.stars_price == Some(0) {
                return fault("stars_price must be at least 1");
            }
            if let Some(chat) = plan.chats.iter().find(|c| **c >= 0) {
                return fault(&format!(
                    "chats are group or channel ids, which are negative (-100…): {chat} is not one"
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(chat) = plan.chats.iter().find(|c| !seen.insert(**c)) {
                return fault(&format!("chat {chat} is listed twice"));
            }
        }
        Ok(Plans(plans))
    }

    /// The plan with this code.
    pub fn get(&self, code: &str) -> Option<&Plan> {
        self.0.get(code)
    }

    /// The plan whose Stripe Price is `price`, with its code.
    pub fn by_stripe_price(&self, price: &str) -> Option<(&str, &Plan)> {
        self.0
            .iter()
            .find(|(_, plan)| plan.stripe_price.as_deref() == Some(price))
            .map(|(code, plan)| (code.as_str(), plan))
    }

    /// The plans that open chat `chat_id`, by code.
    pub fn opening(&self, chat_id: i64) -> impl Iterator<Item = (&str, &Plan)> {
        self.iter().filter(move |(_, plan)| plan.chats.contains(&chat_id))
    }

    /// Whether some plan opens chat `chat_id`.
    pub fn is_paid_chat(&self, chat_id: i64) -> bool {
        self.opening(chat_id).next().is_some()
    }

    /// Every plan, by code.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Plan)> {
        self.0.iter().map(|(code, plan)| (code.as_str(), plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOGUE: &str = r#"{"pro_monthly": {"name": "Pro", "entitlement": "pro", "period_days": 30,
        "stripe_price": "price_pro", "stars_price": 250}}"#;

    #[test]
    fn a_catalogue_is_read_by_code_and_by_stripe_price() {
        let plans = Plans::parse(CATALOGUE).unwrap();
        let plan = plans.get("pro_monthly").unwrap();
        assert_eq!(plan.entitlement, "pro");
        assert_eq!(plan.period(), Duration::days(30));
        assert_eq!(plans.by_stripe_price("price_pro").unwrap().0, "pro_monthly");
        assert!(plans.get("gold").is_none());
        assert!(plans.by_stripe_price("price_other").is_none());
    }

    #[test]
    fn malformed_catalogues_are_refused_with_the_reason() {
        for (json, reason) in [
            ("{}", "names no plan"),
            ("[]", "not a valid plan catalogue"),
            (
                r#"{"Pro!": {"name": "Pro", "entitlement": "pro", "period_days": 30}}"#,
                "a code is",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 0}}"#,
                "period_days",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 1, "stripe_price": "prod_1"}}"#,
                "stripe_price",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "", "period_days": 1}}"#,
                "must not be empty",
            ),
            (
                r#"{"pro": {"name": "Pro\u0000", "entitlement": "pro", "period_days": 1}}"#,
                "must not hold",
            ),
            (
                r#"{"pro": {"name": "A name far too long for an invoice", "entitlement": "pro", "period_days": 1, "stars_price": 5}}"#,
                "at most 32 characters",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 1, "colour": "red"}}"#,
                "unknown field",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 1, "chats": [42]}}"#,
                "chats are group or channel ids",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 1, "chats": ["@paid"]}}"#,
                "not a valid plan catalogue",
            ),
            (
                r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 1, "chats": [-1001, -1001]}}"#,
                "listed twice",
            ),
        ] {
            let err = Plans::parse(json).unwrap_err();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }
}
