//! The parts of Stripe's webhook events and objects that billing reads.
//!
//! These are our own small types rather than async-stripe's full ones on purpose: a webhook
//! endpoint receives objects in the API version it was created with, and fields move between
//! versions (2025-03-31.basil took `subscription`, `payment_intent` and `charge` off the invoice).
//! Every field here is optional unless Stripe has sent it in every version, so an event from any
//! version parses and the code says what it does when a field is absent.

use std::collections::HashMap;

use serde::Deserialize;

/// Event is a webhook event's envelope.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix time at which the object was in the state `data.object` shows.
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// Expandable is a reference Stripe sends as an id, or as the object when expanded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

/// The id an optional reference names.
pub fn id_of(reference: &Option<Expandable>) -> Option<&str> {
    reference.as_ref().map(Expandable::id)
}

/// Metadata is an object's key-value metadata; Stripe sends `null` for some nested ones.
pub type Metadata = Option<HashMap<String, String>>;

/// The value of `key` in `metadata`.
pub fn meta<'a>(metadata: &'a Metadata, key: &str) -> Option<&'a str> {
    metadata.as_ref()?.get(key).map(String::as_str)
}

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub created: i64,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub customer: Option<Expandable>,
    #[serde(default)]
    pub subscription: Option<Expandable>,
    #[serde(default)]
    pub invoice: Option<Expandable>,
    /// `paid`, `unpaid` (a delayed method still settling) or `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    /// Before 2025-03-31.basil; since then `parent.subscription_details.subscription`.
    #[serde(default)]
    pub subscription: Option<Expandable>,
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    #[serde(default)]
    pub lines: Option<List<InvoiceLine>>,
    #[serde(default)]
    pub period_end: Option<i64>,
    /// Before basil only; since then `invoice_payment.paid` events link payments.
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    #[serde(default)]
    pub charge: Option<Expandable>,
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    /// In the currency's smallest unit.
    #[serde(default)]
    pub amount_paid: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

impl Invoice {
    /// The subscription the invoice bills, in either API shape.
    pub fn subscription_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| id_of(&d.subscription))
            .or(id_of(&self.subscription))
    }

    /// The subscription's metadata as the invoice carries it (basil and later).
    pub fn subscription_metadata(&self) -> &Metadata {
        static NONE: Metadata = None;
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .map(|d| &d.metadata)
            .unwrap_or(&NONE)
    }

    /// The end of the period the invoice pays for: its lines' latest period end (an invoice's own
    /// `period_end` is the end of the *previous* usage period for subscriptions).
    pub fn paid_through(&self) -> Option<i64> {
        self.lines.as_ref().and_then(|l| {
            l.data
                .iter()
                .filter_map(|line| line.period.as_ref().map(|p| p.end))
                .max()
        })
    }

    /// The Price ids the invoice's lines bill, in either API shape.
    pub fn prices(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().flat_map(|l| &l.data).filter_map(|line| {
            line.pricing
                .as_ref()
                .and_then(|p| p.price_details.as_ref())
                .and_then(|d| d.price.as_deref())
                .or(line.price.as_ref().map(|p| p.id.as_str()))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionDetails {
    #[serde(default)]
    pub subscription: Option<Expandable>,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLine {
    #[serde(default)]
    pub period: Option<Period>,
    #[serde(default)]
    pub pricing: Option<LinePricing>,
    #[serde(default)]
    pub price: Option<PriceRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Period {
    pub end: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinePricing {
    #[serde(default)]
    pub price_details: Option<PriceDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PriceDetails {
    #[serde(default)]
    pub price: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PriceRef {
    pub id: String,
}

/// InvoicePayment links a payment to an invoice (`invoice_payment.paid`, basil and later).
#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePayment {
    pub id: String,
    pub invoice: Expandable,
    pub payment: PaymentLink,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentLink {
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    #[serde(default)]
    pub charge: Option<Expandable>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
}

impl Subscription {
    /// The Price ids the subscription's items bill.
    pub fn prices(&self) -> impl Iterator<Item = &str> {
        self.items
            .iter()
            .flat_map(|l| &l.data)
            .filter_map(|item| item.price.as_ref().map(|p| p.id.as_str()))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default)]
    pub price: Option<PriceRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    /// True only once the whole amount is refunded.
    #[serde(default)]
    pub refunded: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub charge: Expandable,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_basil_invoice_names_its_subscription_metadata_period_and_price() {
        let invoice: Invoice = serde_json::from_value(serde_json::json!({
            "id": "in_1", "customer": "cus_1", "period_end": 100,
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": "sub_1", "metadata": {"plan": "pro"}}},
            "lines": {"data": [
                {"period": {"start": 100, "end": 200},
                 "pricing": {"type": "price_details", "price_details": {"price": "price_pro", "product": "prod_1"}}},
                {"period": {"start": 100, "end": 300}}
            ]}
        }))
        .unwrap();
        assert_eq!(invoice.subscription_id(), Some("sub_1"));
        assert_eq!(meta(invoice.subscription_metadata(), "plan"), Some("pro"));
        assert_eq!(invoice.paid_through(), Some(300));
        assert_eq!(invoice.prices().collect::<Vec<_>>(), ["price_pro"]);
    }

    #[test]
    fn an_older_invoice_names_its_subscription_and_payment_directly() {
        let invoice: Invoice = serde_json::from_value(serde_json::json!({
            "id": "in_2", "subscription": {"id": "sub_2", "object": "subscription"},
            "payment_intent": "pi_2", "charge": "ch_2",
            "lines": {"data": [{"period": {"start": 1, "end": 2}, "price": {"id": "price_old"}}]}
        }))
        .unwrap();
        assert_eq!(invoice.subscription_id(), Some("sub_2"));
        assert_eq!(id_of(&invoice.payment_intent), Some("pi_2"));
        assert_eq!(invoice.prices().collect::<Vec<_>>(), ["price_old"]);
        assert_eq!(meta(invoice.subscription_metadata(), "plan"), None);
    }
}
