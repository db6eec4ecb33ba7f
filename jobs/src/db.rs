//! Connecting to PostgreSQL, migrating our schema, and pruning old rows.

use std::time::Duration;

use sqlx::postgres::{PgArguments, PgPoolOptions, PgRow};
use sqlx::query::QueryAs;
use sqlx::{FromRow, PgConnection, PgPool, Postgres};

/// Opens a pool of at most `max_connections` to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

/// Applies every migration in `migrations/` that the database has not seen yet. Safe to run again
/// and from several processes at once: sqlx serialises migrators with an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Created is what an idempotent create stored: a new row, or the one an earlier call with the
/// same idempotency key stored (and then nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    New(T),
    Existing(T),
}

impl<T> Created<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Created<U> {
        match self {
            Created::New(t) => Created::New(f(t)),
            Created::Existing(t) => Created::Existing(f(t)),
        }
    }
}

/// A query that reads rows of type `R`.
pub type RowQuery<'q, R> = QueryAs<'q, Postgres, R, PgArguments>;

/// Inserts a row once per idempotency key: `insert` is an `INSERT … ON CONFLICT DO NOTHING
/// RETURNING …`; when it returns nothing the key was taken, and `existing` (the `SELECT` of the
/// row under that key) reads the first row stored with it.
pub async fn insert_once<'q, R>(
    conn: &mut PgConnection,
    insert: RowQuery<'q, R>,
    existing: RowQuery<'q, R>,
) -> Result<Created<R>, sqlx::Error>
where
    R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    match insert.fetch_optional(&mut *conn).await? {
        Some(row) => Ok(Created::New(row)),
        None => Ok(Created::Existing(existing.fetch_one(conn).await?)),
    }
}

/// How many rows one pruning statement deletes at most, so that none holds many locks.
pub const PRUNE_BATCH: i64 = 5000;

/// Runs `statement`, which deletes at most `$2` rows older than `$1` seconds, until it deletes
/// fewer than that; returns how many it deleted in all.
pub async fn delete_in_batches(pool: &PgPool, statement: &'static str, age: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(statement)
            .bind(age.as_secs_f64())
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}
