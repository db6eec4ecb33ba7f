//! Worker processes that die: killed outright (SIGKILL) or stopped by the platform (SIGTERM).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::{World, exited, signal};
use sandbox::telegram::Limits;

const JOBS: i64 = 600;

async fn enqueue_to_distinct_chats(world: &World) {
    for i in 0..JOBS {
        world.notify(&format!("crash-{i}"), 1000 + i, "hello").await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_no_effect_and_doubles_none() {
    let world = World::new(Limits {
        per_second: 1000.0,
        ..Limits::default()
    })
    .await;
    enqueue_to_distinct_chats(&world).await;

    let mut first = world.spawn_worker_process(300.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.count("SELECT count(*) FROM telegram_deliveries").await < 100 {
        assert!(Instant::now() < deadline, "the first worker made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&first, "KILL");
    exited(&mut first).await;
    let orphaned = world.count("SELECT count(*) FROM jobs WHERE state = 'running'").await;
    let done_at_kill = world.count("SELECT count(*) FROM telegram_deliveries").await;
    assert!(done_at_kill < JOBS, "the kill came too late to test anything");

    // A second worker finishes the queue, rescuing the first one's running jobs within a minute.
    let killed_at = Instant::now();
    let mut second = world.spawn_worker_process(300.0);
    world
        .wait_for_count(
            "SELECT count(*) FROM jobs WHERE state = 'completed'",
            JOBS,
            Duration::from_secs(60),
        )
        .await;
    let rescue_took = killed_at.elapsed();
    signal(&second, "TERM");
    assert!(exited(&mut second).await.success());

    // Effects: exactly one ledger row and one delivery record per job, none lost, none doubled.
    assert_eq!(world.count("SELECT count(*) FROM effect_ledger").await, JOBS);
    assert_eq!(
        world
            .count("SELECT count(DISTINCT logical_key) FROM telegram_deliveries")
            .await,
        JOBS
    );
    assert_eq!(world.count("SELECT count(*) FROM telegram_deliveries").await, JOBS);
    // Messages: every chat got its message. Only a job in flight at the kill can have been sent
    // twice (the documented window between Telegram's answer and our commit).
    let sent = world.telegram.messages();
    let chats: HashSet<i64> = sent.iter().map(|m| m.chat_id).collect();
    assert_eq!(chats.len() as i64, JOBS);
    let duplicates = sent.len() as i64 - JOBS;
    assert!(
        duplicates <= orphaned,
        "{duplicates} duplicate sends but only {orphaned} jobs were in flight"
    );
    eprintln!(
        "killed after {done_at_kill} deliveries with {orphaned} in flight; {duplicates} resent; rescued and finished in {rescue_took:?}"
    );
}

#[tokio::test]
async fn sigterm_hands_back_unfinished_work_and_exits_in_time() {
    let world = World::new(Limits {
        per_second: 1000.0,
        ..Limits::default()
    })
    .await;
    enqueue_to_distinct_chats(&world).await;
    // Slow enough that work is still queued and running when the signal comes.
    let mut worker = world.spawn_worker_process(50.0);
    world
        .wait_for_count(
            "SELECT least(count(*), 20) FROM telegram_deliveries",
            20,
            Duration::from_secs(30),
        )
        .await;
    let stopping = Instant::now();
    signal(&worker, "TERM");
    assert!(exited(&mut worker).await.success());
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "took {:?} to stop",
        stopping.elapsed()
    );
    assert_eq!(
        world.count("SELECT count(*) FROM jobs WHERE state = 'running'").await,
        0,
        "nothing left running"
    );
    assert_eq!(
        world.count("SELECT count(*) FROM job_workers").await,
        0,
        "the worker deregistered"
    );
    assert!(world.count("SELECT count(*) FROM jobs WHERE state = 'pending'").await > 0);
    assert_eq!(
        world
            .count("SELECT count(*) FROM jobs WHERE state = 'pending' AND attempt > 0")
            .await,
        0,
        "handed-back jobs keep their attempts"
    );
}
