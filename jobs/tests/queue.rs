//! The queue's SQL against a real PostgreSQL: enqueue, fetch, the effect ledger, failures,
//! dead letters, rescue and pruning.

use std::time::Duration;

use apalis_core::backend::persistence::Persistence;
use apalis_core::worker::context::WorkerContext;
use jobs::metrics::JobStats;
use jobs::queue::backend::JobStore;
use jobs::queue::effect::Begun;
use jobs::queue::lease::{self, Lease};
use jobs::queue::ops::{self, Bulk, Change, DeadFilter};
use jobs::queue::outcome::run_attempt;
use jobs::queue::{EffectTx, Enqueued, Job, JobError, JobPayload, NewJob, Queue, enqueue, maintenance};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Touch {
    n: i64,
}

impl JobPayload for Touch {
    const QUEUE: Queue = Queue::Tracking;
}

async fn pool() -> PgPool {
    let url = sandbox::postgres::test_database().await;
    jobs::db::connect(&url, 5).await.unwrap()
}

async fn add(pool: &PgPool, job: NewJob) -> Enqueued {
    let mut tx = pool.begin().await.unwrap();
    let e = enqueue(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    e
}

async fn fetch(pool: &PgPool, worker: &str, n: i64) -> Vec<Job<Touch>> {
    let mut store = JobStore::<Touch>::new_for_tests(pool.clone(), n);
    store
        .fetch_next(&WorkerContext::new(worker))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.args)
        .collect()
}

async fn state(pool: &PgPool, id: i64) -> (String, i32, serde_json::Value) {
    sqlx::query_as("SELECT state, attempt, errors FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The job's effect: one row in a table made for the test, through the effect protocol.
async fn apply(pool: &PgPool, job: &Job<Touch>) -> jobs::queue::Completed {
    sqlx::query("CREATE TABLE IF NOT EXISTS touches (n bigint)")
        .execute(pool)
        .await
        .unwrap();
    match EffectTx::begin(pool, job).await.unwrap() {
        Begun::Fresh(mut tx) => {
            sqlx::query("INSERT INTO touches VALUES ($1)")
                .bind(job.payload.n)
                .execute(tx.conn())
                .await
                .unwrap();
            tx.commit().await.unwrap()
        }
        Begun::AlreadyApplied(done) => done,
    }
}

async fn touches(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM touches")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_enqueue_of_the_same_logical_job_is_a_no_op() {
    let pool = pool().await;
    let first = add(&pool, NewJob::new(&Touch { n: 1 }, "k1")).await;
    let second = add(&pool, NewJob::new(&Touch { n: 2 }, "k1")).await;
    assert!(matches!(first, Enqueued::New(_)));
    assert_eq!(second, Enqueued::Duplicate(first.id()));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn an_enqueue_rolled_back_with_its_producer_leaves_nothing() {
    let pool = pool().await;
    let mut tx = pool.begin().await.unwrap();
    enqueue(&mut tx, &NewJob::new(&Touch { n: 1 }, "k1")).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(fetch(&pool, "w", 10).await.is_empty());
}

#[tokio::test]
async fn fetch_takes_due_jobs_in_order_once_and_counts_the_attempt() {
    let pool = pool().await;
    for n in 0..5 {
        add(&pool, NewJob::new(&Touch { n }, format!("k{n}"))).await;
    }
    add(
        &pool,
        NewJob::new(&Touch { n: 99 }, "later").run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    let a = fetch(&pool, "a", 3).await;
    let b = fetch(&pool, "b", 3).await;
    assert_eq!(a.iter().map(|j| j.payload.n).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        b.iter().map(|j| j.payload.n).collect::<Vec<_>>(),
        [3, 4],
        "the scheduled job is not due"
    );
    assert!(a.iter().chain(&b).all(|j| j.attempt == 1));
    assert!(fetch(&pool, "c", 3).await.is_empty());
}

/// The tracking queue's statistics.
async fn tracking_stats(pool: &PgPool) -> ops::QueueStats {
    let stats = ops::queue_stats(pool).await.unwrap();
    stats.into_iter().find(|q| q.queue == "tracking").unwrap()
}

#[tokio::test]
async fn a_paused_queue_is_fetched_from_by_no_worker_until_resumed() {
    let pool = pool().await;
    for n in 0..3 {
        add(&pool, NewJob::new(&Touch { n }, format!("k{n}"))).await;
    }
    assert!(ops::pause(&pool, Queue::Tracking).await.unwrap());
    assert!(!ops::pause(&pool, Queue::Tracking).await.unwrap(), "paused already");
    assert!(fetch(&pool, "w", 3).await.is_empty());
    let paused = tracking_stats(&pool).await;
    assert!(paused.paused && paused.pending == 3, "{paused:?}");
    // Other queues are not paused.
    let stats = ops::queue_stats(&pool).await.unwrap();
    assert_eq!(stats.iter().filter(|q| q.paused).count(), 1);

    assert!(ops::resume(&pool, Queue::Tracking).await.unwrap());
    assert!(!ops::resume(&pool, Queue::Tracking).await.unwrap(), "not paused");
    let fetched = fetch(&pool, "w", 3).await;
    assert_eq!(fetched.len(), 3);
    for job in &fetched {
        let _ = apply(&pool, job).await;
    }
    let done = tracking_stats(&pool).await;
    assert!(!done.paused);
    assert_eq!(
        (
            done.completed_last_minute,
            done.completed_last_5_minutes,
            done.completed_last_hour
        ),
        (3, 3, 3)
    );
    assert!((done.completed_per_second - 3.0 / 300.0).abs() < 1e-9, "{done:?}");
    // Completed more than an hour ago counts in no window.
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '2 minutes' WHERE id = $1")
        .bind(fetched[0].id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '61 minutes' WHERE id = $1")
        .bind(fetched[1].id)
        .execute(&pool)
        .await
        .unwrap();
    let aged = tracking_stats(&pool).await;
    assert_eq!(
        (
            aged.completed_last_minute,
            aged.completed_last_5_minutes,
            aged.completed_last_hour
        ),
        (1, 2, 2)
    );
}

#[tokio::test]
async fn running_a_job_twice_applies_its_effect_once() {
    let pool = pool().await;
    add(&pool, NewJob::new(&Touch { n: 7 }, "k")).await;
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    let _ = apply(&pool, &job).await;
    let _ = apply(&pool, &job).await;
    assert_eq!(touches(&pool).await, 1);
    assert_eq!(state(&pool, job.id).await.0, "completed");
    // A re-enqueue after the job row is pruned is refused by the ledger.
    maintenance::prune_finished(&pool, Duration::ZERO).await.unwrap();
    assert_eq!(
        add(&pool, NewJob::new(&Touch { n: 7 }, "k")).await,
        Enqueued::Duplicate(None)
    );
}

#[tokio::test]
async fn two_runs_racing_on_one_job_apply_it_once() {
    let pool = pool().await;
    add(&pool, NewJob::new(&Touch { n: 7 }, "k")).await;
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    sqlx::query("CREATE TABLE touches (n bigint)")
        .execute(&pool)
        .await
        .unwrap();
    let runs = (0..8).map(|_| {
        let (pool, job) = (pool.clone(), job.clone());
        tokio::spawn(async move {
            let _ = apply(&pool, &job).await;
        })
    });
    for run in runs.collect::<Vec<_>>() {
        run.await.unwrap();
    }
    assert_eq!(touches(&pool).await, 1);
}

#[tokio::test]
async fn a_retryable_failure_is_scheduled_with_backoff_and_recorded() {
    let pool = pool().await;
    let id = add(&pool, NewJob::new(&Touch { n: 1 }, "k")).await.id().unwrap();
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    run_attempt(&pool, &JobStats::default(), job, |_| async {
        Err(JobError::Retryable("provider 503".into()))
    })
    .await
    .unwrap();
    let (st, attempt, errors) = state(&pool, id).await;
    assert_eq!((st.as_str(), attempt), ("pending", 1));
    assert_eq!(errors[0]["error"], "provider 503");
    assert_eq!(errors[0]["kind"], "retryable");
    let delay: f64 = sqlx::query_scalar("SELECT extract(epoch FROM run_at - now())::float8 FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!((3.0..=6.5).contains(&delay), "first retry is 5 s ± 25%, got {delay}");
    assert!(fetch(&pool, "w", 1).await.is_empty(), "not due yet");
}

#[tokio::test]
async fn retry_after_does_not_burn_an_attempt_and_a_panic_is_a_failure() {
    let pool = pool().await;
    let id = add(&pool, NewJob::new(&Touch { n: 1 }, "k")).await.id().unwrap();
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    let deferred = JobError::RetryAfter {
        delay: Duration::ZERO,
        reason: Some("429".into()),
    };
    run_attempt(&pool, &JobStats::default(), job, |_| async move { Err(deferred) })
        .await
        .unwrap();
    assert_eq!(state(&pool, id).await.1, 0);
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    assert_eq!(job.attempt, 1);
    run_attempt(&pool, &JobStats::default(), job, |_| async { panic!("bug") })
        .await
        .unwrap();
    let (st, attempt, errors) = state(&pool, id).await;
    assert_eq!((st.as_str(), attempt), ("pending", 1));
    assert_eq!(errors[1]["error"], "handler panicked: bug");
}

#[tokio::test]
async fn the_last_failure_kills_the_job_and_ops_can_retry_or_discard_it() {
    let pool = pool().await;
    let id = add(&pool, NewJob::new(&Touch { n: 1 }, "k").max_attempts(2))
        .await
        .id()
        .unwrap();
    for attempt in 1..=2 {
        sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        let job = fetch(&pool, "w", 1).await.pop().unwrap();
        let error = format!("failure {attempt}");
        run_attempt(&pool, &JobStats::default(), job, |_| async move {
            Err(JobError::Retryable(error))
        })
        .await
        .unwrap();
    }
    let (st, _, errors) = state(&pool, id).await;
    assert_eq!(st, "dead");
    assert_eq!(errors.as_array().unwrap().len(), 2, "every attempt's error is kept");

    let dead = ops::list_dead(
        &pool,
        &DeadFilter {
            queue: Some(Queue::Tracking),
            ..Default::default()
        },
        10,
        None,
    )
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("failure 2"));
    let other = DeadFilter {
        queue: Some(Queue::Notifications),
        ..Default::default()
    };
    assert!(ops::list_dead(&pool, &other, 10, None).await.unwrap().is_empty());
    let old = DeadFilter {
        older_than: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    assert!(ops::list_dead(&pool, &old, 10, None).await.unwrap().is_empty());

    let stats = ops::queue_stats(&pool).await.unwrap();
    assert_eq!(stats.iter().find(|s| s.queue == "tracking").unwrap().dead, 1);

    assert_eq!(ops::retry(&pool, id, false).await.unwrap(), Change::Done);
    assert_eq!(
        ops::retry(&pool, id, false).await.unwrap(),
        Change::WrongState("pending".into())
    );
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    assert_eq!(job.attempt, 1, "a retried job gets a fresh round of attempts");
    run_attempt(&pool, &JobStats::default(), job, |_| async {
        Err(JobError::Terminal("400".into()))
    })
    .await
    .unwrap();
    assert_eq!(state(&pool, id).await.0, "dead", "a terminal error skips the retries");
    assert_eq!(ops::discard(&pool, id).await.unwrap(), Change::Done);
    assert_eq!(ops::discard(&pool, 999_999).await.unwrap(), Change::NotFound);
}

/// A bulk change over more than a batch commits batch by batch and says how far it got after
/// each; a job that dies after the change began is left to the next one.
#[tokio::test]
async fn bulk_changes_go_a_batch_at_a_time_and_report_each() {
    let pool = pool().await;
    let n = 2 * ops::BULK_BATCH + 500;
    sqlx::query(
        "INSERT INTO jobs (queue, logical_key, payload, state, attempt, max_attempts, finished_at)
         SELECT 'tracking', 'bulk:' || i, '{\"n\": 0}', 'dead', 5, 5, now()
         FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(&pool)
    .await
    .unwrap();
    let all = DeadFilter::default();
    let mut seen = Vec::new();
    let bulk = ops::retry_matching(&pool, &all, false, false, |so_far| seen.push(so_far))
        .await
        .unwrap();
    assert_eq!(bulk.count, n as u64);
    let batch = ops::BULK_BATCH as u64;
    assert_eq!(seen, [batch, 2 * batch, n as u64]);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'pending' AND attempt = 0")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, n);

    sqlx::query("UPDATE jobs SET state = 'dead' WHERE logical_key LIKE 'bulk:%'")
        .execute(&pool)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let discarded = ops::discard_matching(&pool, &all, false, |so_far| seen.push(so_far))
        .await
        .unwrap();
    assert_eq!(discarded, n as u64);
    assert_eq!(seen, [batch, 2 * batch, n as u64]);

    // Jobs that die while a retry runs (here: every job of the first batch dies again as soon
    // as it is retried) are not retried a second time by the same run.
    sqlx::query("UPDATE jobs SET state = 'dead' WHERE logical_key LIKE 'bulk:%'")
        .execute(&pool)
        .await
        .unwrap();
    let pool2 = pool.clone();
    let redie = tokio::spawn(async move {
        loop {
            let n: u64 =
                sqlx::query("UPDATE jobs SET state = 'dead' WHERE state = 'pending' AND logical_key LIKE 'bulk:%'")
                    .execute(&pool2)
                    .await
                    .unwrap()
                    .rows_affected();
            if n >= ops::BULK_BATCH as u64 {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    let bulk = ops::retry_matching(&pool, &all, false, false, |_| {}).await.unwrap();
    redie.abort();
    assert_eq!(bulk.count, n as u64, "each job once");
}

#[tokio::test]
async fn retry_matching_and_discard_matching_follow_the_filter() {
    let pool = pool().await;
    for n in 0..3 {
        add(&pool, NewJob::new(&Touch { n }, format!("k{n}"))).await;
    }
    for job in fetch(&pool, "w", 3).await {
        run_attempt(&pool, &JobStats::default(), job, |_| async {
            Err(JobError::Terminal("no".into()))
        })
        .await
        .unwrap();
    }
    let none = DeadFilter {
        queue: Some(Queue::Refunds),
        ..Default::default()
    };
    assert_eq!(
        ops::retry_matching(&pool, &none, false, false, |_| {}).await.unwrap(),
        Bulk::default()
    );
    let tracking = DeadFilter {
        queue: Some(Queue::Tracking),
        ..Default::default()
    };
    let three = Bulk {
        count: 3,
        skipped_past_key_memory: 0,
    };
    // A dry run counts and changes nothing.
    assert_eq!(
        ops::retry_matching(&pool, &tracking, false, true, |_| {})
            .await
            .unwrap(),
        three
    );
    assert_eq!(
        ops::queue_stats(&pool)
            .await
            .unwrap()
            .iter()
            .map(|q| q.dead)
            .sum::<i64>(),
        3
    );
    assert_eq!(
        ops::retry_matching(&pool, &tracking, false, false, |_| {})
            .await
            .unwrap(),
        three
    );
    for job in fetch(&pool, "w", 3).await {
        run_attempt(&pool, &JobStats::default(), job, |_| async {
            Err(JobError::Terminal("no".into()))
        })
        .await
        .unwrap();
    }
    assert_eq!(
        ops::discard_matching(&pool, &DeadFilter::default(), true, |_| {})
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        ops::discard_matching(&pool, &DeadFilter::default(), false, |_| {})
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        ops::discard_matching(&pool, &DeadFilter::default(), true, |_| {})
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_silent_workers_jobs_are_rescued_and_a_stopping_worker_hands_back() {
    let pool = pool().await;
    for n in 0..4 {
        add(&pool, NewJob::new(&Touch { n }, format!("k{n}"))).await;
    }
    maintenance::register_worker(&pool, "dead-one", &["tracking"])
        .await
        .unwrap();
    maintenance::register_worker(&pool, "live-one", &["tracking"])
        .await
        .unwrap();
    let lost = fetch(&pool, "dead-one", 2).await;
    let kept = fetch(&pool, "live-one", 2).await;
    sqlx::query("UPDATE job_workers SET last_seen = now() - interval '1 minute' WHERE name = 'dead-one'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        maintenance::rescue_orphans(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        2
    );
    let (st, attempt, errors) = state(&pool, lost[0].id).await;
    assert_eq!((st.as_str(), attempt), ("pending", 1));
    assert_eq!(errors[0]["kind"], "orphaned");
    assert_eq!(state(&pool, kept[0].id).await.0, "running");

    assert_eq!(maintenance::hand_back(&pool, "live-one").await.unwrap(), 2);
    assert_eq!(
        state(&pool, kept[0].id).await.1,
        0,
        "a handed-back attempt is not counted"
    );
    assert_eq!(fetch(&pool, "w", 10).await.len(), 4);
}

#[tokio::test]
async fn heartbeats_keep_the_lease_while_the_pool_is_saturated() {
    let pool = pool().await;
    // Every connection of the pool is taken, as by jobs stalled on a lock.
    let mut taken = Vec::new();
    for _ in 0..5 {
        taken.push(pool.acquire().await.unwrap());
    }
    let lease = Lease::new();
    let workers = vec!["p1:tracking".to_string(), "p1:refunds".to_string()];
    let beating = tokio::spawn(lease::keep_alive(
        (*pool.connect_options()).clone(),
        lease.clone(),
        workers,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !lease.is_held() {
        assert!(std::time::Instant::now() < deadline, "no heartbeat got through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM job_workers WHERE last_seen > now() - interval '5 s'")
        .fetch_one(&mut *taken[0])
        .await
        .unwrap();
    assert_eq!(seen, 2, "one statement recorded both workers");
    assert!(lease.remaining() > lease::TERM - Duration::from_secs(2));
    beating.abort();
}

#[tokio::test]
async fn no_external_call_starts_for_a_job_the_worker_cannot_prove_it_owns() {
    let pool = pool().await;
    add(&pool, NewJob::new(&Touch { n: 1 }, "call")).await;
    let job = fetch(&pool, "w", 1).await.remove(0);
    let call = Duration::from_secs(20);
    assert_eq!(lease::hold_for(&pool, &Lease::renewed_now(), &job, call).await, Ok(()));

    let refused = |e: Result<(), JobError>| match e {
        Err(JobError::RetryAfter { reason, .. }) => reason.unwrap(),
        other => panic!("expected the call refused, got {other:?}"),
    };
    let never = refused(lease::hold_for(&pool, &Lease::new(), &job, call).await);
    assert!(never.contains("lease"), "{never}");
    let short = Lease::new();
    short.renew(std::time::Instant::now() - lease::TERM + Duration::from_secs(10));
    let lapsing = refused(lease::hold_for(&pool, &short, &job, call).await);
    assert!(
        lapsing.contains("lease"),
        "a lease ending within the call's timeout: {lapsing}"
    );
    assert_eq!(
        lease::hold_for(&pool, &short, &job, Duration::from_secs(5)).await,
        Ok(())
    );

    // Rescued and taken by another worker meanwhile.
    sqlx::query("UPDATE jobs SET locked_by = 'other' WHERE id = $1")
        .bind(job.id)
        .execute(&pool)
        .await
        .unwrap();
    let taken = refused(lease::hold_for(&pool, &Lease::renewed_now(), &job, call).await);
    assert!(taken.contains("no longer"), "{taken}");
}

#[tokio::test]
async fn an_undecodable_payload_kills_only_its_job() {
    let pool = pool().await;
    add(&pool, NewJob::new(&Touch { n: 1 }, "good")).await;
    let mut bad = NewJob::new(&Touch { n: 2 }, "bad");
    bad.payload = serde_json::json!({"n": "not a number"});
    let bad_id = add(&pool, bad).await.id().unwrap();
    let fetched = fetch(&pool, "w", 10).await;
    assert_eq!(fetched.len(), 1);
    let (st, _, errors) = state(&pool, bad_id).await;
    assert_eq!(st, "dead");
    assert!(
        errors[0]["error"].as_str().unwrap().starts_with("undecodable payload"),
        "{errors}"
    );
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_the_retention() {
    let pool = pool().await;
    add(&pool, NewJob::new(&Touch { n: 1 }, "k")).await;
    let job = fetch(&pool, "w", 1).await.pop().unwrap();
    let _ = apply(&pool, &job).await;
    assert_eq!(
        maintenance::prune_finished(&pool, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(maintenance::prune_finished(&pool, Duration::ZERO).await.unwrap(), 1);
}

#[tokio::test]
async fn an_enqueue_wakes_workers_only_when_its_queue_had_nothing_due() {
    let pool = pool().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    listener.listen("paygate_jobs").await.unwrap();
    let quiet = Duration::from_millis(300);

    add(&pool, NewJob::new(&Touch { n: 1 }, "first")).await;
    let woken = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.payload(), "tracking");

    // A job is already due: whoever drains the queue will find this one too.
    add(&pool, NewJob::new(&Touch { n: 2 }, "second")).await;
    assert!(
        tokio::time::timeout(quiet, listener.recv()).await.is_err(),
        "no NOTIFY while a job is due"
    );

    // A job that is not due yet wakes nobody.
    fetch(&pool, "w", 10).await;
    add(
        &pool,
        NewJob::new(&Touch { n: 3 }, "later").run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    assert!(
        tokio::time::timeout(quiet, listener.recv()).await.is_err(),
        "no NOTIFY for a scheduled job"
    );

    // Nothing due again: the next enqueue wakes the workers.
    add(&pool, NewJob::new(&Touch { n: 4 }, "fourth")).await;
    let woken = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.payload(), "tracking");
}

#[tokio::test]
async fn a_stale_attempts_failure_does_not_move_a_job_another_worker_has_taken() {
    let pool = pool().await;
    let id = add(&pool, NewJob::new(&Touch { n: 1 }, "k")).await.id().unwrap();
    let stale = fetch(&pool, "slow-worker", 1).await.pop().unwrap();
    // The slow worker is presumed dead and its job handed to another.
    sqlx::query("UPDATE jobs SET state = 'pending', locked_by = NULL WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let current = fetch(&pool, "other-worker", 1).await.pop().unwrap();
    assert_eq!(current.id, id);
    run_attempt(&pool, &JobStats::default(), stale, |_| async {
        Err(JobError::Terminal("late".into()))
    })
    .await
    .unwrap();
    let (state, locked_by): (String, Option<String>) =
        sqlx::query_as("SELECT state, locked_by FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), locked_by.as_deref()),
        ("running", Some("other-worker"))
    );
}

#[tokio::test]
async fn stripe_call_jobs_older_than_stripes_key_memory_are_retried_only_when_insisted() {
    let pool = pool().await;
    // A dead job of `queue` created `hours` ago.
    let dead = |queue: &'static str, hours: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO jobs (queue, logical_key, payload, state, attempt, max_attempts, created_at, finished_at)
                 VALUES ($1, 'old:' || gen_random_uuid(), '{}', 'dead', 12, 12,
                         now() - make_interval(hours => $2), now())
                 RETURNING id",
            )
            .bind(queue)
            .bind(hours as i32)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let old_refund = dead("refunds", 25).await;
    let old_checkout = dead("checkout", 30).await;
    let young_refund = dead("refunds", 22).await;
    let old_tracking = dead("tracking", 25).await;

    let refused = ops::retry(&pool, old_refund, false).await.unwrap();
    let Change::PastKeyMemory { queue, age } = refused else {
        panic!("{refused:?}");
    };
    assert_eq!((queue.as_str(), age.as_secs() / 3600), ("refunds", 25));
    assert_eq!(state(&pool, old_refund).await.0, "dead");
    assert_eq!(ops::retry(&pool, young_refund, false).await.unwrap(), Change::Done);
    assert_eq!(ops::retry(&pool, old_tracking, false).await.unwrap(), Change::Done);
    // A bulk retry leaves them dead, unless told.
    let all = DeadFilter::default();
    let skipped = Bulk {
        count: 0,
        skipped_past_key_memory: 2,
    };
    assert_eq!(
        ops::retry_matching(&pool, &all, false, true, |_| {}).await.unwrap(),
        skipped
    );
    assert_eq!(
        ops::retry_matching(&pool, &all, false, false, |_| {}).await.unwrap(),
        skipped
    );
    assert_eq!(state(&pool, old_checkout).await.0, "dead");
    let insisted = Bulk {
        count: 2,
        skipped_past_key_memory: 0,
    };
    assert_eq!(
        ops::retry_matching(&pool, &all, true, true, |_| {}).await.unwrap(),
        insisted
    );
    assert_eq!(state(&pool, old_checkout).await.0, "dead");
    assert_eq!(
        ops::retry_matching(&pool, &all, true, false, |_| {}).await.unwrap(),
        insisted
    );
    assert_eq!(state(&pool, old_refund).await.0, "pending");
    assert_eq!(state(&pool, old_checkout).await.0, "pending");
}

#[tokio::test]
async fn old_records_go_once_nothing_can_repeat_and_the_rest_stay() {
    let pool = pool().await;
    let run = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::raw_sql(sql).execute(&pool).await.unwrap() }
    };
    // "old" is 40 days ago, past the 30-day retention; "young" is 1 day ago.
    run(
        "INSERT INTO jobs (queue, logical_key, payload, state, attempt, max_attempts, finished_at) VALUES
           ('notifications', 'dead-old', '{}', 'dead', 5, 5, now() - interval '40 days'),
           ('notifications', 'dead-young', '{}', 'dead', 5, 5, now() - interval '1 day'),
           ('notifications', 'pending-old', '{}', 'pending', 0, 5, NULL),
           ('entitlements', 'stripe_event:evt_pending', '{}', 'pending', 0, 5, NULL),
           ('checkout', 'billing_request:2', '{}', 'dead', 12, 12, now() - interval '1 day')",
    )
    .await;
    run(
        "INSERT INTO effect_ledger (queue, logical_key, job_id, applied_at) VALUES
           ('notifications', 'gone-old', 1, now() - interval '40 days'),
           ('notifications', 'pending-old', 1, now() - interval '40 days'),
           ('notifications', 'gone-young', 1, now() - interval '1 day')",
    )
    .await;
    run(
        "INSERT INTO telegram_deliveries (logical_key, chat_id, status, job_id, created_at) VALUES
           ('gone-old', 1, 'sent', 1, now() - interval '40 days'),
           ('pending-old', 1, 'sent', 1, now() - interval '40 days'),
           ('gone-young', 1, 'sent', 1, now() - interval '1 day')",
    )
    .await;
    run(
        "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, processed_at, outcome) VALUES
           ('evt_old', 'x', now(), false, '{}', now() - interval '40 days', now(), 'applied'),
           ('evt_unprocessed', 'x', now(), false, '{}', now() - interval '40 days', NULL, NULL),
           ('evt_pending', 'x', now(), false, '{}', now() - interval '40 days', now(), 'applied'),
           ('evt_young', 'x', now(), false, '{}', now() - interval '1 day', now(), 'applied')",
    )
    .await;
    run(
        "INSERT INTO billing_requests (id, user_id, kind, plan, created_at) VALUES
           (1, 7, 'checkout', 'pro', now() - interval '40 days'),
           (2, 7, 'checkout', 'pro', now() - interval '40 days'),
           (3, 7, 'checkout', 'pro', now() - interval '1 day')",
    )
    .await;
    run("INSERT INTO telegram_pre_checkout_queries (id, user_id, invoice_payload, currency, total_amount, ok, answered_at)
         VALUES ('q-old', 7, 'p', 'XTR', 1, true, now() - interval '40 days'),
                ('q-young', 7, 'p', 'XTR', 1, true, now() - interval '1 day')")
    .await;

    let pruned = jobs::retention::prune(&pool, jobs::retention::DEFAULT_RECORD_RETENTION)
        .await
        .unwrap();
    assert_eq!(
        pruned,
        jobs::retention::Pruned {
            effect_ledger: 1,
            telegram_deliveries: 1,
            stripe_events: 1,
            billing_requests: 1,
            pre_checkout_queries: 1,
            dead_jobs: 1,
        }
    );
    let left = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Vec<String>>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        left("SELECT array_agg(logical_key ORDER BY logical_key) FROM jobs").await,
        [
            "billing_request:2",
            "dead-young",
            "pending-old",
            "stripe_event:evt_pending"
        ]
    );
    assert_eq!(
        left("SELECT array_agg(logical_key ORDER BY logical_key) FROM effect_ledger").await,
        ["gone-young", "pending-old"],
        "a key stays while its job does"
    );
    assert_eq!(
        left("SELECT array_agg(logical_key ORDER BY logical_key) FROM telegram_deliveries").await,
        ["gone-young", "pending-old"]
    );
    assert_eq!(
        left("SELECT array_agg(id ORDER BY id) FROM stripe_events").await,
        ["evt_pending", "evt_unprocessed", "evt_young"]
    );
    assert_eq!(
        left("SELECT array_agg(id::text ORDER BY id) FROM billing_requests").await,
        ["2", "3"]
    );
    assert_eq!(
        left("SELECT array_agg(id ORDER BY id) FROM telegram_pre_checkout_queries").await,
        ["q-young"]
    );
    // A retention under the least is taken as the least: nothing a day old goes. And a Stripe
    // event stays 31 days whatever the retention: Stripe lets anyone resend one for 30.
    run(
        "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, processed_at, outcome)
         VALUES ('evt_10_days', 'x', now(), false, '{}', now() - interval '10 days', now(), 'applied')",
    )
    .await;
    let again = jobs::retention::prune(&pool, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
}
