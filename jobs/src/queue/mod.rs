//! The durable job pipeline: names, enqueueing, the effect protocol, retries, dead letters.
//!
//! A job's life (drawn in docs/state_machine.md): a producer [`enqueue`]s it inside its own
//! transaction; a worker's [`backend`] fetches it (`pending` → `running`, attempt + 1); the
//! handler applies its effect through an [`effect::EffectTx`], which claims the job's logical key
//! in the effect ledger and marks the job `completed` in the same commit; a failure goes through
//! [`outcome`] to a later `run_at` ([`backoff`]) or to `dead`, where [`ops`] can see it, retry it
//! or discard it. [`maintenance`] rescues jobs of dead workers and prunes finished ones; a worker
//! proves it is alive, and stops what it can no longer prove it owns, by its [`lease`].

pub mod backend;
pub mod backoff;
pub mod effect;
pub mod enqueue;
pub mod lease;
pub mod maintenance;
pub mod ops;
pub mod outcome;

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use backoff::RetryPolicy;
pub use effect::{Completed, EffectTx, apply_once, complete_unchanged};
pub use enqueue::{Enqueued, NewJob, enqueue, enqueue_many};
pub use outcome::JobError;

/// Queue is one of the pipeline's queues. Its wire name (the `jobs.queue` column, the API, the
/// CLI) is [`Queue::name`], pinned by a golden test: renaming one strands its queued jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum Queue {
    Entitlements,
    Refunds,
    Notifications,
    Broadcasts,
    Checkout,
    Tracking,
}

impl Queue {
    /// Every queue, in a stable order.
    pub const ALL: [Queue; 6] = [
        Queue::Entitlements,
        Queue::Refunds,
        Queue::Notifications,
        Queue::Broadcasts,
        Queue::Checkout,
        Queue::Tracking,
    ];

    /// The queue's wire name.
    pub const fn name(self) -> &'static str {
        match self {
            Queue::Entitlements => "entitlements",
            Queue::Refunds => "refunds",
            Queue::Notifications => "notifications",
            Queue::Broadcasts => "broadcasts",
            Queue::Checkout => "checkout",
            Queue::Tracking => "tracking",
        }
    }

    /// How this queue's failed jobs are retried.
    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            // Their Stripe calls carry an idempotency key, which Stripe forgets after 24 hours:
            // the last retry must come well before that, or a refund could be made twice.
            Queue::Refunds | Queue::Checkout => RetryPolicy::WITHIN_A_DAY,
            _ => RetryPolicy::DEFAULT,
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// UnknownQueue is a queue name that names none of [`Queue::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown queue {0:?}; the queues are entitlements, refunds, notifications, broadcasts, checkout, tracking")]
pub struct UnknownQueue(pub String);

impl FromStr for Queue {
    type Err = UnknownQueue;

    fn from_str(s: &str) -> Result<Queue, UnknownQueue> {
        Queue::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| UnknownQueue(s.to_string()))
    }
}

/// JobPayload is the data of one kind of job, bound to the queue that carries it. New fields must
/// be `#[serde(default)]` so that jobs queued before a deploy still decode after it.
pub trait JobPayload: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The queue this kind of job travels on.
    const QUEUE: Queue;
}

/// Job is what a handler receives: a fetched job row with its decoded payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job<T> {
    pub id: i64,
    pub queue: Queue,
    pub logical_key: String,
    /// This attempt's number, 1 for the first.
    pub attempt: i32,
    pub max_attempts: i32,
    /// The worker that fetched this attempt: failures are recorded only while the job is still
    /// this worker's, so a stale attempt cannot move a job another worker has since taken.
    pub worker: String,
    pub payload: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_wire_names_are_pinned() {
        let names: Vec<&str> = Queue::ALL.iter().map(|q| q.name()).collect();
        assert_eq!(
            names,
            [
                "entitlements",
                "refunds",
                "notifications",
                "broadcasts",
                "checkout",
                "tracking"
            ]
        );
        for q in Queue::ALL {
            assert_eq!(serde_json::to_value(q).unwrap(), q.name());
            assert_eq!(q.name().parse::<Queue>(), Ok(q));
        }
    }

    #[test]
    fn an_unknown_queue_name_is_refused() {
        assert_eq!(
            "Notifications".parse::<Queue>(),
            Err(UnknownQueue("Notifications".into()))
        );
        assert!("".parse::<Queue>().is_err());
    }
}
