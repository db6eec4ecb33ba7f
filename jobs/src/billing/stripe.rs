//! Stripe subscriptions as entitlements: the webhook inbox, the facts each event adds, and the
//! entitlement derived from them.
//!
//! Stripe delivers events at least once and in any order. So an event never *sets* the
//! entitlement; it adds facts about its subscription, each merged so that the result does not
//! depend on order:
//! - who and which plan (`stripe_subscriptions`): the first value known is kept (all sources agree);
//! - paid periods (`stripe_invoices`): paid only ever becomes true; an invoice's own period end
//!   replaces the provisional one counted from checkout;
//! - refunds and disputes (`stripe_reversals`): only ever become true;
//! - the subscription's status: the snapshot of the latest event by (`created`, id) wins;
//! - the end of the subscription: the earliest `ended_at` seen.
//!
//! [`derive`] then computes the entitlement from all facts, and [`entitlements::set`] records it
//! if it changed. Merges of one subscription are serialised by a transaction-level advisory lock,
//! so that two events whose facts meet (a refund and the invoice that links its charge) cannot
//! each commit without seeing the other.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::EntitlementsJob;
use super::counters;
use super::entitlements::{self, State, Status};
use super::plans::Plans;
use crate::queue::{Enqueued, JobError, NewJob, enqueue};
use crate::stripe::objects::{
    self, Charge, CheckoutSession, Dispute, Event, Invoice, InvoicePayment, Subscription, id_of, meta,
};
use crate::telegram::{Button, SendMessage};
use crate::tracking::AttributePayment;

/// The metadata key naming the Telegram user on sessions and subscriptions we create.
pub const USER_KEY: &str = "telegram_user_id";
/// The metadata key naming the plan.
pub const PLAN_KEY: &str = "plan";

/// ProcessStripeEvent is the `entitlements` job that applies one stored webhook event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStripeEvent {
    pub event_id: String,
}

/// Ingested says what the inbox did with a webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored, and its processing enqueued.
    New,
    /// Already in the inbox: nothing was written.
    Duplicate,
}

/// Stores a verified webhook event in the inbox and enqueues its processing, in one transaction.
/// `raw` is the request body, stored as Stripe sent it.
pub async fn ingest(pool: &PgPool, event: &Event, raw: &str) -> Result<Ingested, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stored = sqlx::query(
        "INSERT INTO stripe_events (id, type, created, livemode, payload)
         VALUES ($1, $2, to_timestamp($3), $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(event.created as f64)
    .bind(event.livemode)
    .bind(raw)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if stored == 0 {
        tx.rollback().await?;
        return Ok(Ingested::Duplicate);
    }
    let job = NewJob::new(
        &EntitlementsJob::StripeEvent(ProcessStripeEvent {
            event_id: event.id.clone(),
        }),
        format!("stripe_event:{}", event.id),
    );
    let enqueued = enqueue(&mut tx, &job).await?;
    tx.commit().await?;
    Ok(match enqueued {
        Enqueued::New(_) => Ingested::New,
        Enqueued::Duplicate(_) => Ingested::Duplicate,
    })
}

/// Outcome is what processing made of an event, stored in `stripe_events.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An entitlement changed.
    Applied,
    /// Facts were recorded; the entitlement was already right (a repeat, or not yet derivable).
    Recorded,
    /// A message was sent, nothing else changed (a failed payment).
    Notified,
    /// A type or object we do not act on.
    Ignored,
}

impl Outcome {
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Recorded => "recorded",
            Outcome::Notified => "notified",
            Outcome::Ignored => "ignored",
        }
    }
}

/// EventError is an event that cannot be applied however often it is retried.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event {0} is not in the inbox")]
    Missing(String),
    #[error("event {id} ({kind}) has a malformed object: {problem}")]
    Malformed { id: String, kind: String, problem: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<EventError> for JobError {
    fn from(e: EventError) -> JobError {
        match e {
            EventError::Database(e) => e.into(),
            // Retrying cannot make a missing or malformed event good: dead at once, for ops.
            other => JobError::Terminal(other.to_string()),
        }
    }
}

/// Links is where notifications send users.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Where a user opens the Billing Portal (a page that requests a fresh portal session:
    /// portal session URLs themselves expire within minutes).
    pub billing_portal: Option<String>,
}

/// Applies the stored event `event_id`: merges its facts, re-derives the entitlements it touches,
/// enqueues their notifications. Run it inside the job's effect transaction.
pub async fn apply_event(
    conn: &mut PgConnection,
    plans: &Plans,
    links: &Links,
    event_id: &str,
) -> Result<Outcome, EventError> {
    lock_facts(conn).await?;
    let payload: Option<String> = sqlx::query_scalar("SELECT payload FROM stripe_events WHERE id = $1")
        .bind(event_id)
        .fetch_optional(&mut *conn)
        .await?;
    let payload = payload.ok_or_else(|| EventError::Missing(event_id.to_string()))?;
    let event: Event = serde_json::from_str(&payload).map_err(|e| EventError::Malformed {
        id: event_id.to_string(),
        kind: "?".into(),
        problem: e.to_string(),
    })?;
    let cause = format!("stripe_event:{}", event.id);
    let outcome = match event.kind.as_str() {
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.async_payment_failed" => {
            let session: CheckoutSession = object(&event)?;
            on_checkout_session(conn, plans, &event, &session, &cause).await?
        }
        "invoice.paid" => {
            let invoice: Invoice = object(&event)?;
            on_invoice_paid(conn, plans, &event, &invoice, &cause).await?
        }
        "invoice.payment_failed" => {
            let invoice: Invoice = object(&event)?;
            on_invoice_payment_failed(conn, plans, links, &event, &invoice).await?
        }
        "invoice_payment.paid" => {
            let payment: InvoicePayment = object(&event)?;
            record_invoice(
                conn,
                &InvoiceFacts {
                    id: payment.invoice.id(),
                    payment_intent: id_of(&payment.payment.payment_intent),
                    charge: id_of(&payment.payment.charge),
                    ..InvoiceFacts::default()
                },
            )
            .await?;
            let subscriptions = subscriptions_paid_by(conn, &payment_refs(&payment.payment)).await?;
            rederive_all(conn, plans, &subscriptions, &cause).await?
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            let subscription: Subscription = object(&event)?;
            on_subscription(conn, plans, &event, &subscription, &cause).await?
        }
        "charge.refunded" => {
            let charge: Charge = object(&event)?;
            if charge.refunded {
                let payments = [Some(charge.id.as_str()), id_of(&charge.payment_intent)];
                reverse(conn, plans, &payments, Reversal::Refund, &cause).await?
            } else {
                // A partial refund is a gesture, not a cancellation: access stays.
                Outcome::Ignored
            }
        }
        "charge.dispute.created" => {
            let dispute: Dispute = object(&event)?;
            let payments = [Some(dispute.charge.id()), id_of(&dispute.payment_intent)];
            counters::add(conn, "billing_payments_total", "status=\"disputed\"").await?;
            reverse(conn, plans, &payments, Reversal::Dispute, &cause).await?
        }
        _ => Outcome::Ignored,
    };
    sqlx::query("UPDATE stripe_events SET processed_at = now(), outcome = $2 WHERE id = $1")
        .bind(&event.id)
        .bind(outcome.name())
        .execute(&mut *conn)
        .await?;
    Ok(outcome)
}

/// Reversal is what happened to a payment after it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversal {
    /// Its whole amount was refunded.
    Refund,
    /// The card holder disputed it.
    Dispute,
}

/// Records that the payment known by any of `payments` (payment intent and/or charge ids) was
/// reversed, and re-derives the subscriptions it paid for.
pub async fn reverse(
    conn: &mut PgConnection,
    plans: &Plans,
    payments: &[Option<&str>],
    reversal: Reversal,
    cause: &str,
) -> Result<Outcome, sqlx::Error> {
    lock_facts(conn).await?;
    let mut payments: Vec<&str> = payments.iter().flatten().copied().collect();
    // One row per payment: an upsert may not touch the same row twice.
    payments.sort_unstable();
    payments.dedup();
    let (refunded, disputed) = match reversal {
        Reversal::Refund => (true, false),
        Reversal::Dispute => (false, true),
    };
    let already_refunded: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stripe_reversals WHERE payment = ANY($1) AND refunded)")
            .bind(&payments)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query(
        "INSERT INTO stripe_reversals (payment, refunded, disputed)
         SELECT unnest($1::text[]), $2, $3
         ON CONFLICT (payment) DO UPDATE SET
             refunded = stripe_reversals.refunded OR excluded.refunded,
             disputed = stripe_reversals.disputed OR excluded.disputed,
             updated_at = now()",
    )
    .bind(&payments)
    .bind(refunded)
    .bind(disputed)
    .execute(&mut *conn)
    .await?;
    if reversal == Reversal::Refund && !already_refunded {
        counters::add(conn, "billing_payments_total", "status=\"refunded\"").await?;
    }
    let subscriptions = subscriptions_paid_by(conn, &payments).await?;
    rederive_all(conn, plans, &subscriptions, cause).await
}

/// Serialises fact merges (see the module documentation). One lock for all of Stripe: events
/// are few next to the cost of getting a cross-row merge wrong.
async fn lock_facts(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // 0x5354524950 is "STRIP" in ASCII: a constant no other lock in the schema uses.
    sqlx::query("SELECT pg_advisory_xact_lock(357895047760)")
        .execute(conn)
        .await
        .map(|_| ())
}

fn object<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, EventError> {
    T::deserialize(&event.data.object).map_err(|e| EventError::Malformed {
        id: event.id.clone(),
        kind: event.kind.clone(),
        problem: e.to_string(),
    })
}

async fn on_checkout_session(
    conn: &mut PgConnection,
    plans: &Plans,
    event: &Event,
    session: &CheckoutSession,
    cause: &str,
) -> Result<Outcome, EventError> {
    let (Some("subscription"), Some(subscription)) = (session.mode.as_deref(), id_of(&session.subscription)) else {
        return Ok(Outcome::Ignored);
    };
    let user_id = session
        .client_reference_id
        .as_deref()
        .or(meta(&session.metadata, USER_KEY))
        .and_then(|u| u.parse::<i64>().ok());
    let plan = meta(&session.metadata, PLAN_KEY).filter(|p| plans.get(p).is_some());
    let customer = id_of(&session.customer);
    record_subscription(conn, subscription, user_id, plan, customer).await?;
    if let (Some(user_id), Some(customer)) = (user_id, customer) {
        remember_customer(conn, user_id, customer).await?;
    }
    let paid = matches!(session.payment_status.as_deref(), Some("paid" | "no_payment_required"));
    if event.kind == "checkout.session.async_payment_failed" {
        counters::add(conn, "billing_payments_total", "status=\"failed\"").await?;
        if let Some(user_id) = user_id {
            let message = SendMessage {
                chat_id: user_id,
                text: "Your payment did not go through, so your subscription has not started. \
                       You can try again with another payment method."
                    .into(),
                parse_mode: None,
                buttons: Vec::new(),
                broadcast_id: None,
            };
            enqueue(conn, &NewJob::new(&message, format!("{cause}:notice"))).await?;
            return Ok(Outcome::Notified);
        }
        return Ok(Outcome::Recorded);
    }
    if paid {
        // Until the invoice's own event arrives, the first period is the plan's, from checkout.
        let provisional_end = plan
            .and_then(|p| plans.get(p))
            .map(|p| timestamp(session.created) + p.period());
        let invoice = id_of(&session.invoice)
            .map(str::to_string)
            .unwrap_or_else(|| format!("checkout:{}", session.id));
        let newly = record_invoice(
            conn,
            &InvoiceFacts {
                id: &invoice,
                subscription: Some(subscription),
                paid: true,
                period_end: provisional_end,
                period_exact: false,
                ..InvoiceFacts::default()
            },
        )
        .await?;
        if newly {
            counters::add(conn, "billing_payments_total", "status=\"paid\"").await?;
        }
    }
    Ok(rederive(conn, plans, subscription, cause).await?)
}

async fn on_invoice_paid(
    conn: &mut PgConnection,
    plans: &Plans,
    event: &Event,
    invoice: &Invoice,
    cause: &str,
) -> Result<Outcome, EventError> {
    let Some(subscription) = invoice.subscription_id() else {
        return Ok(Outcome::Ignored);
    };
    let metadata = invoice.subscription_metadata();
    let user_id = meta(metadata, USER_KEY).and_then(|u| u.parse::<i64>().ok());
    let plan = plan_of(plans, meta(metadata, PLAN_KEY), invoice.prices());
    record_subscription(conn, subscription, user_id, plan, id_of(&invoice.customer)).await?;
    let newly = record_invoice(
        conn,
        &InvoiceFacts {
            id: &invoice.id,
            subscription: Some(subscription),
            paid: true,
            period_end: invoice.paid_through().map(timestamp),
            period_exact: invoice.paid_through().is_some(),
            payment_intent: id_of(&invoice.payment_intent),
            charge: id_of(&invoice.charge),
        },
    )
    .await?;
    if newly {
        counters::add(conn, "billing_payments_total", "status=\"paid\"").await?;
    }
    // Not only when newly paid: a checkout may have recorded this invoice paid first. The job's
    // key (the invoice) makes a repeat queue nothing.
    attribute_invoice(conn, event, invoice, subscription).await?;
    Ok(rederive(conn, plans, subscription, cause).await?)
}

/// Queues the attribution of a paid invoice to a promo click, when it charged something and its
/// subscriber is known. Only `invoice.paid` does this: it names every paid invoice by its own id,
/// with its amount.
async fn attribute_invoice(
    conn: &mut PgConnection,
    event: &Event,
    invoice: &Invoice,
    subscription: &str,
) -> Result<(), sqlx::Error> {
    let (Some(amount), Some(currency)) = (invoice.amount_paid.filter(|a| *a > 0), &invoice.currency) else {
        return Ok(());
    };
    let user_id: Option<i64> = sqlx::query_scalar("SELECT user_id FROM stripe_subscriptions WHERE id = $1")
        .bind(subscription)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
    let Some(user_id) = user_id else {
        return Ok(());
    };
    let payment = AttributePayment {
        payment: format!("stripe:{}", invoice.id),
        user_id,
        amount,
        currency: currency.clone(),
        paid_at: timestamp(event.created),
    };
    enqueue(conn, &payment.job()).await.map(|_| ())
}

async fn on_invoice_payment_failed(
    conn: &mut PgConnection,
    plans: &Plans,
    links: &Links,
    event: &Event,
    invoice: &Invoice,
) -> Result<Outcome, EventError> {
    counters::add(conn, "billing_payments_total", "status=\"failed\"").await?;
    let subscription = invoice.subscription_id();
    let known: Option<(Option<i64>, Option<String>)> = match subscription {
        Some(id) => {
            sqlx::query_as("SELECT user_id, plan FROM stripe_subscriptions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        None => None,
    };
    let metadata = invoice.subscription_metadata();
    let by_customer: Option<i64> = match id_of(&invoice.customer) {
        Some(customer) => {
            sqlx::query_scalar("SELECT user_id FROM stripe_customers WHERE customer = $1")
                .bind(customer)
                .fetch_optional(&mut *conn)
                .await?
        }
        None => None,
    };
    let user_id = meta(metadata, USER_KEY)
        .and_then(|u| u.parse::<i64>().ok())
        .or(known.as_ref().and_then(|k| k.0))
        .or(by_customer);
    let Some(user_id) = user_id else {
        return Ok(Outcome::Ignored);
    };
    let plan_name = plan_of(plans, meta(metadata, PLAN_KEY), invoice.prices())
        .or(known.as_ref().and_then(|k| k.1.as_deref()))
        .and_then(|code| plans.get(code))
        .map(|p| p.name.as_str())
        .unwrap_or("subscription");
    let mut buttons = Vec::new();
    if let Some(portal) = &links.billing_portal {
        buttons.push(vec![Button {
            text: "Update payment method".into(),
            url: Some(portal.clone()),
            callback_data: None,
        }]);
    }
    if let Some(url) = &invoice.hosted_invoice_url {
        buttons.push(vec![Button {
            text: "Pay the invoice".into(),
            url: Some(url.clone()),
            callback_data: None,
        }]);
    }
    let message = SendMessage {
        chat_id: user_id,
        text: format!(
            "⚠️ The payment for your {plan_name} plan failed. Please update your payment method \
             in the billing portal to keep your access."
        ),
        parse_mode: None,
        buttons,
        broadcast_id: None,
    };
    enqueue(
        conn,
        &NewJob::new(&message, format!("stripe_event:{}:notice", event.id)),
    )
    .await?;
    Ok(Outcome::Notified)
}

async fn on_subscription(
    conn: &mut PgConnection,
    plans: &Plans,
    event: &Event,
    subscription: &Subscription,
    cause: &str,
) -> Result<Outcome, EventError> {
    let user_id = meta(&subscription.metadata, USER_KEY).and_then(|u| u.parse::<i64>().ok());
    let plan = plan_of(plans, meta(&subscription.metadata, PLAN_KEY), subscription.prices());
    let customer = id_of(&subscription.customer);
    record_subscription(conn, &subscription.id, user_id, plan, customer).await?;
    sqlx::query(
        "UPDATE stripe_subscriptions
         SET status = $2, cancel_at_period_end = $3, status_created = to_timestamp($4), status_event = $5,
             updated_at = now()
         WHERE id = $1
           AND (status_created IS NULL OR (status_created, status_event) < (to_timestamp($4), $5))",
    )
    .bind(&subscription.id)
    .bind(&subscription.status)
    .bind(subscription.cancel_at_period_end)
    .bind(event.created as f64)
    .bind(&event.id)
    .execute(&mut *conn)
    .await?;
    let ended = match (event.kind.as_str(), subscription.ended_at) {
        (_, Some(at)) => Some(at),
        ("customer.subscription.deleted", None) => Some(event.created),
        _ => None,
    };
    if let Some(at) = ended {
        sqlx::query("UPDATE stripe_subscriptions SET ended_at = LEAST(ended_at, to_timestamp($2)) WHERE id = $1")
            .bind(&subscription.id)
            .bind(at as f64)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rederive(conn, plans, &subscription.id, cause).await?)
}

/// The plan a subscription is for: its metadata's, else the plan whose Price it bills.
fn plan_of<'a>(plans: &'a Plans, named: Option<&'a str>, mut prices: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    named
        .filter(|code| plans.get(code).is_some())
        .or_else(|| prices.find_map(|price| plans.by_stripe_price(price).map(|(code, _)| code)))
}

async fn record_subscription(
    conn: &mut PgConnection,
    id: &str,
    user_id: Option<i64>,
    plan: Option<&str>,
    customer: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stripe_subscriptions (id, user_id, plan, customer) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET
             user_id = COALESCE(stripe_subscriptions.user_id, excluded.user_id),
             plan = COALESCE(stripe_subscriptions.plan, excluded.plan),
             customer = COALESCE(stripe_subscriptions.customer, excluded.customer),
             updated_at = now()",
    )
    .bind(id)
    .bind(user_id)
    .bind(plan)
    .bind(customer)
    .execute(&mut *conn)
    .await?;
    if let (None, Some(customer)) = (user_id, customer) {
        // A subscription whose events do not name the user (created outside our checkout) is
        // still theirs if we know the customer.
        sqlx::query(
            "UPDATE stripe_subscriptions s SET user_id = c.user_id
             FROM stripe_customers c WHERE s.id = $1 AND s.user_id IS NULL AND c.customer = $2",
        )
        .bind(id)
        .bind(customer)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Remembers which customer a user is, for portal sessions and later checkouts.
pub async fn remember_customer(conn: &mut PgConnection, user_id: i64, customer: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO stripe_customers (user_id, customer) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(customer)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The Stripe customer of `user_id`, if one is known.
pub async fn customer_of(conn: &mut PgConnection, user_id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT customer FROM stripe_customers WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Default)]
struct InvoiceFacts<'a> {
    id: &'a str,
    subscription: Option<&'a str>,
    paid: bool,
    period_end: Option<DateTime<Utc>>,
    period_exact: bool,
    payment_intent: Option<&'a str>,
    charge: Option<&'a str>,
}

/// Merges what an event says of an invoice; true when it made the invoice paid.
async fn record_invoice(conn: &mut PgConnection, f: &InvoiceFacts<'_>) -> Result<bool, sqlx::Error> {
    let was_paid: Option<bool> = sqlx::query_scalar("SELECT paid FROM stripe_invoices WHERE id = $1")
        .bind(f.id)
        .fetch_optional(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO stripe_invoices (id, subscription, paid, period_end, period_exact, payment_intent, charge)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET
             subscription = COALESCE(stripe_invoices.subscription, excluded.subscription),
             paid = stripe_invoices.paid OR excluded.paid,
             period_end = CASE
                 WHEN excluded.period_exact AND stripe_invoices.period_exact
                     THEN GREATEST(stripe_invoices.period_end, excluded.period_end)
                 WHEN excluded.period_exact THEN excluded.period_end
                 WHEN stripe_invoices.period_exact THEN stripe_invoices.period_end
                 ELSE GREATEST(stripe_invoices.period_end, excluded.period_end)
             END,
             period_exact = stripe_invoices.period_exact OR excluded.period_exact,
             payment_intent = COALESCE(stripe_invoices.payment_intent, excluded.payment_intent),
             charge = COALESCE(stripe_invoices.charge, excluded.charge),
             updated_at = now()",
    )
    .bind(f.id)
    .bind(f.subscription)
    .bind(f.paid)
    .bind(f.period_end)
    .bind(f.period_exact)
    .bind(f.payment_intent)
    .bind(f.charge)
    .execute(&mut *conn)
    .await?;
    Ok(f.paid && was_paid != Some(true))
}

fn payment_refs(link: &objects::PaymentLink) -> Vec<&str> {
    [id_of(&link.payment_intent), id_of(&link.charge)]
        .into_iter()
        .flatten()
        .collect()
}

/// The subscriptions whose invoices were paid by any of `payments`.
async fn subscriptions_paid_by(conn: &mut PgConnection, payments: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT subscription FROM stripe_invoices
         WHERE subscription IS NOT NULL AND (payment_intent = ANY($1) OR charge = ANY($1))
         ORDER BY subscription",
    )
    .bind(payments)
    .fetch_all(conn)
    .await
}

async fn rederive_all(
    conn: &mut PgConnection,
    plans: &Plans,
    subscriptions: &[String],
    cause: &str,
) -> Result<Outcome, sqlx::Error> {
    let mut outcome = Outcome::Recorded;
    for subscription in subscriptions {
        if rederive(conn, plans, subscription, cause).await? == Outcome::Applied {
            outcome = Outcome::Applied;
        }
    }
    Ok(outcome)
}

/// Facts is what is known of a subscription, as [`derive`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub user_id: Option<i64>,
    pub plan: Option<String>,
    pub status: Option<String>,
    pub cancel_at_period_end: bool,
    pub ended_at: Option<DateTime<Utc>>,
}

/// PaidPeriod is one paid invoice of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidPeriod {
    pub end: DateTime<Utc>,
    pub refunded: bool,
    pub disputed: bool,
}

/// The entitlement a subscription's facts call for, with the reason to give the user when it is
/// not active; `None` while there is nothing to grant (no user, no plan, nothing paid yet).
pub fn derive(facts: &Facts, periods: &[PaidPeriod], plans: &Plans) -> Option<(State, Option<&'static str>)> {
    let user_id = facts.user_id?;
    let code = facts.plan.as_deref()?;
    let plan = plans.get(code)?;
    // The latest period decides; at equal ends a refunded one counts as the latest.
    let latest = periods.iter().max_by_key(|p| (p.end, p.refunded))?;
    let paid_through = periods.iter().filter(|p| !p.refunded).map(|p| p.end).max();
    let state = |status, expires_at, renews| State {
        user_id,
        plan: code.to_string(),
        entitlement: plan.entitlement.clone(),
        status,
        expires_at,
        renews,
    };
    let (status, expires_at, why) = if let Some(ended) = facts.ended_at {
        (Status::Revoked, Some(ended), Some("the subscription was cancelled"))
    } else if latest.refunded {
        (Status::Revoked, paid_through, Some("the payment was refunded"))
    } else if periods.iter().any(|p| p.disputed && !p.refunded) {
        (Status::Suspended, paid_through, Some("a payment is disputed"))
    } else {
        match facts.status.as_deref() {
            Some("canceled") => (Status::Revoked, paid_through, Some("the subscription was cancelled")),
            Some("unpaid" | "incomplete_expired") => {
                (Status::Suspended, paid_through, Some("the subscription is unpaid"))
            }
            Some("paused") => (Status::Suspended, paid_through, Some("the subscription is paused")),
            _ => (Status::Active, paid_through, None),
        }
    };
    let renews = status == Status::Active && !facts.cancel_at_period_end;
    Some((state(status, expires_at, renews), why))
}

/// The source name of a subscription's entitlement.
pub fn source(subscription: &str) -> String {
    format!("stripe:{subscription}")
}

/// Re-derives the entitlement of `subscription` and records it if it changed, with its message.
async fn rederive(
    conn: &mut PgConnection,
    plans: &Plans,
    subscription: &str,
    cause: &str,
) -> Result<Outcome, sqlx::Error> {
    type FactsRow = (Option<i64>, Option<String>, Option<String>, bool, Option<DateTime<Utc>>);
    let row: Option<FactsRow> = sqlx::query_as(
        "SELECT user_id, plan, status, cancel_at_period_end, ended_at FROM stripe_subscriptions WHERE id = $1",
    )
    .bind(subscription)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((user_id, plan, status, cancel_at_period_end, ended_at)) = row else {
        return Ok(Outcome::Recorded);
    };
    let facts = Facts {
        user_id,
        plan,
        status,
        cancel_at_period_end,
        ended_at,
    };
    let periods: Vec<(DateTime<Utc>, bool, bool)> = sqlx::query_as(
        "SELECT i.period_end,
                EXISTS (SELECT 1 FROM stripe_reversals r WHERE r.refunded AND r.payment IN (i.payment_intent, i.charge)),
                EXISTS (SELECT 1 FROM stripe_reversals r WHERE r.disputed AND r.payment IN (i.payment_intent, i.charge))
         FROM stripe_invoices i
         WHERE i.subscription = $1 AND i.paid AND i.period_end IS NOT NULL",
    )
    .bind(subscription)
    .fetch_all(&mut *conn)
    .await?;
    let periods: Vec<PaidPeriod> = periods
        .into_iter()
        .map(|(end, refunded, disputed)| PaidPeriod {
            end,
            refunded,
            disputed,
        })
        .collect();
    let Some((state, why)) = derive(&facts, &periods, plans) else {
        return Ok(Outcome::Recorded);
    };
    let Some(change) = entitlements::set(conn, &source(subscription), &state, cause).await? else {
        return Ok(Outcome::Recorded);
    };
    let plan_name = plans.get(&state.plan).map(|p| p.name.as_str()).unwrap_or(&state.plan);
    if let Some(job) = entitlements::notification(&change, plan_name, why) {
        enqueue(conn, &job).await?;
    }
    Ok(Outcome::Applied)
}

fn timestamp(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> Plans {
        Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro"}}"#,
        )
        .unwrap()
    }

    fn at(day: i64) -> DateTime<Utc> {
        timestamp(1_760_000_000 + day * 86_400)
    }

    fn facts() -> Facts {
        Facts {
            user_id: Some(7),
            plan: Some("pro".into()),
            ..Facts::default()
        }
    }

    fn period(day: i64) -> PaidPeriod {
        PaidPeriod {
            end: at(day),
            refunded: false,
            disputed: false,
        }
    }

    #[test]
    fn nothing_is_granted_before_a_user_a_plan_and_a_payment_are_known() {
        let plans = plans();
        assert_eq!(derive(&facts(), &[], &plans), None);
        let no_user = Facts {
            user_id: None,
            ..facts()
        };
        assert_eq!(derive(&no_user, &[period(30)], &plans), None);
        let unknown_plan = Facts {
            plan: Some("gold".into()),
            ..facts()
        };
        assert_eq!(derive(&unknown_plan, &[period(30)], &plans), None);
    }

    #[test]
    fn paid_periods_extend_access_to_the_latest_end() {
        let (state, why) = derive(&facts(), &[period(30), period(60)], &plans()).unwrap();
        assert_eq!(
            (state.status, state.expires_at, state.renews, why),
            (Status::Active, Some(at(60)), true, None)
        );
        let cancelling = Facts {
            cancel_at_period_end: true,
            status: Some("active".into()),
            ..facts()
        };
        let (state, _) = derive(&cancelling, &[period(30)], &plans()).unwrap();
        assert_eq!((state.status, state.renews), (Status::Active, false));
    }

    #[test]
    fn refunding_the_latest_period_revokes_and_a_later_payment_restores() {
        let refunded = PaidPeriod {
            refunded: true,
            ..period(60)
        };
        let (state, why) = derive(&facts(), &[period(30), refunded], &plans()).unwrap();
        assert_eq!((state.status, state.expires_at), (Status::Revoked, Some(at(30))));
        assert_eq!(why, Some("the payment was refunded"));
        let (state, _) = derive(&facts(), &[period(30), refunded, period(90)], &plans()).unwrap();
        assert_eq!((state.status, state.expires_at), (Status::Active, Some(at(90))));
    }

    #[test]
    fn disputes_suspend_and_endings_revoke() {
        let disputed = PaidPeriod {
            disputed: true,
            ..period(30)
        };
        let (state, _) = derive(&facts(), &[disputed], &plans()).unwrap();
        assert_eq!((state.status, state.renews), (Status::Suspended, false));
        let ended = Facts {
            ended_at: Some(at(10)),
            ..facts()
        };
        let (state, _) = derive(&ended, &[period(30)], &plans()).unwrap();
        assert_eq!((state.status, state.expires_at), (Status::Revoked, Some(at(10))));
        let unpaid = Facts {
            status: Some("unpaid".into()),
            ..facts()
        };
        assert_eq!(
            derive(&unpaid, &[period(30)], &plans()).unwrap().0.status,
            Status::Suspended
        );
        let past_due = Facts {
            status: Some("past_due".into()),
            ..facts()
        };
        assert_eq!(
            derive(&past_due, &[period(30)], &plans()).unwrap().0.status,
            Status::Active
        );
    }
}
