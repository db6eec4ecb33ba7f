//! `GET /v1/plans`: the catalogue as a buyer sees it, for the Mini App and any client.

use jobs::billing::Plans;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::Tag;

/// PlansApi serves `/v1/plans`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlansApi;

/// PlanView is one plan on sale.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PlanView {
    /// The plan's code, as `POST /v1/billing/checkout` and `/stars-invoice` take it.
    pub code: String,
    pub name: String,
    /// The length of one paid period.
    pub period_days: u32,
    /// The price in Telegram Stars; absent when the plan is not sold for Stars.
    pub stars_price: Option<u32>,
    /// Whether the plan is sold by card (Stripe Checkout).
    pub card: bool,
    /// How many private Telegram chats an entitlement to the plan opens.
    pub chat_count: u32,
}

/// Catalogue is every plan on sale.
#[derive(Debug, Object)]
pub struct Catalogue {
    pub plans: Vec<PlanView>,
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Billing")]
impl PlansApi {
    /// List the plans
    ///
    /// Every plan on sale, by code, with its prices. No authentication: what is for sale is
    /// public.
    #[oai(path = "/plans", method = "get", operation_id = "list_plans")]
    async fn plans(&self, plans: Data<&Plans>) -> Json<Catalogue> {
        let plans = plans
            .iter()
            .filter(|(_, plan)| plan.on_sale())
            .map(|(code, plan)| PlanView {
                code: code.to_string(),
                name: plan.name.clone(),
                period_days: plan.period_days,
                stars_price: plan.stars_price,
                card: plan.stripe_price.is_some(),
                chat_count: u32::try_from(plan.chats.len()).unwrap_or(u32::MAX),
            })
            .collect();
        Json(Catalogue { plans })
    }
}
