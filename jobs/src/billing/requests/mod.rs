//! Billing requests: a user asks for a Stripe Checkout or Billing Portal session, or a Telegram
//! Stars invoice link; the web process stores the request with its job; a `checkout` worker asks
//! the provider and settles the request with the URL or a readable failure; the client
//! long-polls until then.

pub mod sessions;

pub use sessions::{ReturnUrls, create_session};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::broadcast;

use crate::billing::entitlements::{self, Entitlement};
use crate::queue::{JobPayload, NewJob, Queue, enqueue};

/// The channel a settled request is announced on (by a trigger, see migration 4).
pub const CHANNEL: &str = "paygate_billing_requests";
/// How often a waiting client's request is read again even without an announcement.
const REREAD: Duration = Duration::from_secs(2);

/// Kind is what a request asks a provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A Stripe Checkout Session for a plan.
    Checkout,
    /// A Stripe Billing Portal session.
    Portal,
    /// A Telegram Stars invoice link for a plan.
    StarsInvoice,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Checkout => "checkout",
            Kind::Portal => "portal",
            Kind::StarsInvoice => "stars_invoice",
        }
    }
}

impl From<String> for Kind {
    /// The kind a stored name stands for (a CHECK constraint keeps the column to these names).
    fn from(name: String) -> Kind {
        match name.as_str() {
            "portal" => Kind::Portal,
            "stars_invoice" => Kind::StarsInvoice,
            _ => Kind::Checkout,
        }
    }
}

/// RequestStatus is where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Ready,
    Failed,
}

impl From<String> for RequestStatus {
    fn from(name: String) -> RequestStatus {
        match name.as_str() {
            "ready" => RequestStatus::Ready,
            "failed" => RequestStatus::Failed,
            _ => RequestStatus::Pending,
        }
    }
}

/// BillingRequest is a stored request.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BillingRequest {
    pub id: i64,
    pub user_id: i64,
    #[sqlx(try_from = "String")]
    pub kind: Kind,
    pub plan: Option<String>,
    pub idempotency_key: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: RequestStatus,
    pub url: Option<String>,
    pub failure: Option<String>,
    /// The chat with the bot the request was made in, which its link (or failure) is sent to.
    pub reply_chat_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "id, user_id, kind, plan, idempotency_key, status, url, failure, reply_chat_id, created_at, updated_at"
    };
}

/// CreateSession is the `checkout` job that asks Stripe for a request's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSession {
    pub request_id: i64,
}

impl JobPayload for CreateSession {
    const QUEUE: Queue = Queue::Checkout;
}

/// How many new requests one user may make in any [`LIMIT_WINDOW`], all kinds together: each is
/// a call to the provider, on an account whose rate limit everyone's checkouts and refunds share.
pub const LIMIT: i64 = 10;
/// The sliding window of [`LIMIT`].
pub const LIMIT_WINDOW: Duration = Duration::from_secs(600);
/// A pending request of the same user, kind and plan younger than this answers a new one without
/// an idempotency key: a repeated tap waits for the session already being made instead of asking
/// the provider again. An older pending request (its job still retrying, or dead) no longer does.
pub const REUSE_PENDING: Duration = Duration::from_secs(600);

/// Created is what [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A request stored now, with its job.
    New(BillingRequest),
    /// An earlier request answers this one and nothing was written: the one stored with the same
    /// idempotency key, or a pending request for the same plan (see [`REUSE_PENDING`]).
    Existing(BillingRequest),
    /// Nothing was written: the user made [`LIMIT`] requests in the last [`LIMIT_WINDOW`], and the
    /// oldest of them leaves the window after `retry_after`.
    Limited { retry_after: Duration },
    /// Nothing was written: the user has a renewing subscription to the plan asked for (the
    /// purchase guard, [`entitlements::renewing`]).
    AlreadySubscribed(Entitlement),
}

/// Stores a request of `user_id` and enqueues its session's creation; run it in a transaction,
/// so that the two commit together. A repeated `idempotency_key` of the same user and kind
/// returns the first request and writes nothing; without a key, so does a pending request for the
/// same kind and plan. A purchase of a plan the user has a renewing subscription to is refused,
/// and so is a new request over the user's [`LIMIT`]. The user's requests are serialised
/// by a transaction-level advisory lock, so that concurrent calls count and reuse exactly.
/// A request made in a chat with the bot names it (`reply_chat_id`), for its link to be sent
/// there; an existing request that answers it does not take the chat (see [`reply_in`]).
pub async fn create(
    conn: &mut PgConnection,
    user_id: i64,
    kind: Kind,
    plan: Option<&str>,
    idempotency_key: Option<&str>,
    reply_chat_id: Option<i64>,
) -> Result<Created, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('billing_requests:' || $1::text, 0))")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    if let Some(key) = idempotency_key {
        let first: Option<BillingRequest> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM billing_requests WHERE user_id = $1 AND kind = $2 AND idempotency_key = $3"
        ))
        .bind(user_id)
        .bind(kind.name())
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(first) = first {
            return Ok(Created::Existing(first));
        }
    }
    // Before a pending request is reused: its link, made before the subscription began, would
    // sell the plan a second time.
    if let (Kind::Checkout | Kind::StarsInvoice, Some(plan)) = (kind, plan)
        && let Some(subscribed) = entitlements::renewing(conn, user_id, plan).await?.into_iter().next()
    {
        return Ok(Created::AlreadySubscribed(subscribed));
    }
    // Only a request without a key of its own: one with a new key is answered by that key ever
    // after, which a reused request would not be stored under.
    let pending: Option<BillingRequest> = if idempotency_key.is_some() {
        None
    } else {
        sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM billing_requests
         WHERE user_id = $1 AND kind = $2 AND plan IS NOT DISTINCT FROM $3 AND status = 'pending'
           AND created_at > now() - make_interval(secs => $4)
         ORDER BY id DESC LIMIT 1"
        ))
        .bind(user_id)
        .bind(kind.name())
        .bind(plan)
        .bind(REUSE_PENDING.as_secs_f64())
        .fetch_optional(&mut *conn)
        .await?
    };
    if let Some(pending) = pending {
        return Ok(Created::Existing(pending));
    }
    // The oldest of the user's last LIMIT requests: the window is full while it is in it.
    let oldest_of_last: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - created_at)::float8 FROM billing_requests
         WHERE user_id = $1 ORDER BY created_at DESC, id DESC OFFSET $2 - 1 LIMIT 1",
    )
    .bind(user_id)
    .bind(LIMIT)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(age) = oldest_of_last.filter(|age| *age < LIMIT_WINDOW.as_secs_f64()) {
        let retry_after = Duration::from_secs_f64(LIMIT_WINDOW.as_secs_f64() - age);
        return Ok(Created::Limited { retry_after });
    }
    let request: BillingRequest = sqlx::query_as(concat!(
        "INSERT INTO billing_requests (user_id, kind, plan, idempotency_key, reply_chat_id)
         VALUES ($1, $2, $3, $4, $5) RETURNING ",
        columns!()
    ))
    .bind(user_id)
    .bind(kind.name())
    .bind(plan)
    .bind(idempotency_key)
    .bind(reply_chat_id)
    .fetch_one(&mut *conn)
    .await?;
    let job = CreateSession { request_id: request.id };
    enqueue(conn, &NewJob::new(&job, format!("billing_request:{}", request.id))).await?;
    Ok(Created::New(request))
}

/// The request with this id.
pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<BillingRequest>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM billing_requests WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Settlement is how a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement<'a> {
    Ready { url: &'a str, provider_id: &'a str },
    Failed { reason: &'a str },
}

/// Makes request `id` send its link into `chat_id` once it is settled. Returns `None` while it
/// is pending (the worker that settles it sends the link), or the request as settled, whose link
/// the caller sends. The row lock orders this against [`settle`]: whichever comes second sees
/// what the first did.
pub async fn reply_in(conn: &mut PgConnection, id: i64, chat_id: i64) -> Result<Option<BillingRequest>, sqlx::Error> {
    let pending: Option<i64> = sqlx::query_scalar(
        "UPDATE billing_requests SET reply_chat_id = $2 WHERE id = $1 AND status = 'pending' RETURNING id",
    )
    .bind(id)
    .bind(chat_id)
    .fetch_optional(&mut *conn)
    .await?;
    if pending.is_some() {
        return Ok(None);
    }
    Ok(get(conn, id).await?.map(|request| BillingRequest {
        reply_chat_id: Some(chat_id),
        ..request
    }))
}

/// Settles a pending request and returns it as settled; a request that is already settled
/// stays as it is (`None`). Run it in the job's effect transaction: the commit wakes
/// long-polling clients.
pub async fn settle(
    conn: &mut PgConnection,
    id: i64,
    settlement: Settlement<'_>,
) -> Result<Option<BillingRequest>, sqlx::Error> {
    let (status, url, provider_id, failure) = match settlement {
        Settlement::Ready { url, provider_id } => ("ready", Some(url), Some(provider_id), None),
        Settlement::Failed { reason } => ("failed", None, None, Some(reason)),
    };
    sqlx::query_as(concat!(
        "UPDATE billing_requests SET status = $2, url = $3, provider_id = $4, failure = $5, updated_at = now()
         WHERE id = $1 AND status = 'pending' RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(status)
    .bind(url)
    .bind(provider_id)
    .bind(failure)
    .fetch_optional(conn)
    .await
}

/// Settled tells long-polling clients which requests settled, from one LISTEN connection per
/// process.
#[derive(Debug, Clone)]
pub struct Settled {
    sender: broadcast::Sender<i64>,
}

impl Settled {
    /// Starts listening; the task ends when every [`Settled`] clone is dropped.
    pub async fn listen(pool: &PgPool) -> Result<Settled, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let (sender, _) = broadcast::channel(1024);
        let weak = sender.downgrade();
        tokio::spawn(async move {
            loop {
                // try_recv would hide a lost connection; recv reconnects by itself and an id
                // missed meanwhile only makes its waiter re-read at its deadline.
                let Ok(notification) = listener.recv().await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let Some(sender) = weak.upgrade() else { return };
                if let Ok(id) = notification.payload().parse::<i64>() {
                    let _ = sender.send(id);
                }
            }
        });
        Ok(Settled { sender })
    }

    /// The request `id` once it is settled, or as it stands at `timeout`. Reads the row once
    /// before waiting and once after each announcement for it, so no settlement is missed.
    pub async fn wait(&self, pool: &PgPool, id: i64, timeout: Duration) -> Result<Option<BillingRequest>, sqlx::Error> {
        let mut announcements = self.sender.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut conn = pool.acquire().await?;
            let request = get(&mut conn, id).await?;
            drop(conn);
            match &request {
                Some(r) if r.status == RequestStatus::Pending => {}
                _ => return Ok(request),
            }
            loop {
                // Re-read at least every REREAD too, in case the announcement was lost with the
                // LISTEN connection.
                let until = deadline.min(tokio::time::Instant::now() + REREAD);
                match tokio::time::timeout_at(until, announcements.recv()).await {
                    Err(_) if until == deadline => return Ok(request),
                    Err(_) => break,
                    Ok(Ok(settled)) if settled != id => continue,
                    // Ours, or announcements were lost (lagged/closed): read again.
                    Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                }
            }
        }
    }
}
