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

use super::{Enqueued, Job, NewJob, enqueue};

/// Completed is the proof a handler returns that its job's effect is committed (or was already).
/// Only [`EffectTx::commit`] and [`Begun::AlreadyApplied`] make one, so a handler cannot report
/// success without having gone through the ledger.
#[derive(Debug)]
#[must_use]
pub struct Completed(());

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
        let claimed: bool = sqlx::query_scalar(
            "WITH claim AS (
                 INSERT INTO effect_ledger (queue, logical_key, job_id) VALUES ($1, $2, $3)
                 ON CONFLICT (queue, logical_key) DO NOTHING
                 RETURNING 1
             ), done AS (
                 UPDATE jobs SET state = 'completed', finished_at = now(), locked_by = NULL
                 WHERE id = $3 AND state = 'running'
             )
             SELECT EXISTS (SELECT 1 FROM claim)",
        )
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
