//! The messages a failed payment sends: a checkout whose payment did not go through, and a
//! renewal that failed (with the buttons that fix it).

use sqlx::PgConnection;

use super::facts::plan_of;
use super::{EventError, Links, Outcome, PLAN_KEY, USER_KEY};
use crate::bot::Bot;
use crate::bot::{Text, text_message};
use crate::metrics::{self, counters};
use crate::queue::{NewJob, enqueue};
use crate::stripe::objects::{Event, Invoice, id_of, meta};
use crate::telegram::{Button, SendMessage};

/// Tells `user_id` that the payment of their checkout did not go through.
pub(super) async fn checkout_failed(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    user_id: i64,
    cause: &str,
) -> Result<(), sqlx::Error> {
    let message = text_message(user_id, bot.texts.get(Text::CheckoutFailed));
    enqueue(conn, &NewJob::new(&message, format!("{cause}:notice")))
        .await
        .map(|_| ())
}

/// Counts a failed invoice payment and tells its subscriber how to fix it.
pub(super) async fn payment_failed(
    conn: &mut PgConnection,
    bot: Bot<'_>,
    links: &Links,
    event: &Event,
    invoice: &Invoice,
) -> Result<Outcome, EventError> {
    counters::add(conn, metrics::BILLING_PAYMENTS, "status=\"failed\"").await?;
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
    let plan_name = plan_of(bot.plans, meta(metadata, PLAN_KEY), invoice.prices())
        .or(known.as_ref().and_then(|k| k.1.as_deref()))
        .and_then(|code| bot.plans.get(code))
        .map(|p| p.name.as_str())
        .unwrap_or("subscription");
    let mut buttons = Vec::new();
    if let Some(portal) = &links.billing_portal {
        buttons.push(vec![Button::url(bot.texts.get(Text::UpdatePaymentButton), portal)]);
    }
    if let Some(url) = &invoice.hosted_invoice_url {
        buttons.push(vec![Button::url(bot.texts.get(Text::PayInvoiceButton), url)]);
    }
    let message = SendMessage {
        buttons,
        ..text_message(user_id, bot.texts.render(Text::PaymentFailed, &[("plan", plan_name)]))
    };
    enqueue(
        conn,
        &NewJob::new(&message, format!("stripe_event:{}:notice", event.id)),
    )
    .await?;
    Ok(Outcome::Notified)
}
