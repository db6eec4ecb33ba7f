//! [`apply_event`]: a stored event, read and routed by its type to the facts it adds.

use sqlx::PgConnection;

use super::facts::{
    InvoiceFacts, on_checkout_session, on_invoice_paid, on_subscription, payment_refs, record_invoice, rederive_all,
    reverse, subscriptions_paid_by,
};
use super::{EventError, Links, Outcome, Reversal, lock_facts, notices};
use crate::bot::Bot;
use crate::metrics::{self, counters};
use crate::stripe::objects::{Charge, CheckoutSession, Dispute, Event, Invoice, InvoicePayment, Subscription, id_of};

/// Applies the stored event `event_id`: merges its facts, re-derives the entitlements it touches,
/// enqueues their notifications. Run it inside the job's effect transaction.
pub async fn apply_event(
    conn: &mut PgConnection,
    bot: Bot<'_>,
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
            on_checkout_session(conn, bot, &event, &session, &cause).await?
        }
        "invoice.paid" => {
            let invoice: Invoice = object(&event)?;
            on_invoice_paid(conn, bot, &event, &invoice, &cause).await?
        }
        "invoice.payment_failed" => {
            let invoice: Invoice = object(&event)?;
            notices::payment_failed(conn, bot, links, &event, &invoice).await?
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
            rederive_all(conn, bot, &subscriptions, &cause).await?
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            let subscription: Subscription = object(&event)?;
            on_subscription(conn, bot, &event, &subscription, &cause).await?
        }
        "charge.refunded" => {
            let charge: Charge = object(&event)?;
            if charge.refunded {
                let payments = [Some(charge.id.as_str()), id_of(&charge.payment_intent)];
                reverse(conn, bot, &payments, Reversal::Refund, &cause).await?
            } else {
                // A partial refund is a gesture, not a cancellation: access stays.
                Outcome::Ignored
            }
        }
        "charge.dispute.created" => {
            let dispute: Dispute = object(&event)?;
            let payments = [Some(dispute.charge.id()), id_of(&dispute.payment_intent)];
            counters::add(conn, metrics::BILLING_PAYMENTS, "status=\"disputed\"").await?;
            reverse(conn, bot, &payments, Reversal::Dispute, &cause).await?
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

fn object<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, EventError> {
    T::deserialize(&event.data.object).map_err(|e| EventError::Malformed {
        id: event.id.clone(),
        kind: event.kind.clone(),
        problem: e.to_string(),
    })
}
