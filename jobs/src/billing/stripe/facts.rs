//! The facts each event adds, merged so that the result does not depend on the order events
//! arrive in (see [`super`]), and the re-derivation of the entitlements they touch.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::customers::remember_customer;
use super::{EventError, Outcome, PLAN_KEY, USER_KEY, lock_facts, notices, source, timestamp};
use crate::billing::entitlements::{self, Facts, PaidPeriod, derive};
use crate::billing::plans::Plans;
use crate::bot::Bot;
use crate::metrics::{self, counters};
use crate::queue::enqueue;
use crate::stripe::objects::{self, CheckoutSession, Event, Invoice, Subscription, id_of, meta};
use crate::tracking::AttributePayment;

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
    bot: Bot<'_>,
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
        counters::add(conn, metrics::BILLING_PAYMENTS, "status=\"refunded\"").await?;
    }
    let subscriptions = subscriptions_paid_by(conn, &payments).await?;
    rederive_all(conn, bot, &subscriptions, cause).await
}

pub(super) async fn on_checkout_session(
    conn: &mut PgConnection,
    bot: Bot<'_>,
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
    let plan = meta(&session.metadata, PLAN_KEY).filter(|p| bot.plans.get(p).is_some());
    let customer = id_of(&session.customer);
    record_subscription(conn, subscription, user_id, plan, customer).await?;
    if let (Some(user_id), Some(customer)) = (user_id, customer) {
        remember_customer(conn, user_id, customer).await?;
    }
    let paid = matches!(session.payment_status.as_deref(), Some("paid" | "no_payment_required"));
    if event.kind == "checkout.session.async_payment_failed" {
        counters::add(conn, metrics::BILLING_PAYMENTS, "status=\"failed\"").await?;
        if let Some(user_id) = user_id {
            notices::checkout_failed(conn, bot, user_id, cause).await?;
            return Ok(Outcome::Notified);
        }
        return Ok(Outcome::Recorded);
    }
    if paid {
        // Until the invoice's own event arrives, the first period is the plan's, from checkout.
        let provisional_end = plan
            .and_then(|p| bot.plans.get(p))
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
            counters::add(conn, metrics::BILLING_PAYMENTS, "status=\"paid\"").await?;
        }
    }
    Ok(rederive(conn, bot, subscription, cause).await?)
}

pub(super) async fn on_invoice_paid(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    event: &Event,
    invoice: &Invoice,
    cause: &str,
) -> Result<Outcome, EventError> {
    let Some(subscription) = invoice.subscription_id() else {
        return Ok(Outcome::Ignored);
    };
    let metadata = invoice.subscription_metadata();
    let user_id = meta(metadata, USER_KEY).and_then(|u| u.parse::<i64>().ok());
    let plan = plan_of(bot.plans, meta(metadata, PLAN_KEY), invoice.prices());
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
        counters::add(conn, metrics::BILLING_PAYMENTS, "status=\"paid\"").await?;
    }
    // Not only when newly paid: a checkout may have recorded this invoice paid first. The job's
    // key (the invoice) makes a repeat queue nothing.
    attribute_invoice(conn, event, invoice, subscription).await?;
    Ok(rederive(conn, bot, subscription, cause).await?)
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

pub(super) async fn on_subscription(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    event: &Event,
    subscription: &Subscription,
    cause: &str,
) -> Result<Outcome, EventError> {
    let user_id = meta(&subscription.metadata, USER_KEY).and_then(|u| u.parse::<i64>().ok());
    let plan = plan_of(bot.plans, meta(&subscription.metadata, PLAN_KEY), subscription.prices());
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
    Ok(rederive(conn, bot, &subscription.id, cause).await?)
}

/// The plan a subscription is for: its metadata's, else the plan whose Price it bills.
pub(super) fn plan_of<'a>(
    plans: &'a Plans,
    named: Option<&'a str>,
    mut prices: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
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

#[derive(Debug, Default)]
pub(super) struct InvoiceFacts<'a> {
    pub(super) id: &'a str,
    pub(super) subscription: Option<&'a str>,
    pub(super) paid: bool,
    pub(super) period_end: Option<DateTime<Utc>>,
    pub(super) period_exact: bool,
    pub(super) payment_intent: Option<&'a str>,
    pub(super) charge: Option<&'a str>,
}

/// Merges what an event says of an invoice; true when it made the invoice paid.
pub(super) async fn record_invoice(conn: &mut PgConnection, f: &InvoiceFacts<'_>) -> Result<bool, sqlx::Error> {
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

pub(super) fn payment_refs(link: &objects::PaymentLink) -> Vec<&str> {
    [id_of(&link.payment_intent), id_of(&link.charge)]
        .into_iter()
        .flatten()
        .collect()
}

/// The subscriptions whose invoices were paid by any of `payments`.
pub(super) async fn subscriptions_paid_by(
    conn: &mut PgConnection,
    payments: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT subscription FROM stripe_invoices
         WHERE subscription IS NOT NULL AND (payment_intent = ANY($1) OR charge = ANY($1))
         ORDER BY subscription",
    )
    .bind(payments)
    .fetch_all(conn)
    .await
}

pub(super) async fn rederive_all(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    subscriptions: &[String],
    cause: &str,
) -> Result<Outcome, sqlx::Error> {
    let mut outcome = Outcome::Recorded;
    for subscription in subscriptions {
        if rederive(conn, bot, subscription, cause).await? == Outcome::Applied {
            outcome = Outcome::Applied;
        }
    }
    Ok(outcome)
}

/// Re-derives the entitlement of `subscription` and records it if it changed, with its message.
async fn rederive(
    conn: &mut PgConnection,
    bot: Bot<'_>,
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
    let Some((state, why)) = derive(&facts, &periods, bot.plans) else {
        return Ok(Outcome::Recorded);
    };
    let Some(change) = entitlements::set(conn, &source(subscription), &state, cause).await? else {
        return Ok(Outcome::Recorded);
    };
    let plan = bot.plans.get(&state.plan).expect("derive grants only known plans");
    if let Some(job) = entitlements::notification(&change, plan, why, bot.texts) {
        enqueue(conn, &job).await?;
    }
    crate::access::follow(conn, bot.plans, &change).await?;
    Ok(Outcome::Applied)
}
