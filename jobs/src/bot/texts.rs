//! What the bot says: every text of its conversation, with English defaults, each of which
//! `BOT_TEXTS` (a JSON object of name to text) or the file `BOT_TEXTS_FILE` names may replace.
//!
//! A text may use the placeholders its name lists (`{plan}`, `{until}` …), filled in when it is
//! sent. An unknown name, or a placeholder the text does not offer, stops the process at start:
//! a typo must not reach a subscriber as `{plna}`.

use std::collections::HashMap;

use crate::config::{self, ConfigError};

macro_rules! texts {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal [$($placeholder:literal),*] $default:literal;)*) => {
        /// Text names one thing the bot says.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Text {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Text {
            /// Every text, in the order they are documented.
            pub const ALL: &'static [Text] = &[$(Text::$variant,)*];

            /// Its name in `BOT_TEXTS`.
            pub const fn name(self) -> &'static str {
                match self { $(Text::$variant => $name,)* }
            }

            /// The placeholders it may use.
            pub const fn placeholders(self) -> &'static [&'static str] {
                match self { $(Text::$variant => &[$($placeholder),*],)* }
            }

            /// What it says unless configured otherwise.
            pub const fn default_text(self) -> &'static str {
                match self { $(Text::$variant => $default,)* }
            }
        }
    };
}

texts! {
    /// The answer to `/start`, above the plans' buttons.
    Welcome = "welcome" []
        "👋 Welcome! Subscribe to a plan below to get access. /status shows what you have, /help what else I can do.";
    /// The answer to `/plans` and `/buy`, above the plans' buttons.
    Plans = "plans" []
        "Choose a plan:";
    /// The label of a plan's button in a list of plans.
    PlanButton = "plan_button" ["plan", "prices"]
        "{plan} · {prices}";
    /// One plan, above its payment buttons.
    Plan = "plan" ["plan", "days", "prices"]
        "{plan}: {days} days of access for {prices}.\nHow would you like to pay?";
    /// Added to [`Text::Plan`] of a plan sold once for Stars when the user has a period of it
    /// bought so, which a new one follows.
    PlanExtends = "plan_extends" ["plan", "until"]
        "You have {plan} until {until}; paying with Stars now adds a period after that.";
    /// A price in Stars, in a plan's prices.
    PriceStars = "price_stars" ["stars"]
        "⭐ {stars}";
    /// Paying by card, in a plan's prices (the card price is Stripe's, shown on its page).
    PriceCard = "price_card" []
        "💳 card";
    /// The button that pays a plan with Stars.
    PayStarsButton = "pay_stars_button" ["stars"]
        "Pay ⭐ {stars}";
    /// The button that pays a plan by card.
    PayCardButton = "pay_card_button" []
        "💳 Pay by card";
    /// The invoice's description, when a plan is sold with `sendInvoice` (1 to 255 characters).
    InvoiceDescription = "invoice_description" ["plan", "days"]
        "{plan}: {days} days of access.";
    /// The message with a Stars subscription's pay button.
    StarsLink = "stars_link" ["plan", "stars"]
        "{plan} renews every 30 days for ⭐ {stars}; cancel any time in Telegram. Tap to subscribe:";
    /// The message with a Stripe Checkout pay button.
    CardLink = "card_link" ["plan"]
        "Tap to pay for {plan} by card (the page is Stripe's; the link works for 24 hours):";
    /// The message with a Billing Portal button.
    PortalLink = "portal_link" []
        "Change your card, see your invoices or cancel your subscription:";
    /// The Billing Portal button.
    PortalButton = "portal_button" []
        "Manage billing";
    /// A payment link the provider could not make.
    LinkFailed = "link_failed" ["reason"]
        "Sorry, that did not work: {reason}\nPlease try again in a moment.";
    /// The user already subscribes to the plan, and it renews.
    AlreadySubscribed = "already_subscribed" ["plan", "until", "provider"]
        "You already subscribe to {plan} ({provider}); it renews on {until}. /billing manages it.";
    /// The user subscribes to the plan, and its renewal is being charged (or retried) now.
    AlreadySubscribedRenewing = "already_subscribed_renewing" ["plan", "provider"]
        "You already subscribe to {plan} ({provider}); its renewal is in progress. /billing manages it.";
    /// Too many payment links asked for in a short time.
    RateLimited = "rate_limited" ["minutes"]
        "You have asked for many payment links in a short time. Please try again in {minutes} min.";
    /// A button or link for a plan that is no longer sold (that way), above the plans' buttons.
    PlanUnavailable = "plan_unavailable" []
        "That plan is not available any more. Here is what you can choose from:";
    /// `/status` without an active entitlement.
    StatusNone = "status_none" []
        "You have no active plan. /plans shows what you can subscribe to.";
    /// `/status`: the first line, above one line per active entitlement.
    StatusHeader = "status_header" []
        "Your access:";
    /// `/status`: one active entitlement that renews by itself.
    StatusRenews = "status_renews" ["plan", "until", "provider"]
        "• {plan}: renews on {until} ({provider})";
    /// `/status`: one active entitlement that ends unless paid again.
    StatusEnds = "status_ends" ["plan", "until", "provider"]
        "• {plan}: until {until}, does not renew ({provider})";
    /// `/status`: under an entitlement whose plan opens paid chats, how many the user is in.
    StatusChats = "status_chats" ["joined", "chats"]
        "   private chats: you are in {joined} of {chats}";
    /// `/status`: the button that sends the invite links of the paid chats the user is not in.
    LinksButton = "links_button" []
        "🔑 Send my invite links";
    /// The links button pressed by a user who is in every chat their plans open.
    LinksNone = "links_none" []
        "You are in every private chat your plans open.";
    /// `/billing` for a user with no card subscription but one paid with Stars.
    BillingStars = "billing_stars" []
        "Stars subscriptions are managed in Telegram: Settings → My Stars, then your subscription. Cancelled, it lasts until the end of the paid month.";
    /// `/billing` for a user who pays for nothing.
    BillingNone = "billing_none" []
        "You have nothing to manage yet. /plans shows what you can subscribe to.";
    /// `/help`.
    Help = "help" []
        "/plans: what you can subscribe to\n/buy: subscribe to a plan\n/status: your access and when it ends\n/billing: manage your payment\n/help: this message";
    /// A command the bot does not know, or a message that is not a command.
    Unknown = "unknown" ["help"]
        "Sorry, I did not understand that.\n\n{help}";
    /// Before an entitlement that will not renew by itself ends (`REMINDER_HOURS` before), above
    /// a button to renew it.
    Reminder = "reminder" ["plan", "until"]
        "⏳ Your {plan} access ends on {until}. Renew it to keep your access:";
    /// The button under a reminder or an expiry, which opens the plan.
    RenewButton = "renew_button" ["plan"]
        "Renew {plan}";
    /// An entitlement ended at the end of its paid period, above a button to renew it.
    Expired = "expired" ["plan"]
        "Your {plan} access has ended. You can renew it any time:";
    /// An entitlement became active (bought, or bought again after it ended).
    Activated = "activated" ["plan", "until"]
        "✅ Your {plan} access is active until {until}. Thank you!";
    /// A suspended entitlement is active again.
    Restored = "restored" ["plan", "until"]
        "✅ Your {plan} access is restored until {until}.";
    /// A paid period was added (a renewal, or a one-off period bought again).
    Renewed = "renewed" ["plan", "until"]
        "🔄 Your {plan} access is renewed until {until}.";
    /// A subscription was cancelled at its period's end.
    WillNotRenew = "will_not_renew" ["plan", "until"]
        "Your {plan} plan will not renew. Your access lasts until {until}.";
    /// A cancelled subscription was resumed.
    WillRenew = "will_renew" ["plan", "until"]
        "🔄 Your {plan} plan will renew on {until}.";
    /// An entitlement was suspended; `{why}` is one of the `why_…` texts.
    Suspended = "suspended" ["plan", "why"]
        "⏸ Your {plan} access is suspended: {why}.";
    /// An entitlement was revoked; `{why}` is one of the `why_…` texts.
    Revoked = "revoked" ["plan", "why"]
        "Your {plan} access has ended: {why}.";
    /// Why, in [`Text::Suspended`] or [`Text::Revoked`]: the subscription was cancelled.
    WhyCancelled = "why_cancelled" []
        "the subscription was cancelled";
    /// Why: the payment was refunded.
    WhyRefunded = "why_refunded" []
        "the payment was refunded";
    /// Why: a payment is disputed (a chargeback).
    WhyDisputed = "why_disputed" []
        "a payment is disputed";
    /// Why: Stripe gave up collecting a renewal.
    WhyUnpaid = "why_unpaid" []
        "the subscription is unpaid";
    /// Why: the subscription was paused.
    WhyPaused = "why_paused" []
        "the subscription is paused";
    /// A card checkout whose payment did not go through.
    CheckoutFailed = "checkout_failed" []
        "Your payment did not go through, so your subscription has not started. You can try again with another payment method.";
    /// A renewal's card payment failed, above the buttons that fix it.
    PaymentFailed = "payment_failed" ["plan"]
        "⚠️ The payment for your {plan} plan failed. Please update your payment method in the billing portal to keep your access.";
    /// The button of [`Text::PaymentFailed`] to the Billing Portal.
    UpdatePaymentButton = "update_payment_button" []
        "Update payment method";
    /// The button of [`Text::PaymentFailed`] to Stripe's page of the unpaid invoice.
    PayInvoiceButton = "pay_invoice_button" []
        "Pay the invoice";
    /// The message with a single-use invite link to a chat the user's plan opens.
    AccessLink = "access_link" ["plan"]
        "🔑 Your {plan} plan opens a private chat. This link lets you in once, and only you:";
    /// The button of [`Text::AccessLink`].
    JoinButton = "join_button" []
        "Join the chat";
    /// The user was removed from a paid chat because their access ended.
    AccessRemoved = "access_removed" ["plan"]
        "Your {plan} access has ended, so you have left its private chat. Subscribe again to come back:";
    /// A request to join a paid chat from a user without access was declined.
    JoinDeclined = "join_declined" []
        "That chat is for subscribers. Subscribe to a plan that opens it, and you will get a link:";
    /// A button that lists the plans.
    PlansButton = "plans_button" []
        "See the plans";
    /// The label of the bot's menu button that opens the Mini App (`MINI_APP_URL`).
    AppButton = "app_button" []
        "My subscription";
    /// The menu's description of `/plans` (`setMyCommands`).
    CommandPlans = "command_plans" []
        "What you can subscribe to";
    /// The menu's description of `/buy`.
    CommandBuy = "command_buy" []
        "Subscribe to a plan";
    /// The menu's description of `/status`.
    CommandStatus = "command_status" []
        "Your access and when it ends";
    /// The menu's description of `/billing`.
    CommandBilling = "command_billing" []
        "Manage your payment";
    /// The menu's description of `/help`.
    CommandHelp = "command_help" []
        "What the bot can do";
}

impl Text {
    /// The longest this text may be, as Telegram takes it: a command's description 256
    /// characters, an invoice's description 255 (with what its placeholders add counted by the
    /// bot when it sends one), a reason or a line of `/status` 200, anything else a message's
    /// 4096 less room for its placeholders and for what `/status` lists under it.
    pub const fn max_chars(self) -> usize {
        match self {
            Text::CommandPlans | Text::CommandBuy | Text::CommandStatus | Text::CommandBilling | Text::CommandHelp => {
                256
            }
            // Telegram shows a few words beside the message field.
            Text::AppButton => 64,
            Text::InvoiceDescription => 200,
            // Parts of a message: a reason inside another text, a line of `/status` per
            // entitlement.
            Text::WhyCancelled
            | Text::WhyRefunded
            | Text::WhyDisputed
            | Text::WhyUnpaid
            | Text::WhyPaused
            | Text::StatusRenews
            | Text::StatusEnds
            | Text::StatusChats => 200,
            _ => 2048,
        }
    }
}

/// Texts is the bot's configured texts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Texts {
    overrides: HashMap<Text, String>,
}

impl Texts {
    /// Reads `BOT_TEXTS`, or the file `BOT_TEXTS_FILE` names; the defaults when neither is set.
    pub fn from_env() -> Result<Texts, ConfigError> {
        match config::inline_or_file("BOT_TEXTS", "BOT_TEXTS_FILE")? {
            None => Ok(Texts::default()),
            Some((var, json)) => Texts::parse(&json).map_err(|problem| ConfigError { var, problem }),
        }
    }

    /// Parses and checks the texts that replace defaults: `{"welcome": "Hi!", …}`.
    pub fn parse(json: &str) -> Result<Texts, String> {
        let given: HashMap<String, String> =
            serde_json::from_str(json).map_err(|e| format!("is not a JSON object of texts: {e}"))?;
        let mut overrides = HashMap::new();
        for (name, text) in given {
            let Some(&key) = Text::ALL.iter().find(|t| t.name() == name) else {
                return Err(format!("names no text the bot sends: {name:?}"));
            };
            if text.trim().is_empty() || text.contains('\0') {
                return Err(format!("text {name:?} is empty or holds U+0000"));
            }
            if text.chars().count() > key.max_chars() {
                return Err(format!("text {name:?} is longer than {} characters", key.max_chars()));
            }
            if let Some(unknown) = placeholders(&text).find(|p| !key.placeholders().contains(p)) {
                return Err(format!(
                    "text {name:?} uses {{{unknown}}}, which it does not offer (it offers: {})",
                    key.placeholders().join(", ")
                ));
            }
            overrides.insert(key, text);
        }
        Ok(Texts { overrides })
    }

    /// `text` with its placeholders filled in from `values` (name, value).
    pub fn render(&self, text: Text, values: &[(&str, &str)]) -> String {
        let template = self.overrides.get(&text).map_or(text.default_text(), String::as_str);
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let filled = after.find('}').and_then(|close| {
                let value = values.iter().find(|(name, _)| *name == &after[..close])?.1;
                Some((value, close))
            });
            match filled {
                Some((value, close)) => {
                    out.push_str(value);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// `text`, which has no placeholders.
    pub fn get(&self, text: Text) -> String {
        self.render(text, &[])
    }
}

/// The `{name}`s in `text` that look like placeholders (a name of a-z and `_`).
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|part| {
        let name = &part[..part.find('}')?];
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_only_their_own_placeholders_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for text in Text::ALL {
            assert!(names.insert(text.name()), "{} twice", text.name());
            for p in placeholders(text.default_text()) {
                assert!(text.placeholders().contains(&p), "{}: {{{p}}}", text.name());
            }
        }
    }

    #[test]
    fn overrides_replace_defaults_and_placeholders_are_filled() {
        let texts = Texts::parse(r#"{"plan": "{plan} for {prices}, {days} d {not a placeholder}"}"#).unwrap();
        assert_eq!(
            texts.render(Text::Plan, &[("plan", "Pro"), ("prices", "⭐ 250"), ("days", "30")]),
            "Pro for ⭐ 250, 30 d {not a placeholder}"
        );
        assert_eq!(texts.get(Text::Plans), "Choose a plan:");
    }

    #[test]
    fn unknown_names_and_placeholders_and_empty_texts_are_refused() {
        for (json, reason) in [
            (r#"{"welcom": "Hi"}"#, "names no text"),
            (r#"{"plan": "{plna}"}"#, "does not offer"),
            (r#"{"help": " "}"#, "empty"),
            (r#"["help"]"#, "not a JSON object"),
        ] {
            let err = Texts::parse(json).unwrap_err();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }
}
