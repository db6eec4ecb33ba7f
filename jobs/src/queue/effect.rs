//! The effect protocol: how a handler applies its database effect exactly once.
//!
//! [`EffectTx::begin`] opens a transaction and, in its first statement, claims the job's logical
//! key in the effect ledger and marks the job `completed`. The handler writes its effect and
//! enqueues its follow-up jobs (the transactional outbox) through the same transaction, then
//! [`EffectTx::commit`]s: effect, follow-ups, ledger row and completion land together or not at
//! all. A re-run of a job whose effect committed (a crash after commit, an orphan rescue, a
//! duplicate job) finds the ledger row and changes nothing. Two runs racing on the same key are
//! serialised by the ledger's primary key: the second waits for the first and then finds its row.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{Enqueued, Job, JobError, NewJob, enqueue};

/// Completed is the proof a handler returns that its job's effect is committed (or was already).
/// Only [`EffectTx::commit`] and [`Begun::AlreadyApplied`] make one, so a handler cannot report
/// success without having gone through the ledger.
#[derive(Debug)]
#[must_use]
pub struct Completed(());

/// Completer completes jobs whose effect is only their ledger row (their work happened outside
/// the database, or there was none), many at a time: requests that arrive while one batch is
/// being written go into the next, so the cost of a commit is shared by a whole batch. A handler
/// gets its [`Completed`] only after its batch committed; if the process dies first, the job is
/// run again, which is safe because it has no other database effect.
#[derive(Debug, Clone)]
pub struct Completer {
    requests: tokio::sync::mpsc::UnboundedSender<Completion>,
}

#[derive(Debug)]
struct Completion {
    queue: &'static str,
    logical_key: String,
    job_id: i64,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The most completions one statement writes.
const COMPLETION_BATCH_MAX: usize = 1000;

impl Completer {
    /// Starts the batching task; it ends when every handle is dropped.
    pub fn start(pool: PgPool) -> Completer {
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Completion>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while incoming.recv_many(&mut batch, COMPLETION_BATCH_MAX).await > 0 {
                let result = complete_many(&pool, &batch).await.map_err(|e| e.to_string());
                for completion in batch.drain(..) {
                    let _ = completion.done.send(result.clone());
                }
            }
        });
        Completer { requests }
    }

    /// Records `job`'s ledger row and completion, with others in one statement.
    pub async fn complete<T>(&self, job: &Job<T>) -> Result<Completed, String> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let completion = Completion {
            queue: job.queue.name(),
            logical_key: job.logical_key.clone(),
            job_id: job.id,
            done,
        };
        self.requests
            .send(completion)
            .map_err(|_| "the completer has stopped".to_string())?;
        committed.await.map_err(|_| "the completer has stopped".to_string())??;
        Ok(Completed(()))
    }
}

async fn complete_many(pool: &PgPool, batch: &[Completion]) -> Result<(), sqlx::Error> {
    let queues: Vec<&str> = batch.iter().map(|c| c.queue).collect();
    let keys: Vec<&str> = batch.iter().map(|c| c.logical_key.as_str()).collect();
    let ids: Vec<i64> = batch.iter().map(|c| c.job_id).collect();
    sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t (queue, logical_key, job_id)
         ), claim AS (
             INSERT INTO effect_ledger (queue, logical_key, job_id) SELECT queue, logical_key, job_id FROM input
             ON CONFLICT (queue, logical_key) DO NOTHING
         )
         UPDATE jobs SET state = 'completed', finished_at = now(), locked_by = NULL
         WHERE id = ANY($3) AND state = 'running'",
    )
    .bind(&queues)
    .bind(&keys)
    .bind(&ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// The first statement of every effect: claim the logical key in the ledger and mark the job
/// completed; selects whether the claim is new.
const CLAIM: &str = "WITH claim AS (
                         INSERT INTO effect_ledger (queue, logical_key, job_id) VALUES ($1, $2, $3)
                         ON CONFLICT (queue, logical_key) DO NOTHING
                         RETURNING 1
                     ), done AS (
                         UPDATE jobs SET state = 'completed', finished_at = now(), locked_by = NULL
                         WHERE id = $3 AND state = 'running'
                     )
                     SELECT EXISTS (SELECT 1 FROM claim)";

/// Begun says whether a job's effect is still to be applied.
#[derive(Debug)]
pub enum Begun {
    /// First time: apply the effect through this transaction, then commit it.
    Fresh(EffectTx),
    /// The ledger already records this logical job; its row is now marked completed.
    AlreadyApplied(Completed),
}

/// EffectTx is the open transaction of a job's effect.
#[derive(Debug)]
pub struct EffectTx {
    tx: Transaction<'static, Postgres>,
}

impl EffectTx {
    /// Opens the effect transaction of `job` and claims its logical key.
    pub async fn begin<T>(pool: &PgPool, job: &Job<T>) -> Result<Begun, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let claimed: bool = sqlx::query_scalar(CLAIM)
            .bind(job.queue.name())
            .bind(&job.logical_key)
            .bind(job.id)
            .fetch_one(&mut *tx)
            .await?;
        if claimed {
            Ok(Begun::Fresh(EffectTx { tx }))
        } else {
            tx.commit().await?;
            Ok(Begun::AlreadyApplied(Completed(())))
        }
    }

    /// The transaction, for the effect's own statements.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Enqueues a follow-up job that commits with the effect.
    pub async fn enqueue(&mut self, job: &NewJob) -> Result<Enqueued, sqlx::Error> {
        enqueue(&mut self.tx, job).await
    }

    /// Commits the effect, its follow-ups and the job's completion.
    pub async fn commit(self) -> Result<Completed, sqlx::Error> {
        self.tx.commit().await?;
        Ok(Completed(()))
    }
}

/// Applies `effect` through the job's effect transaction, once: a job whose logical key the
/// ledger already holds completes without running it. Every handler ends here (or in
/// [`Completer`]); the effect's own statements go through [`EffectTx::conn`].
pub async fn apply_once<T, E, F>(pool: &PgPool, job: &Job<T>, effect: F) -> Result<Completed, JobError>
where
    F: AsyncFnOnce(&mut EffectTx) -> Result<(), E>,
    JobError: From<E>,
{
    match EffectTx::begin(pool, job).await? {
        Begun::AlreadyApplied(done) => Ok(done),
        Begun::Fresh(mut tx) => {
            effect(&mut tx).await?;
            Ok(tx.commit().await?)
        }
    }
}

/// Completes `job` with nothing but its ledger row: for a job whose work was already done (a
/// request settled by an earlier attempt, a message delivered before).
pub async fn complete_unchanged<T>(pool: &PgPool, job: &Job<T>) -> Result<Completed, JobError> {
    apply_once(pool, job, async |_| Ok::<(), sqlx::Error>(())).await
}
