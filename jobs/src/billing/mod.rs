//! Billing: plans, entitlements and the provider events and requests that change them.
//!
//! # Layout
//! - [`plans`]: the catalogue, from configuration.
//! - [`expiry`]: entitlements ended on time, and reminders before.
//! - [`entitlements`]: what users may use, one row per payment source, with its history, and
//!   [`entitlements::rule`], the provider-neutral rule both providers derive them by.
//! - [`stripe`]: the facts each Stripe event adds, and the failed-payment notices.
//! - [`stars`]: Telegram Stars payments and refunds, and the entitlement each source's payments
//!   call for.
//! - [`requests`]: Checkout, Billing Portal and Stars invoice link requests, and waiting for them.
//! - [`refunds`]: refunds ops ask for.
//! - [`users`]: Telegram users' profiles (from Mini App sign-ins) and bans.

pub mod entitlements;
pub mod expiry;
pub mod plans;
pub mod refunds;
pub mod requests;
pub mod stars;
pub mod stripe;
pub mod subscriber;
pub mod users;

pub use plans::{Plan, Plans};

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use self::stars::Applied;
use self::stripe::Links;
use crate::bot::{Bot, Texts};
use crate::metrics::JobStats;
use crate::queue::lease::{self, Lease};
use crate::queue::{Completed, EffectTx, Job, JobError, JobPayload, Queue, apply_once};
use crate::stripe::client::StripeClient;
use crate::telegram::client::TelegramClient;

/// Billing is what the billing and tracking jobs (entitlements, checkout, refunds, tracking) run
/// with.
#[derive(Debug, Clone)]
pub struct Billing {
    pub pool: PgPool,
    pub stats: Arc<JobStats>,
    pub plans: Arc<Plans>,
    /// What the bot says.
    pub texts: Arc<Texts>,
    pub links: Links,
    pub stripe: StripeClient,
    /// For Stars invoice links and Stars refunds.
    pub telegram: TelegramClient,
    /// Where Stripe sends users back to; its secret key is already in `stripe`.
    pub return_urls: Arc<requests::ReturnUrls>,
    /// How long after a promo click a payment is still attributed to it.
    pub attribution_window: Duration,
    /// The worker process's lease, checked before every provider call.
    pub lease: Lease,
    /// How long an entitlement outlasts its paid end without a renewal, for the expiry pass
    /// ([`expiry`]).
    pub grace: Duration,
}

impl Billing {
    /// The bot, as billing's messages speak for it.
    pub fn bot(&self) -> Bot<'_> {
        Bot {
            plans: &self.plans,
            texts: &self.texts,
        }
    }

    /// Checks, just before a provider call that may take up to `call`, that `job` is still this
    /// worker's for longer than the call ([`lease::hold_for`]).
    pub async fn hold<T>(&self, job: &Job<T>, call: Duration) -> Result<(), JobError> {
        lease::hold_for(&self.pool, &self.lease, job, call).await
    }
}

/// EntitlementsJob is a job of the `entitlements` queue: everything that changes what a user may
/// use, or who the user is. Tagged by `kind` in the stored payload; a payload without `kind` is a
/// Stripe event job as queued before the queue carried other jobs, so it still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "StoredEntitlementsJob")]
pub enum EntitlementsJob {
    /// Apply a stored Stripe webhook event.
    StripeEvent(stripe::ProcessStripeEvent),
    /// Grant or extend what a Telegram Stars payment buys.
    StarsPayment(stars::ApplyStarsPayment),
    /// Record a Stars refund Telegram told us of.
    StarsRefund(stars::ApplyStarsRefund),
    /// Write a Mini App user's profile.
    ProvisionUser(users::ProvisionUser),
    /// End an entitlement whose paid period ended without a renewal.
    Expire(expiry::ExpireEntitlement),
    /// Give a user a way into a paid chat, or take them out of it, as their entitlements say.
    SyncAccess(crate::access::SyncAccess),
    /// Approve or decline a request to join a paid chat.
    JoinRequest(crate::access::JoinRequest),
}

impl JobPayload for EntitlementsJob {
    const QUEUE: Queue = Queue::Entitlements;
}

/// Runs one attempt of an `entitlements` job: its facts, the entitlements they change, their
/// history rows, the user's notifications and the job's completion commit in one transaction.
pub async fn apply(billing: &Billing, job: Job<EntitlementsJob>) -> Result<Completed, JobError> {
    match &job.payload {
        // These call Telegram first, outside any transaction, then apply their effect.
        EntitlementsJob::SyncAccess(access) => crate::access::sync(billing, &job, access).await,
        EntitlementsJob::JoinRequest(request) => crate::access::answer_join_request(billing, &job, request).await,
        _ => apply_once(&billing.pool, &job, async |tx| apply_effect(billing, &job, tx).await).await,
    }
}

/// The effect of an `entitlements` job that calls no provider, in its effect transaction.
async fn apply_effect(billing: &Billing, job: &Job<EntitlementsJob>, tx: &mut EffectTx) -> Result<(), JobError> {
    let cause = job.logical_key.clone();
    match &job.payload {
        EntitlementsJob::StripeEvent(event) => {
            let outcome = stripe::apply_event(tx.conn(), billing.bot(), &billing.links, &event.event_id).await?;
            tracing::info!(
                job = job.id,
                event = event.event_id,
                outcome = outcome.name(),
                "stripe event applied"
            );
            Ok::<(), JobError>(())
        }
        EntitlementsJob::StarsPayment(payment) => {
            let applied = stars::apply_payment(tx.conn(), billing.bot(), &payment.charge_id, &cause).await?;
            match applied {
                // The webhook stores the payment with this job: it cannot be missing.
                Applied::UnknownPayment => Err(JobError::Terminal(format!("no Stars payment {}", payment.charge_id))),
                Applied::PlanNotConfigured => Err(plan_not_configured(&payment.charge_id)),
                Applied::Changed | Applied::Unchanged => {
                    tracing::info!(
                        job = job.id,
                        charge = payment.charge_id,
                        ?applied,
                        "stars payment applied"
                    );
                    Ok(())
                }
            }
        }
        EntitlementsJob::StarsRefund(refund) => {
            let applied =
                stars::mark_refunded(tx.conn(), billing.bot(), &refund.charge_id, refund.refunded_at, &cause).await?;
            if applied == Applied::PlanNotConfigured {
                return Err(plan_not_configured(&refund.charge_id));
            }
            // A refund of a payment not recorded (yet) has nothing to revoke now; the notice the
            // webhook stored marks the payment refunded if it comes later.
            tracing::info!(
                job = job.id,
                charge = refund.charge_id,
                ?applied,
                "stars refund applied"
            );
            Ok(())
        }
        EntitlementsJob::ProvisionUser(user) => Ok(users::upsert(tx.conn(), user).await?),
        EntitlementsJob::Expire(due) => {
            let ended = expiry::expire(tx.conn(), billing.bot(), due, &cause).await?;
            tracing::info!(job = job.id, source = due.source, ended, "entitlement expiry applied");
            Ok(())
        }
        // Run by `apply` through `access`, never here.
        EntitlementsJob::SyncAccess(_) | EntitlementsJob::JoinRequest(_) => Ok(()),
    }
}

/// The error for a Stars payment whose plan left the catalogue: dead at once, for ops to put the
/// plan back in `PLANS` and retry the job.
pub fn plan_not_configured(charge_id: &str) -> JobError {
    JobError::Terminal(format!(
        "the plan of Stars payment {charge_id} is not in PLANS; restore it and retry this job"
    ))
}

/// StoredEntitlementsJob is every shape an `entitlements` payload has been stored in.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredEntitlementsJob {
    Tagged(TaggedEntitlementsJob),
    /// `{"event_id": …}`: the only job of the queue until Telegram payments came.
    Untagged(stripe::ProcessStripeEvent),
}

/// TaggedEntitlementsJob reads [`EntitlementsJob`]'s own tagged form.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TaggedEntitlementsJob {
    StripeEvent(stripe::ProcessStripeEvent),
    StarsPayment(stars::ApplyStarsPayment),
    StarsRefund(stars::ApplyStarsRefund),
    ProvisionUser(users::ProvisionUser),
    Expire(expiry::ExpireEntitlement),
    SyncAccess(crate::access::SyncAccess),
    JoinRequest(crate::access::JoinRequest),
}

impl From<StoredEntitlementsJob> for EntitlementsJob {
    fn from(stored: StoredEntitlementsJob) -> EntitlementsJob {
        match stored {
            StoredEntitlementsJob::Untagged(event) => EntitlementsJob::StripeEvent(event),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::StripeEvent(e)) => EntitlementsJob::StripeEvent(e),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::StarsPayment(p)) => EntitlementsJob::StarsPayment(p),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::StarsRefund(r)) => EntitlementsJob::StarsRefund(r),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::ProvisionUser(u)) => EntitlementsJob::ProvisionUser(u),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::Expire(e)) => EntitlementsJob::Expire(e),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::SyncAccess(a)) => EntitlementsJob::SyncAccess(a),
            StoredEntitlementsJob::Tagged(TaggedEntitlementsJob::JoinRequest(r)) => EntitlementsJob::JoinRequest(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_payloads_decode_in_every_shape_they_were_stored_in() {
        let legacy: EntitlementsJob = serde_json::from_str(r#"{"event_id": "evt_1"}"#).unwrap();
        let event = stripe::ProcessStripeEvent {
            event_id: "evt_1".into(),
        };
        assert_eq!(legacy, EntitlementsJob::StripeEvent(event.clone()));
        for job in [
            EntitlementsJob::StripeEvent(event),
            EntitlementsJob::StarsPayment(stars::ApplyStarsPayment {
                charge_id: "stx1".into(),
            }),
        ] {
            let stored = serde_json::to_value(&job).unwrap();
            assert!(stored.get("kind").is_some(), "{stored}");
            assert_eq!(serde_json::from_value::<EntitlementsJob>(stored).unwrap(), job);
        }
        assert!(serde_json::from_str::<EntitlementsJob>(r#"{"kind": "other", "x": 1}"#).is_err());
    }
}
