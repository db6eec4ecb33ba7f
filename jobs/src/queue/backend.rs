//! The apalis backend that feeds workers from our `jobs` table.
//!
//! apalis-core drives it through its `Persistence` protocol (register, heartbeat, fetch, hand
//! back). What apalis-postgres does differently, and why we do not use it, is in
//! docs/adr/001-own-queue-tables.md. Outcomes are not reported back through apalis: a handler's
//! effect transaction completes its job ([`super::effect`]) and a failure is recorded by
//! [`super::outcome::run_attempt`], so apalis's completion events are not used.
//!
//! Payloads are decoded here, in the fetch, rather than by apalis's codec: apalis stops the whole
//! worker on an undecodable payload, whereas we send that one job to `dead` and carry on.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy, PollWith};
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::persistence::{Persisted, Persistence, TaskEvent};
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::layers::Identity;
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use sqlx::PgPool;

use super::lease::Lease;
use super::{Job, JobPayload, Queue, maintenance};

/// FetchSettings tunes how a worker takes jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSettings {
    /// Jobs taken per fetch; keep it near the worker's concurrency, since fetched jobs count as
    /// running (attempt taken) while they wait for a free slot.
    pub batch_size: i64,
    /// How often apalis calls the backend's heartbeat step, a no-op here: liveness is the
    /// process's [`Lease`].
    pub heartbeat: Duration,
}

/// JobStore is our `Persistence`: the SQL behind one queue's worker.
#[derive(Debug)]
pub struct JobStore<T> {
    pool: PgPool,
    queue: Queue,
    batch_size: i64,
    lease: Lease,
    _payload: PhantomData<fn() -> T>,
}

impl<T> Clone for JobStore<T> {
    fn clone(&self) -> Self {
        JobStore {
            pool: self.pool.clone(),
            queue: self.queue,
            batch_size: self.batch_size,
            lease: self.lease.clone(),
            _payload: PhantomData,
        }
    }
}

/// BackendError is a database failure in the backend; apalis stops the worker on it and the
/// supervisor in `worker` starts it again.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("jobs are enqueued with jobs::queue::enqueue, not through apalis")]
    PushUnsupported,
}

impl<T: JobPayload> JobStore<T> {
    /// A store for `T`'s queue taking `batch_size` jobs a fetch under a lease held from now, for
    /// tests that drive the `Persistence` steps by hand.
    pub fn new_for_tests(pool: PgPool, batch_size: i64) -> JobStore<T> {
        JobStore {
            pool,
            queue: T::QUEUE,
            batch_size,
            lease: Lease::renewed_now(),
            _payload: PhantomData,
        }
    }

    /// Takes up to a batch of due jobs for `worker`, oldest due first; none while ops have paused
    /// the queue ([`super::ops::pause`]), so a pause holds from every process's next fetch.
    async fn fetch(&self, worker: &str) -> Result<Vec<Task<Job<T>>>, sqlx::Error> {
        // The inner SELECT is planned knowing its LIMIT, so it walks the partial index from the
        // front however deep the backlog is (apalis-postgres's get_jobs does not: DESIGN.md).
        let mut rows: Vec<FetchedRow> = sqlx::query_as(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, locked_by = $2, locked_at = now()
             WHERE id = ANY(ARRAY(
                 SELECT id FROM jobs
                 WHERE queue = $1 AND state = 'pending' AND run_at <= now()
                   AND NOT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = $1)
                 ORDER BY run_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED))
             RETURNING id, logical_key, attempt, max_attempts, payload",
        )
        .bind(self.queue.name())
        .bind(worker)
        .bind(self.batch_size)
        .fetch_all(&self.pool)
        .await?;
        rows.sort_unstable_by_key(|r| r.id);
        let mut tasks = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_value::<T>(row.payload) {
                Ok(payload) => {
                    let job = Job {
                        id: row.id,
                        queue: self.queue,
                        logical_key: row.logical_key,
                        attempt: row.attempt,
                        max_attempts: row.max_attempts,
                        worker: worker.to_string(),
                        payload,
                    };
                    tasks.push(TaskBuilder::new(job).task_id(TaskId::Int(row.id as u64)).build());
                }
                Err(e) => {
                    // A failed burial must not strand the rest of the batch: the row stays
                    // running and is rescued as stuck later.
                    if let Err(db) = bury_undecodable(&self.pool, row.id, &e.to_string()).await {
                        tracing::error!(job = row.id, error = %db, "could not mark an undecodable job dead");
                    }
                }
            }
        }
        Ok(tasks)
    }
}

#[derive(sqlx::FromRow)]
struct FetchedRow {
    id: i64,
    logical_key: String,
    attempt: i32,
    max_attempts: i32,
    payload: serde_json::Value,
}

impl<T: JobPayload> Persistence for JobStore<T> {
    type Compact = Job<T>;
    type Response = ();
    type Error = BackendError;

    // Database failures below are absorbed rather than returned: apalis stops a worker on a
    // backend error, and a worker should ride out a database restart instead.

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), BackendError> {
        let queues = [self.queue.name()];
        (|| maintenance::register_worker(&self.pool, worker.name(), &queues))
            .retry(
                ExponentialBuilder::default()
                    .with_max_delay(Duration::from_secs(30))
                    .without_max_times(),
            )
            .notify(|e, wait| tracing::warn!(worker = worker.name(), error = %e, ?wait, "cannot register worker"))
            .await?;
        Ok(())
    }

    async fn heartbeat(&mut self, _: &WorkerContext) -> Result<(), BackendError> {
        // Liveness is the process's lease, heartbeated on a connection of its own (see
        // super::lease); apalis skips this while fetched jobs wait and while stopping.
        Ok(())
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Task<Job<T>>>, BackendError> {
        if !self.lease.is_held() {
            // Jobs taken now could be handed to another worker before this one could prove it
            // owns them: wait for a heartbeat to succeed (at start, the first comes within
            // milliseconds).
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(Vec::new());
        }
        match self.fetch(worker.name()).await {
            Ok(tasks) => Ok(tasks),
            Err(e) => {
                tracing::warn!(worker = worker.name(), error = %e, "fetching jobs failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(Vec::new())
            }
        }
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Job<T>>>,
        worker: &WorkerContext,
    ) -> Result<u64, BackendError> {
        // Fetched but never started (the worker is stopping): back to the queue, attempt unspent.
        let ids: Vec<i64> = tasks.iter().map(|t| t.args.id).collect();
        // Only rows still ours: a rescued job may already belong to another worker.
        let n = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempt = greatest(attempt - 1, 0), locked_by = NULL, locked_at = NULL
             WHERE id = ANY($1) AND state = 'running' AND locked_by = $2",
        )
        .bind(&ids)
        .bind(worker.name())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn handle_events(&mut self, _: Vec<TaskEvent<()>>, _: &WorkerContext) -> Result<(), BackendError> {
        Ok(())
    }

    async fn push_tasks(&mut self, _: Vec<Task<Job<T>>>) -> Result<(), BackendError> {
        Err(BackendError::PushUnsupported)
    }
}

/// Sends a job whose payload no longer decodes straight to `dead`: no retry can fix it.
async fn bury_undecodable(pool: &PgPool, id: i64, error: &str) -> Result<(), sqlx::Error> {
    tracing::error!(job = id, error, "undecodable job payload, job dead");
    sqlx::query(
        "UPDATE jobs SET state = 'dead', finished_at = now(), locked_by = NULL, locked_at = NULL,
                         errors = errors || jsonb_build_array(jsonb_build_object(
                             'attempt', attempt, 'at', now(), 'kind', 'terminal',
                             'error', 'undecodable payload: ' || $2::text))
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// QueueBackend is the apalis backend of one queue's worker.
#[derive(Debug)]
pub struct QueueBackend<T: JobPayload> {
    persisted: Persisted<JobStore<T>>,
    heartbeat: Duration,
}

impl<T: JobPayload> QueueBackend<T> {
    /// A backend for `T`'s queue that wakes on `wakeups` (see [`Wakeups`]) and fetches while
    /// the process holds `lease`.
    pub fn new(
        pool: PgPool,
        settings: FetchSettings,
        lease: Lease,
        wakeups: Wakeup,
    ) -> PollWith<QueueBackend<T>, Wakeup> {
        let store = JobStore {
            pool,
            queue: T::QUEUE,
            batch_size: settings.batch_size.max(1),
            lease,
            _payload: PhantomData,
        };
        PollWith::new(
            QueueBackend {
                persisted: Persisted::new(store),
                heartbeat: settings.heartbeat,
            },
            wakeups,
        )
    }
}

impl<T: JobPayload> Backend for QueueBackend<T> {
    type Task = Task<Job<T>>;
    type Error = BackendError;

    fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), BackendError>> {
        self.persisted.poll_ready(cx, worker, self.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, BackendError>>> {
        self.persisted.poll_next(cx, worker)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), BackendError>> {
        self.persisted.poll_close(cx, worker)
    }
}

impl<T: JobPayload> BackendConfig for QueueBackend<T> {
    type Args = Job<T>;
    type Id = i64;
    // Tasks leave the backend already decoded.
    type Kind = Ephemeral;
    type Config = Duration;
    type Layer = Identity;

    fn config(&self) -> &Duration {
        &self.heartbeat
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}

/// Wakeup wakes one idle worker: on every NOTIFY for its queue, and on a fallback tick that
/// catches jobs that became due by time (retries, deferrals), enqueues that sent no NOTIFY
/// because the queue already had jobs due, and notifications lost while the listener reconnected.
#[derive(Debug)]
pub struct Wakeup {
    notifications: UnboundedReceiver<()>,
    fallback: tokio::time::Interval,
}

impl PollStrategy for Wakeup {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut woken = false;
        // Drain to Pending so that the waker is registered with both sources.
        while let Poll::Ready(Some(())) = self.notifications.poll_next_unpin(cx) {
            woken = true;
        }
        while Pin::new(&mut self.fallback).poll_tick(cx).is_ready() {
            woken = true;
        }
        if woken { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}

/// Wakeups listens on the `paygate_jobs` channel and hands out one [`Wakeup`] per worker.
#[derive(Debug)]
pub struct Wakeups {
    subscribers: Vec<(Queue, futures::channel::mpsc::UnboundedSender<()>)>,
    fallback: Duration,
}

impl Wakeups {
    /// A hub whose wakeups fall back to a tick every `fallback`.
    pub fn new(fallback: Duration) -> Wakeups {
        Wakeups {
            subscribers: Vec::new(),
            fallback,
        }
    }

    /// A wakeup for a worker of `queue`.
    pub fn subscribe(&mut self, queue: Queue) -> Wakeup {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        self.subscribers.push((queue, tx));
        let mut fallback = tokio::time::interval(self.fallback);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Wakeup {
            notifications: rx,
            fallback,
        }
    }

    /// Listens until the process ends. A payload naming a queue wakes that queue's workers; any
    /// other (retries, rescues, a reconnect) wakes them all.
    pub async fn listen(self, pool: PgPool) {
        let wake = |queue: Option<Queue>| {
            for (q, tx) in &self.subscribers {
                if queue.is_none_or(|queue| queue == *q) {
                    let _ = tx.unbounded_send(());
                }
            }
        };
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "job listener cannot connect; polling only");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen("paygate_jobs").await {
                tracing::warn!(error = %e, "job listener cannot LISTEN; polling only");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            wake(None);
            // try_recv yields None when the connection drops: reconnect and wake everyone, since
            // notifications sent meanwhile are lost.
            while let Ok(Some(n)) = listener.try_recv().await {
                wake(n.payload().parse().ok());
            }
        }
    }
}
