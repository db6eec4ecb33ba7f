//! `/v1/ops/refunds`: an operator refunds a payment through the `refunds` queue.
//!
//! POST stores the refund with its job in one transaction ([`refunds::create`]) and answers 202;
//! a worker makes it at the provider, with an idempotency key derived from the refund, then
//! revokes what the payment bought. Money moves, so the `Idempotency-Key` is required: a repeat
//! with the same key and body answers with the first refund and writes nothing, the same key with
//! another body is a 409.

use chrono::{DateTime, Utc};
use jobs::billing::refunds::{self, Created, NewRefund, Provider, Refund, RefundStatus};
use poem::web::Data;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use super::extract::IdempotencyKey;
use super::json_string::JsonString;
use crate::auth::AdminAuth;
use crate::error::{Problem, ProblemDetails};

/// RefundsApi serves `/v1/ops/refunds`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefundsApi;

/// RefundProvider is who took the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RefundProvider {
    Stripe,
    /// Telegram Stars: the whole payment is refunded (`refundStarPayment`).
    TelegramStars,
}

/// RefundReason is why a refund is made, as Stripe records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RefundReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

impl RefundReason {
    fn name(self) -> &'static str {
        match self {
            RefundReason::Duplicate => "duplicate",
            RefundReason::Fraudulent => "fraudulent",
            RefundReason::RequestedByCustomer => "requested_by_customer",
        }
    }
}

/// RefundRequest is a refund to make.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct RefundRequest {
    pub provider: RefundProvider,
    /// The payment to refund: for Stripe a payment intent (`pi_…`) or a charge (`ch_…`, `py_…`);
    /// for Telegram Stars the `telegram_payment_charge_id`.
    #[oai(validator(min_length = 1, max_length = 255, pattern = "^[!-~]+$"))]
    pub payment: JsonString,
    /// How much to refund, in the currency's smallest unit (cents); the rest of the payment when
    /// absent. Stripe only: Stars payments are refunded whole.
    #[oai(validator(minimum(value = "1")))]
    pub amount: Option<i64>,
    pub reason: Option<RefundReason>,
}

impl From<RefundRequest> for NewRefund {
    fn from(r: RefundRequest) -> NewRefund {
        NewRefund {
            provider: match r.provider {
                RefundProvider::Stripe => Provider::Stripe,
                RefundProvider::TelegramStars => Provider::TelegramStars,
            },
            payment: r.payment.into(),
            amount: r.amount,
            reason: r.reason.map(|reason| reason.name().to_string()),
        }
    }
}

/// RefundState is where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RefundState {
    /// Waiting for a worker to ask the provider.
    Pending,
    /// The provider made it: `provider_refund_id` names it.
    Succeeded,
    /// The provider refused it for good: `failure` says why.
    Failed,
}

/// RefundView is a stored refund.
#[derive(Debug, Object)]
#[oai(rename = "Refund", skip_serializing_if_is_none)]
pub struct RefundView {
    pub id: i64,
    pub provider: RefundProvider,
    pub payment: String,
    /// In the currency's smallest unit; absent for the rest of the payment.
    pub amount: Option<i64>,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
    pub status: RefundState,
    /// The provider's id of the refund once it succeeded: Stripe's `re_…`; for Stars, which have
    /// no refund ids, the charge id.
    pub provider_refund_id: Option<String>,
    /// Why the provider refused, once it failed.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Refund> for RefundView {
    fn from(r: Refund) -> RefundView {
        RefundView {
            id: r.id,
            provider: match r.provider {
                Provider::Stripe => RefundProvider::Stripe,
                Provider::TelegramStars => RefundProvider::TelegramStars,
            },
            payment: r.payment,
            amount: r.amount,
            reason: r.reason,
            status: match r.status {
                RefundStatus::Pending => RefundState::Pending,
                RefundStatus::Succeeded => RefundState::Succeeded,
                RefundStatus::Failed => RefundState::Failed,
            },
            provider_refund_id: r.provider_refund_id,
            failure: r.failure,
            created_at: r.created_at,
        }
    }
}

/// Refuses what the provider would refuse for certain: a Stripe payment that is not a payment
/// intent or charge id, a partial Stars refund, a Stars charge we never recorded or that is
/// refunded (or being refunded) already.
async fn check_payment(pool: &PgPool, asked: &NewRefund, key: &str) -> Result<(), Problem> {
    match asked.provider {
        Provider::Stripe => {
            let id_part = ["pi_", "ch_", "py_"]
                .iter()
                .find_map(|prefix| asked.payment.strip_prefix(prefix));
            if !id_part.is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
                return Err(Problem::invalid_request(
                    "a Stripe payment is a payment intent (pi_…) or a charge (ch_…, py_…)",
                ));
            }
        }
        Provider::TelegramStars => {
            if asked.amount.is_some() {
                return Err(Problem::invalid_request(
                    "Telegram Stars payments are refunded whole: leave out the amount",
                ));
            }
            let mut conn = pool.acquire().await?;
            let Some(refunded) = jobs::billing::stars::refunded(&mut conn, &asked.payment).await? else {
                return Err(Problem::invalid_request(format!(
                    "no Telegram Stars payment has the charge id {:?}",
                    asked.payment.chars().take(64).collect::<String>()
                )));
            };
            // A Stars charge is refunded once, whole: a second refund would be counted as made
            // though no Stars moved. A repeat under the same key is answered by `create`.
            if refunds::id_of_key(&mut conn, key).await?.is_some() {
                return Ok(());
            }
            if let Some(earlier) = refunds::open_or_done(&mut conn, asked.provider, &asked.payment).await? {
                return Err(Problem::conflict(format!(
                    "this payment is refunded already, or being refunded: {}",
                    location(earlier)
                )));
            }
            if refunded {
                return Err(Problem::conflict("Telegram has refunded this payment already"));
            }
        }
    }
    Ok(())
}

/// Where refund `id` is shown.
fn location(id: i64) -> String {
    format!("/v1/ops/refunds/{id}")
}

/// Whether a stored refund is the one `asked` describes, so that a repeat may answer with it.
fn same_refund(stored: &Refund, asked: &NewRefund) -> bool {
    stored.provider == asked.provider
        && stored.payment == asked.payment
        && stored.amount == asked.amount
        && stored.reason == asked.reason
}

/// CreateResponse is the answer to a refund request.
#[derive(ApiResponse)]
pub enum CreateResponse {
    /// The refund is stored (now, or by an earlier request with the same key and body) and
    /// pending.
    #[oai(status = 202)]
    Accepted(
        Json<RefundView>,
        /// Where the refund is shown.
        #[oai(header = "Location")]
        String,
    ),
    /// An earlier request with the same key and body has already been carried out: this is it.
    #[oai(status = 200)]
    Settled(
        Json<RefundView>,
        /// Where the refund is shown.
        #[oai(header = "Location")]
        String,
    ),
    /// The `Idempotency-Key` was used before for another refund (`conflict`).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemDetails>),
}

impl CreateResponse {
    fn of(refund: Refund) -> CreateResponse {
        let at = location(refund.id);
        if refund.status == RefundStatus::Pending {
            CreateResponse::Accepted(Json(refund.into()), at)
        } else {
            CreateResponse::Settled(Json(refund.into()), at)
        }
    }
}

/// ShowResponse is one refund, or why not.
#[derive(ApiResponse)]
pub enum ShowResponse {
    /// The refund.
    #[oai(status = 200)]
    Ok(Json<RefundView>),
    /// No refund has this id (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

#[OpenApi(tag = "Tag::Ops")]
impl RefundsApi {
    /// Refund a payment
    ///
    /// Queues a refund on the `refunds` queue; a worker makes it at the provider, then revokes
    /// the access the payment bought and tells the user. The `Idempotency-Key` is required.
    #[oai(path = "/v1/ops/refunds", method = "post", operation_id = "create_refund")]
    async fn create(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// Required, since a refund moves money: 1 to 200 visible ASCII characters. A repeat with
        /// the same key and body answers with the first refund and refunds nothing more; the same
        /// key with another body is 409 `conflict`.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<IdempotencyKey>,
        body: Json<RefundRequest>,
    ) -> Result<CreateResponse, Problem> {
        let IdempotencyKey(key) = idempotency_key.0;
        let asked = NewRefund::from(body.0);
        check_payment(&pool, &asked, &key).await?;
        let mut tx = pool.begin().await?;
        let created = refunds::create(&mut tx, &asked, Some(&key)).await?;
        tx.commit().await?;
        Ok(match created {
            Created::New(refund) => {
                tracing::info!(refund_id = refund.id, payment = %refund.payment, amount = ?refund.amount, "refund requested");
                CreateResponse::of(refund)
            }
            Created::Existing(refund) if !same_refund(&refund, &asked) => CreateResponse::Conflict(Json(
                Problem::conflict(format!(
                    "this Idempotency-Key was first used for another refund ({}); use another key for another refund",
                    location(refund.id)
                ))
                .body(),
            )),
            Created::Existing(refund) => CreateResponse::of(refund),
        })
    }

    /// Show a refund
    #[oai(path = "/v1/ops/refunds/:id", method = "get", operation_id = "show_refund")]
    async fn show(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The refund's id. Not an integer: 400 `invalid-request`.
        id: Path<i64>,
    ) -> Result<ShowResponse, Problem> {
        let mut conn = pool.acquire().await?;
        Ok(match refunds::get(&mut conn, id.0).await? {
            Some(refund) => ShowResponse::Ok(Json(refund.into())),
            None => ShowResponse::NotFound(Json(Problem::not_found(format!("no refund {}", id.0)).body())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(asked: &NewRefund) -> Refund {
        Refund {
            id: 1,
            provider: asked.provider,
            payment: asked.payment.clone(),
            amount: asked.amount,
            reason: asked.reason.clone(),
            idempotency_key: Some("k".into()),
            status: RefundStatus::Pending,
            provider_refund_id: None,
            failure: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_repeat_must_ask_for_the_same_refund() {
        let asked = NewRefund::from(RefundRequest {
            provider: RefundProvider::Stripe,
            payment: JsonString("pi_1".into()),
            amount: Some(500),
            reason: Some(RefundReason::RequestedByCustomer),
        });
        assert_eq!(asked.reason.as_deref(), Some("requested_by_customer"));
        let first = stored(&asked);
        assert!(same_refund(&first, &asked));
        for other in [
            NewRefund {
                amount: None,
                ..asked.clone()
            },
            NewRefund {
                amount: Some(501),
                ..asked.clone()
            },
            NewRefund {
                payment: "pi_2".into(),
                ..asked.clone()
            },
            NewRefund {
                reason: None,
                ..asked.clone()
            },
        ] {
            assert!(!same_refund(&first, &other), "{other:?}");
        }
    }
}
