//! The objects the campaign and broadcast responses carry, and how each is made from what
//! [`jobs::marketing`] returns. Most mirror a `jobs` type field for field, with the API's own
//! descriptions: `view!` declares those with their `From`.

use chrono::{DateTime, Utc};
use jobs::marketing::broadcasts::{Progress, Started};
use jobs::marketing::campaigns::{Audience, Campaign, NextPromo, Schedule};
use jobs::marketing::stats;
use jobs::telegram as tg;
use poem_openapi::Object;

use super::AudienceKind;
use crate::routes::notifications::ParseMode;

/// Declares a response object (`Debug`, `Object`, every field public). With `from Source`, also
/// `From<Source>`, which destructures `Source` whole, so that the view has exactly its fields
/// (one added to `jobs` does not compile until the view shows it), and takes each across as it
/// is, or through the function after `=>`.
macro_rules! view {
    (@take $field:ident) => {
        $field
    };
    (@take $field:ident $convert:expr) => {
        $convert($field)
    };
    (
        $(#[$attr:meta])*
        $name:ident { $($(#[$field_attr:meta])* $field:ident: $ty:ty),* $(,)? }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Object)]
        #[oai(skip_serializing_if_is_none)]
        pub struct $name {
            $($(#[$field_attr])* pub $field: $ty,)*
        }
    };
    (
        $(#[$attr:meta])*
        $name:ident from $source:path {
            $($(#[$field_attr:meta])* $field:ident: $ty:ty $(=> $convert:expr)?),* $(,)?
        }
    ) => {
        view! { $(#[$attr])* $name { $($(#[$field_attr])* $field: $ty),* } }

        impl From<$source> for $name {
            fn from(source: $source) -> $name {
                let $source { $($field),* } = source;
                $name { $($field: view!(@take $field $($convert)?)),* }
            }
        }
    };
}

/// Each of `items` as its view.
fn each<T, V: From<T>>(items: Vec<T>) -> Vec<V> {
    items.into_iter().map(V::from).collect()
}

view! {
    /// CampaignView is a campaign as it stands.
    CampaignView {
        name: String,
        audience: AudienceKind,
        /// The chats of a `chats` audience; empty otherwise.
        chat_ids: Vec<i64>,
        /// Set for an every-N-hours schedule.
        every_hours: Option<u32>,
        /// Set for a cron schedule (UTC).
        cron: Option<String>,
        /// The promos' names, in rotation order.
        promos: Vec<String>,
        /// The promo the next broadcast sends.
        next_promo: String,
        paused: bool,
        created_at: DateTime<Utc>,
        /// The latest scheduled slot that became a broadcast.
        last_slot: Option<DateTime<Utc>>,
        /// When the next scheduled broadcast is due; absent while paused.
        next_slot: Option<DateTime<Utc>>,
    }
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

view! {
    /// ButtonView is an inline button as sent.
    ButtonView from tg::Button {
        text: String,
        url: Option<String>,
        callback_data: Option<String>,
    }
}

view! {
    /// PromoPreview is the message the campaign's next broadcast sends.
    PromoPreview {
        campaign: String,
        promo: String,
        text: String,
        parse_mode: Option<ParseMode>,
        /// Rows of inline buttons, with their deep links and callback data rendered.
        buttons: Vec<Vec<ButtonView>>,
    }
}

impl From<NextPromo> for PromoPreview {
    fn from(next: NextPromo) -> PromoPreview {
        PromoPreview {
            campaign: next.campaign,
            promo: next.promo,
            text: next.message.text,
            parse_mode: next.message.parse_mode.map(ParseMode::from_telegram),
            buttons: next.message.buttons.into_iter().map(each).collect(),
        }
    }
}

view! {
    /// BroadcastStarted names the broadcast a send-now began.
    BroadcastStarted {
        broadcast_id: i64,
        campaign: String,
        promo: String,
        /// Where to watch it: `GET` for its progress.
        status_url: String,
    }
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

view! {
    /// BroadcastProgress is where a broadcast stands.
    BroadcastProgress from Progress {
        id: i64,
        campaign: String,
        promo: String,
        /// The schedule slot it was sent for; absent for a send-now.
        slot: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        /// Whether every recipient has been queued; until then `total` grows.
        fanned_out: bool,
        /// Recipients queued so far.
        total: i64,
        sent: i64,
        /// Messages whose job died (see the dead jobs of the `notifications` queue).
        failed: i64,
        /// Recipients who blocked the bot.
        unreachable: i64,
        pending: i64,
        /// When the pending messages will have gone out at the broadcast's share (90%) of
        /// `TELEGRAM_MESSAGES_PER_SECOND`; absent when nothing is pending.
        expected_finish_at: Option<DateTime<Utc>>,
        /// When its per-recipient rows were pruned (`BROADCAST_RETENTION_DAYS` after its fan-out
        /// finished) and these counts kept on the broadcast instead; absent until then.
        summarised_at: Option<DateTime<Utc>>,
    }
}

view! {
    /// Revenue is an amount in one currency, in its smallest unit (cents; Stars are whole).
    Revenue from stats::Revenue {
        currency: String,
        amount: i64,
    }
}

view! {
    /// PromoStats are one promo's figures over the range.
    PromoStats from stats::PromoStats {
        promo: String,
        /// Messages delivered by broadcasts begun in the range.
        sends: i64,
        /// Distinct users who clicked one of its buttons in the range.
        unique_clickers: i64,
        /// unique_clickers / sends; 0 without sends.
        click_through_rate: f64,
        /// Payments in the range attributed (last touch) to its clicks.
        conversions: i64,
        /// conversions / unique_clickers; 0 without clickers.
        conversion_rate: f64,
        /// The attributed payments' sum, per currency.
        revenue: Vec<Revenue> => each,
    }
}

view! {
    /// CampaignStats are a campaign's figures per promo over `[from, to)`.
    CampaignStats from stats::CampaignStats {
        campaign: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        promos: Vec<PromoStats> => each,
    }
}
