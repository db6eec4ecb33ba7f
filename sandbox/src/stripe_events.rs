//! Webhook events of one Stripe subscription's life, built from Stripe's own example objects
//! ([`crate::stripe::fixture`]) with only the fields that tie them together changed, for tests,
//! the benchmark and the local run's fake checkout.

use serde_json::{Value, json};

use crate::stripe::{event, fixture};

/// Subscription names the Stripe objects of one subscription of one Telegram user.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub user_id: i64,
    pub plan: String,
    pub price: String,
    /// `sub_…`; the other ids derive from it.
    pub id: String,
    pub customer: String,
}

impl Subscription {
    /// The objects of subscription `sub_<tag>` of `user_id` to `plan` at `price`.
    pub fn new(tag: &str, user_id: i64, plan: &str, price: &str) -> Subscription {
        Subscription {
            user_id,
            plan: plan.into(),
            price: price.into(),
            id: format!("sub_{tag}"),
            customer: format!("cus_{tag}"),
        }
    }

    fn tag(&self) -> &str {
        self.id.trim_start_matches("sub_")
    }

    /// The id of invoice number `n` (1 is the checkout's).
    pub fn invoice(&self, n: u32) -> String {
        format!("in_{}_{n}", self.tag())
    }

    /// The payment intent that paid invoice `n`.
    pub fn payment_intent(&self, n: u32) -> String {
        format!("pi_{}_{n}", self.tag())
    }

    /// The charge of invoice `n`'s payment.
    pub fn charge(&self, n: u32) -> String {
        format!("ch_{}_{n}", self.tag())
    }

    fn metadata(&self) -> Value {
        json!({"telegram_user_id": self.user_id.to_string(), "plan": self.plan})
    }

    /// `checkout.session.completed` (or an `async_payment_*` type) for the subscription's checkout
    /// with `payment_status`.
    pub fn checkout_session(&self, event_type: &str, payment_status: &str, created: i64) -> Value {
        let mut session = fixture("checkout.session");
        session["id"] = json!(format!("cs_test_{}", self.tag()));
        session["mode"] = json!("subscription");
        session["status"] = json!("complete");
        session["payment_status"] = json!(payment_status);
        session["client_reference_id"] = json!(self.user_id.to_string());
        session["customer"] = json!(self.customer);
        session["subscription"] = json!(self.id);
        session["invoice"] = json!(self.invoice(1));
        session["metadata"] = self.metadata();
        session["created"] = json!(created);
        event(event_type, session, created)
    }

    fn invoice_object(&self, n: u32, period_end: i64, status: &str) -> Value {
        let mut invoice = fixture("invoice");
        invoice["id"] = json!(self.invoice(n));
        invoice["customer"] = json!(self.customer);
        invoice["status"] = json!(status);
        invoice["amount_paid"] = json!(if status == "paid" {
            crate::stripe::PAYMENT_AMOUNT
        } else {
            0
        });
        invoice["currency"] = json!(crate::stripe::CURRENCY);
        invoice["subscription"] = Value::Null;
        invoice["parent"] = json!({
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": {"subscription": self.id, "metadata": self.metadata()}
        });
        let mut line = invoice["lines"]["data"][0].clone();
        line["invoice"] = json!(self.invoice(n));
        line["period"] = json!({"start": period_end - 30 * 86_400, "end": period_end});
        line["pricing"] = json!({"type": "price_details", "price_details": {"price": self.price, "product": "prod_sandbox"}, "unit_amount_decimal": "2000"});
        invoice["lines"]["data"] = json!([line]);
        invoice["hosted_invoice_url"] = json!(format!("https://invoice.stripe.com/i/{}", self.invoice(n)));
        invoice
    }

    /// `invoice.paid` for invoice `n`, paying through `period_end`.
    pub fn invoice_paid(&self, n: u32, period_end: i64, created: i64) -> Value {
        event("invoice.paid", self.invoice_object(n, period_end, "paid"), created)
    }

    /// `invoice.payment_failed` for invoice `n`.
    pub fn invoice_payment_failed(&self, n: u32, period_end: i64, created: i64) -> Value {
        event(
            "invoice.payment_failed",
            self.invoice_object(n, period_end, "open"),
            created,
        )
    }

    /// `invoice_payment.paid`, linking invoice `n` to its payment intent (API 2025-03-31.basil on).
    pub fn invoice_payment_paid(&self, n: u32, created: i64) -> Value {
        let payment = json!({
            "id": format!("inpay_{}_{n}", self.tag()),
            "object": "invoice_payment",
            "amount_paid": crate::stripe::PAYMENT_AMOUNT,
            "amount_requested": crate::stripe::PAYMENT_AMOUNT,
            "currency": crate::stripe::CURRENCY,
            "invoice": self.invoice(n),
            "is_default": true,
            "livemode": false,
            "payment": {"type": "payment_intent", "payment_intent": self.payment_intent(n)},
            "status": "paid",
            "status_transitions": {"canceled_at": null, "paid_at": created},
            "created": created
        });
        event("invoice_payment.paid", payment, created)
    }

    /// `customer.subscription.<action>` (`created`, `updated`, `deleted`) with `status`.
    pub fn subscription(&self, action: &str, status: &str, cancel_at_period_end: bool, created: i64) -> Value {
        let mut subscription = fixture("subscription");
        subscription["id"] = json!(self.id);
        subscription["customer"] = json!(self.customer);
        subscription["status"] = json!(status);
        subscription["cancel_at_period_end"] = json!(cancel_at_period_end);
        subscription["metadata"] = self.metadata();
        subscription["latest_invoice"] = Value::Null;
        subscription["ended_at"] = if status == "canceled" {
            json!(created)
        } else {
            Value::Null
        };
        let mut item = subscription["items"]["data"][0].clone();
        item["price"] = json!({"id": self.price, "object": "price"});
        subscription["items"]["data"] = json!([item]);
        event(&format!("customer.subscription.{action}"), subscription, created)
    }

    /// `charge.refunded` for the charge of invoice `n`: `full` or a partial refund.
    pub fn charge_refunded(&self, n: u32, full: bool, created: i64) -> Value {
        let mut charge = fixture("charge");
        charge["id"] = json!(self.charge(n));
        charge["payment_intent"] = json!(self.payment_intent(n));
        charge["customer"] = json!(self.customer);
        charge["amount"] = json!(crate::stripe::PAYMENT_AMOUNT);
        charge["amount_refunded"] = json!(if full { crate::stripe::PAYMENT_AMOUNT } else { 500 });
        charge["refunded"] = json!(full);
        event("charge.refunded", charge, created)
    }

    /// `charge.dispute.created` for the charge of invoice `n`.
    pub fn dispute_created(&self, n: u32, created: i64) -> Value {
        let mut dispute = fixture("dispute");
        dispute["id"] = json!(format!("du_{}_{n}", self.tag()));
        dispute["charge"] = json!(self.charge(n));
        dispute["payment_intent"] = json!(self.payment_intent(n));
        event("charge.dispute.created", dispute, created)
    }
}
