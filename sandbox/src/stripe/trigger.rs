//! What the fake sends the other way, as Stripe's own tools show it: every webhook delivery with
//! the endpoint's answer (`GET /sandbox/webhooks`, the Dashboard's event deliveries), a delivered
//! event sent again (`POST /sandbox/webhooks/:event/resend`, `stripe events resend`), and the
//! events of any type billing handles, sent on demand for a user's subscription
//! (`POST /sandbox/trigger/:type?user_id=…`, `stripe trigger`).
//!
//! The fake keeps each subscription it has started (by a paid Checkout or a triggered
//! `checkout.session.*`) with its invoices, so that triggered events tie together as Stripe's
//! would: a renewal pays the next invoice (or the one whose payment failed) for the next 30 days,
//! a refund or dispute is of the last paid invoice's charge.

#[allow(unused_imports)]
use super::*;

use crate::stripe_events::Subscription;

/// How long a triggered renewal pays for.
const PERIOD: i64 = 30 * 24 * 60 * 60;

/// How much of an endpoint's answer a delivery keeps.
const ANSWER_KEPT: usize = 2000;

/// Every event type [`FakeStripe::trigger`] sends: the ones billing handles.
pub const TRIGGERS: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "invoice.paid",
    "invoice_payment.paid",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.refunded",
    "charge.dispute.created",
];

/// Delivery is one webhook delivery of one event and what the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The event's id (`evt_…`); a resend delivers the same event again.
    pub event: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub endpoint: String,
    /// The endpoint's HTTP status; none when it could not be reached.
    pub status: Option<u16>,
    /// The start of the endpoint's answer, or why it could not be reached.
    pub answer: String,
    pub delivered_at: i64,
}

impl Delivery {
    /// Whether the endpoint took it (a 2xx), as Stripe counts a delivery as succeeded.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Trigger is what to send: the event type and whose subscription it is about.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Trigger {
    /// The Telegram user the subscription is for.
    pub user_id: i64,
    /// For `checkout.session.*`, which start a subscription: the plan it is for (its metadata).
    pub plan: Option<String>,
    /// For `checkout.session.*`: the Price it bills (`price_sandbox` when not given).
    pub price: Option<String>,
    /// Which of the user's subscriptions (`sub_…`); the latest one the fake started when not given.
    pub subscription: Option<String>,
    /// For `customer.subscription.updated`: its new status (`active` when not given).
    pub status: Option<String>,
    /// For `customer.subscription.updated`: whether it ends at the period's end.
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// For `charge.refunded`: a partial refund instead of a full one.
    #[serde(default)]
    pub partial: bool,
}

/// Triggered is what a trigger sent: the subscription and each event's delivery, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Triggered {
    pub subscription: String,
    pub deliveries: Vec<Delivery>,
}

/// A subscription the fake started, and where its invoices are.
#[derive(Debug, Clone)]
pub(super) struct Life {
    subscription: Subscription,
    // The last invoice issued, the last one paid, and the end of the period paid for.
    issued: u32,
    paid: u32,
    paid_through: i64,
}

impl Life {
    pub(super) fn new(subscription: Subscription) -> Life {
        Life {
            subscription,
            issued: 0,
            paid: 0,
            paid_through: now(),
        }
    }

    /// A subscription a paid Checkout starts, and the events Stripe sends for it:
    /// `checkout.session.completed`, then the first invoice's `invoice.paid` and
    /// `invoice_payment.paid`.
    pub(super) fn paid_checkout(subscription: Subscription, created: i64) -> (Life, Vec<Value>) {
        let mut life = Life::new(subscription);
        let mut events = vec![
            life.subscription
                .checkout_session("checkout.session.completed", "paid", created),
        ];
        events.extend(life.pay(created));
        (life, events)
    }

    /// The events of paying the next invoice (the open one if its payment failed).
    pub(super) fn pay(&mut self, created: i64) -> [Value; 2] {
        let n = if self.issued > self.paid {
            self.issued
        } else {
            self.issued + 1
        };
        self.issued = n;
        self.paid = n;
        self.paid_through = self.paid_through.max(created) + PERIOD;
        [
            self.subscription.invoice_paid(n, self.paid_through, created),
            self.subscription.invoice_payment_paid(n, created),
        ]
    }
}

// A trigger refused before anything was sent: the status and why.
type Refused = (u16, String);

impl FakeStripe {
    /// Every webhook delivery so far, in order, with the endpoint's answers.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.state.lock().unwrap().deliveries.clone()
    }

    /// Sends the events of `event_type` for `asked`'s user to the webhook endpoint, as
    /// `stripe trigger` does; the error is the status and reason the HTTP route answers.
    pub async fn trigger(&self, event_type: &str, asked: &Trigger) -> Result<Triggered, (u16, String)> {
        trigger_events(&self.shared, event_type, asked).await
    }
}

fn no_endpoint() -> Refused {
    (
        409,
        "This fake sends no webhooks: FakeStripe::send_webhooks_to was not called.".into(),
    )
}

/// Signs and posts `events` to the webhook endpoint, one at a time, recording each delivery.
pub(super) async fn deliver(shared: &Shared, events: &[Value]) -> Result<Vec<Delivery>, Refused> {
    let Some((endpoint, secret)) = shared.webhooks.lock().unwrap().clone() else {
        return Err(no_endpoint());
    };
    let client = reqwest::Client::new();
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let payload = event.to_string();
        let at = now();
        let sent = client
            .post(&endpoint)
            .header("Stripe-Signature", sign_webhook(&payload, &secret, at))
            .header("Content-Type", "application/json")
            .body(payload)
            .send()
            .await;
        let (status, answer) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let mut text = response.text().await.unwrap_or_default();
                text.truncate(text.floor_char_boundary(ANSWER_KEPT));
                (Some(status), text)
            }
            Err(e) => (None, format!("unreachable: {e}")),
        };
        let delivery = Delivery {
            event: event["id"].as_str().unwrap_or_default().to_string(),
            event_type: event["type"].as_str().unwrap_or_default().to_string(),
            endpoint: endpoint.clone(),
            status,
            answer,
            delivered_at: at,
        };
        let mut state = shared.state.lock().unwrap();
        state.events.insert(delivery.event.clone(), event.clone());
        state.deliveries.push(delivery.clone());
        deliveries.push(delivery);
    }
    Ok(deliveries)
}

async fn trigger_events(shared: &Shared, event_type: &str, asked: &Trigger) -> Result<Triggered, Refused> {
    if shared.webhooks.lock().unwrap().is_none() {
        return Err(no_endpoint());
    }
    let created = now();
    let (id, events) = events_of(&mut shared.state.lock().unwrap().lives, event_type, asked, created)?;
    let deliveries = deliver(shared, &events).await?;
    Ok(Triggered {
        subscription: id,
        deliveries,
    })
}

// The events `event_type` sends, and the subscription they are about (started when it is a
// checkout's).
fn events_of(
    lives: &mut Vec<Life>,
    event_type: &str,
    asked: &Trigger,
    created: i64,
) -> Result<(String, Vec<Value>), Refused> {
    if !TRIGGERS.contains(&event_type) {
        return Err((
            400,
            format!(
                "The fake cannot trigger {event_type:?}; it triggers {}.",
                TRIGGERS.join(", ")
            ),
        ));
    }
    if let Some(step) = event_type.strip_prefix("checkout.session.") {
        let plan = asked.plan.as_deref().filter(|p| !p.is_empty()).ok_or((
            400,
            format!("{event_type} starts a subscription: say which plan (plan=…)."),
        ))?;
        let price = asked.price.as_deref().unwrap_or("price_sandbox");
        let subscription = Subscription::new(&new_id("", 14), asked.user_id, plan, price);
        let (life, events) = match step {
            "completed" => Life::paid_checkout(subscription, created),
            _ => {
                let mut life = Life::new(subscription);
                let sub = &life.subscription;
                let paid = step != "async_payment_failed";
                let mut events = vec![
                    sub.checkout_session("checkout.session.completed", "unpaid", created),
                    sub.checkout_session(event_type, if paid { "paid" } else { "unpaid" }, created),
                ];
                if paid {
                    events.extend(life.pay(created));
                }
                (life, events)
            }
        };
        let id = life.subscription.id.clone();
        lives.push(life);
        return Ok((id, events));
    }
    let life = lives
        .iter_mut()
        .rev()
        .filter(|l| l.subscription.user_id == asked.user_id)
        .find(|l| asked.subscription.as_ref().is_none_or(|s| *s == l.subscription.id))
        .ok_or_else(|| {
            let which = asked.subscription.as_ref().map(|s| format!(" {s}")).unwrap_or_default();
            let user = asked.user_id;
            let hint = "pay a Checkout or trigger checkout.session.completed first";
            (
                404,
                format!("User {user} has no subscription{which} in this fake: {hint}."),
            )
        })?;
    let paid = life.paid;
    let sub = life.subscription.clone();
    let nothing_paid = || (409, format!("Subscription {} has no paid invoice yet.", sub.id));
    let events = match event_type {
        "invoice.paid" | "invoice_payment.paid" => life.pay(created).to_vec(),
        "invoice.payment_failed" => {
            if life.issued == life.paid {
                life.issued += 1;
            }
            vec![sub.invoice_payment_failed(life.issued, life.paid_through + PERIOD, created)]
        }
        "customer.subscription.created" => vec![sub.subscription("created", "active", false, created)],
        "customer.subscription.updated" => {
            let status = asked.status.as_deref().unwrap_or("active");
            vec![sub.subscription("updated", status, asked.cancel_at_period_end, created)]
        }
        "customer.subscription.deleted" => vec![sub.subscription("deleted", "canceled", false, created)],
        "charge.refunded" if paid > 0 => vec![sub.charge_refunded(paid, !asked.partial, created)],
        "charge.dispute.created" if paid > 0 => vec![sub.dispute_created(paid, created)],
        _ => return Err(nothing_paid()),
    };
    Ok((sub.id, events))
}

/// `POST /sandbox/trigger/:type?user_id=…[&plan=…]`: [`FakeStripe::trigger`] over HTTP.
#[handler]
pub(super) async fn send_trigger(
    Path(event_type): Path<String>,
    query: poem::Result<poem::web::Query<Trigger>>,
    shared: Data<&Arc<Shared>>,
) -> poem::Response {
    let triggered = match query {
        Ok(query) => trigger_events(&shared, &event_type, &query.0).await,
        Err(e) => Err((400, format!("user_id=… names the Telegram user: {e}"))),
    };
    match triggered {
        Ok(triggered) => poem::Response::builder()
            .content_type("application/json")
            .body(serde_json::to_string(&triggered).expect("deliveries serialize")),
        Err(refused) => refused_response(refused),
    }
}

/// `GET /sandbox/webhooks`: every delivery so far.
#[handler]
pub(super) fn list_deliveries(shared: Data<&Arc<Shared>>) -> Json<Vec<Delivery>> {
    Json(shared.state.lock().unwrap().deliveries.clone())
}

/// `POST /sandbox/webhooks/:event/resend`: the event delivered again, as Stripe retries it.
#[handler]
pub(super) async fn resend(Path(event): Path<String>, shared: Data<&Arc<Shared>>) -> poem::Response {
    let sent = shared.state.lock().unwrap().events.get(&event).cloned();
    let Some(sent) = sent else {
        return refused_response((404, format!("No event {event} was delivered.")));
    };
    match deliver(&shared, &[sent]).await {
        Ok(deliveries) => poem::Response::builder()
            .content_type("application/json")
            .body(serde_json::to_string(&deliveries[0]).expect("a delivery serializes")),
        Err(refused) => refused_response(refused),
    }
}

fn refused_response((status, message): Refused) -> poem::Response {
    poem::Response::builder()
        .status(poem::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}
