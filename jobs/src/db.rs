//! Connecting to PostgreSQL, migrating our schema, and pruning old rows.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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
