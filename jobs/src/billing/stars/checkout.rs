//! Selling a plan for Stars: the invoice it is sold by, and the decision on a pre-checkout query,
//! which Telegram wants within 10 s and so is taken in the webhook.

use sqlx::PgConnection;

use super::{CURRENCY, SUBSCRIPTION_PERIOD_DAYS};
use crate::billing::entitlements::{self, Entitlement, Provider};
use crate::billing::plans::Plans;
use crate::billing::users;
use crate::metrics::{self, counters};
use crate::telegram::client::StarsInvoice;
use crate::telegram::updates::PreCheckoutQuery;

/// The Stars invoice for `plan_code`, or `None` when the plan is not sold for Stars. Plans of
/// exactly 30 days are sold as Stars subscriptions (Telegram renews them monthly); others as
/// one-off payments for one period.
pub fn invoice(plans: &Plans, plan_code: &str) -> Option<StarsInvoice> {
    let plan = plans.get(plan_code)?;
    let amount_stars = plan.stars_price?;
    Some(StarsInvoice {
        title: plan.name.clone(),
        description: format!("{} access for {} days", plan.name, plan.period_days),
        payload: plan_code.to_string(),
        amount_stars,
        subscription_period: (plan.period_days == SUBSCRIPTION_PERIOD_DAYS)
            .then(|| std::time::Duration::from_secs(u64::from(SUBSCRIPTION_PERIOD_DAYS) * 86_400)),
    })
}

/// Answer is what a pre-checkout query was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    /// Shown to the user by Telegram when `ok` is false.
    pub error_message: Option<String>,
}

/// Whether the payment a pre-checkout query asks about may go ahead: our invoice for a plan on
/// sale, in Stars, at the plan's price, from a user who is not banned and has no renewing Stripe
/// subscription to the plan (`renewing`, the user's renewing entitlements to it: the purchase
/// guard, [`entitlements::renewing`]). The error is shown to the user.
///
/// While the user has a renewing *Stars* subscription to the plan nothing is refused for it
/// here, whatever else renews: the query does not say whether it is that subscription's own
/// renewal, and a renewal must never be refused. A new invoice link for the plan is refused when
/// it is asked for.
pub fn check_pre_checkout(
    plans: &Plans,
    query: &PreCheckoutQuery,
    banned: bool,
    renewing: &[Entitlement],
) -> Result<(), String> {
    if query.currency != CURRENCY {
        return Err("Only Telegram Stars are accepted.".into());
    }
    let Some(price) = plans.get(&query.invoice_payload).and_then(|p| p.stars_price) else {
        return Err("This plan is no longer for sale.".into());
    };
    if query.total_amount != i64::from(price) {
        return Err("The price of this plan has changed. Please open the invoice again.".into());
    }
    if banned {
        return Err("This account cannot make purchases.".into());
    }
    let stars_renews = renewing.iter().any(|e| e.provider() == Provider::TelegramStars);
    if let (false, Some(subscribed), Some(plan)) = (
        stars_renews,
        renewing.iter().find(|e| e.provider() == Provider::Stripe),
        plans.get(&query.invoice_payload),
    ) {
        return Err(subscribed.already_subscribed(&plan.name));
    }
    Ok(())
}

/// Decides a pre-checkout query and records the answer; a query answered before gets the same
/// answer again (Telegram redelivers an update whose response it did not get).
pub async fn answer_pre_checkout(
    conn: &mut PgConnection,
    plans: &Plans,
    query: &PreCheckoutQuery,
) -> Result<Answer, sqlx::Error> {
    let earlier: Option<(bool, Option<String>)> =
        sqlx::query_as("SELECT ok, error_message FROM telegram_pre_checkout_queries WHERE id = $1")
            .bind(&query.id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((ok, error_message)) = earlier {
        return Ok(Answer { ok, error_message });
    }
    let banned = users::is_banned(conn, query.from.id).await?;
    let renewing = entitlements::renewing(conn, query.from.id, &query.invoice_payload).await?;
    let answer = match check_pre_checkout(plans, query, banned, &renewing) {
        Ok(()) => Answer {
            ok: true,
            error_message: None,
        },
        Err(message) => Answer {
            ok: false,
            error_message: Some(message),
        },
    };
    // A concurrent delivery of the same query (in another update) may have answered first: the
    // stored answer is the one given, and the one counted.
    let (ok, error_message, inserted): (bool, Option<String>, bool) = sqlx::query_as(
        "INSERT INTO telegram_pre_checkout_queries
             (id, user_id, invoice_payload, currency, total_amount, ok, error_message)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET id = excluded.id
         RETURNING ok, error_message, xmax = 0",
    )
    .bind(&query.id)
    .bind(query.from.id)
    .bind(&query.invoice_payload)
    .bind(&query.currency)
    .bind(query.total_amount)
    .bind(answer.ok)
    .bind(&answer.error_message)
    .fetch_one(&mut *conn)
    .await?;
    let answer = Answer { ok, error_message };
    if inserted && !answer.ok {
        counters::add(conn, metrics::TELEGRAM_PAYMENTS, "result=\"refused\"").await?;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telegram::updates::User;

    fn plans() -> Plans {
        Plans::parse(
            r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stars_price": 250},
                "week": {"name": "Week", "entitlement": "pro", "period_days": 7, "stars_price": 90},
                "card": {"name": "Card", "entitlement": "pro", "period_days": 30, "stripe_price": "price_1"}}"#,
        )
        .unwrap()
    }

    fn query(payload: &str, currency: &str, amount: i64) -> PreCheckoutQuery {
        PreCheckoutQuery {
            id: "q1".into(),
            from: User { id: 5, is_bot: false },
            currency: currency.into(),
            total_amount: amount,
            invoice_payload: payload.into(),
        }
    }

    #[test]
    fn a_pre_checkout_goes_ahead_only_for_our_plan_in_stars_at_its_price() {
        let plans = plans();
        assert_eq!(
            check_pre_checkout(&plans, &query("pro", "XTR", 250), false, &[]),
            Ok(())
        );
        for (q, banned) in [
            (query("pro", "USD", 250), false),
            (query("pro", "XTR", 249), false),
            (query("card", "XTR", 250), false),
            (query("gold", "XTR", 250), false),
            (query("pro", "XTR", 250), true),
        ] {
            assert!(
                check_pre_checkout(&plans, &q, banned, &[]).is_err(),
                "{q:?} banned={banned}"
            );
        }
    }

    fn renewing(source: &str) -> Entitlement {
        Entitlement {
            id: 1,
            user_id: 5,
            source: source.into(),
            plan: "pro".into(),
            entitlement: "pro".into(),
            status: entitlements::Status::Active,
            expires_at: chrono::DateTime::from_timestamp(1_798_761_600, 0),
            renews: true,
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_renewing_stripe_subscription_to_the_plan_refuses_its_purchase_with_stars() {
        let plans = plans();
        let q = query("pro", "XTR", 250);
        let stripe = renewing("stripe:sub_1");
        let refused = check_pre_checkout(&plans, &q, false, std::slice::from_ref(&stripe)).unwrap_err();
        assert_eq!(
            refused,
            "You already subscribe to Pro through Stripe, renewing on 2027-01-01. \
             Cancel it in the billing portal first to pay another way."
        );
        // A Stars subscription's own renewal looks the same: it goes ahead, whatever else renews.
        let stars = renewing("telegram_stars:ch_1");
        for both in [
            vec![stars.clone()],
            vec![stripe.clone(), stars.clone()],
            vec![stars, stripe],
        ] {
            assert_eq!(check_pre_checkout(&plans, &q, false, &both), Ok(()), "{both:?}");
        }
    }

    #[test]
    fn thirty_day_plans_are_sold_as_stars_subscriptions() {
        let plans = plans();
        let monthly = invoice(&plans, "pro").unwrap();
        assert_eq!((monthly.amount_stars, monthly.payload.as_str()), (250, "pro"));
        assert_eq!(
            monthly.subscription_period,
            Some(std::time::Duration::from_secs(2_592_000))
        );
        assert_eq!(invoice(&plans, "week").unwrap().subscription_period, None);
        assert_eq!(invoice(&plans, "card"), None);
        assert_eq!(invoice(&plans, "gold"), None);
    }
}
