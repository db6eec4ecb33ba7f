//! Worker processes that die: killed outright (SIGKILL) or stopped by the platform (SIGTERM).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::{World, exited, signal};
use sandbox::telegram::Limits;

const JOBS: i64 = 600;

/// Starts a worker process running the current worker code (see tests/Cargo.toml).
fn spawn_worker(world: &World, per_second: f64) -> std::process::Child {
    world.spawn_worker_process(env!("CARGO_BIN_EXE_worker-under-test"), per_second)
}

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

    let mut first = spawn_worker(&world, 300.0);
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
    let mut second = spawn_worker(&world, 300.0);
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
async fn a_kill_resends_exactly_the_messages_in_flight_and_those_are_at_most_worker_concurrency() {
    let world = World::new(Limits {
        per_second: 1000.0,
        ..Limits::default()
    })
    .await;
    // Telegram answers 300 ms after it accepted a message: at a kill, every send in flight has
    // gone out, and its worker never learnt it.
    world.telegram.delay_answers(Duration::from_millis(300));
    enqueue_to_distinct_chats(&world).await;
    let mut first = spawn_worker(&world, 300.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.count("SELECT count(*) FROM telegram_deliveries").await < 50 {
        assert!(Instant::now() < deadline, "the first worker made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&first, "KILL");
    exited(&mut first).await;
    // Let commits the server had received before the kill finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let accepted = world.telegram.messages().len() as i64;
    let recorded = world.count("SELECT count(*) FROM telegram_deliveries").await;
    let in_flight = accepted - recorded;

    let mut second = spawn_worker(&world, 300.0);
    world
        .wait_for_count(
            "SELECT count(*) FROM jobs WHERE state = 'completed'",
            JOBS,
            Duration::from_secs(90),
        )
        .await;
    signal(&second, "TERM");
    assert!(exited(&mut second).await.success());

    let duplicates = world.telegram.messages().len() as i64 - JOBS;
    eprintln!("{in_flight} messages in flight at the kill; {duplicates} sent twice");
    assert_eq!(
        duplicates, in_flight,
        "every message in flight at the kill, and only those, went twice"
    );
    assert!(
        in_flight > 0,
        "the kill found no send in flight: the window was not tested"
    );
    // The notifications queue runs WORKER_CONCURRENCY (20 by default) jobs at once per process.
    assert!(in_flight <= 20, "{in_flight} sends in flight in one process");
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
    let mut worker = spawn_worker(&world, 50.0);
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

#[tokio::test]
async fn two_worker_processes_share_one_send_pace() {
    // 30 messages, 3 to each of 10 chats, at 10 a second overall, from two processes: the fake
    // refuses (429) any send that breaks the bot-wide or per-chat limit, as Telegram does.
    let world = World::new(Limits {
        per_second: 10.0,
        ..Limits::default()
    })
    .await;
    // Both processes are taking work before the first message is queued, and each holds at most
    // 5 jobs at once, so neither can take the whole queue before the other starts (under load a
    // process can take seconds to start, and 20 at once was two thirds of the queue).
    let [mut first, mut second] = [(); 2].map(|_| {
        world
            .worker_process(env!("CARGO_BIN_EXE_worker-under-test"), 10.0)
            .env("WORKER_CONCURRENCY", "5")
            .spawn()
            .expect("starting the worker binary")
    });
    world
        .wait_for_count(
            "SELECT count(*) FROM job_workers WHERE name LIKE '%:notifications'",
            2,
            Duration::from_secs(60),
        )
        .await;
    for i in 0..30 {
        world.notify(&format!("paced-{i}"), 500 + i % 10, "paced").await;
    }
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries", 30, Duration::from_secs(60))
        .await;
    for worker in [&mut first, &mut second] {
        signal(worker, "TERM");
        assert!(exited(worker).await.success());
    }
    assert_eq!(world.telegram.rate_limited(), 0, "no send broke Telegram's limits");
    let sent = world.telegram.messages();
    assert_eq!(sent.len(), 30);
    let senders: HashSet<_> = sent.iter().map(|m| m.user_agent.clone()).collect();
    assert_eq!(senders.len(), 2, "both processes sent: {senders:?}");
}

#[tokio::test]
async fn a_stalled_database_hands_no_live_workers_jobs_to_another() {
    // 40 messages to 40 chats, drained by two processes while a lock on the send pace stalls
    // every job for longer than a silent worker is presumed alive. The pools are saturated by
    // stalled jobs, but heartbeats travel on connections of their own: no job is rescued from a
    // live worker, and no chat gets its message twice.
    const CHATS: i64 = 40;
    let world = World::new(Limits {
        per_second: 1000.0,
        ..Limits::default()
    })
    .await;
    for i in 0..CHATS {
        world.notify(&format!("stall-{i}"), 3000 + i, "stalled").await;
    }
    let mut stall = world.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE telegram_send_slots IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .unwrap();
    let mut first = spawn_worker(&world, 300.0);
    let mut second = spawn_worker(&world, 300.0);
    world
        .wait_for_count(
            "SELECT least(count(*), 1) FROM jobs WHERE state = 'running'",
            1,
            Duration::from_secs(30),
        )
        .await;
    let stalled_for = jobs::queue::lease::WORKER_TIMEOUT + Duration::from_secs(5);
    tokio::time::sleep(stalled_for).await;
    assert_eq!(
        world.count("SELECT count(*) FROM telegram_deliveries").await,
        0,
        "the stall held every send"
    );
    stall.rollback().await.unwrap();

    world
        .wait_for_count(
            "SELECT count(*) FROM telegram_deliveries",
            CHATS,
            Duration::from_secs(90),
        )
        .await;
    for worker in [&mut first, &mut second] {
        signal(worker, "TERM");
        assert!(exited(worker).await.success());
    }
    let rescued = world
        .count(r#"SELECT count(*) FROM jobs WHERE errors @> '[{"kind": "orphaned"}]'"#)
        .await;
    assert_eq!(rescued, 0, "no job was taken from a live worker");
    let sent = world.telegram.messages();
    let chats: HashSet<i64> = sent.iter().map(|m| m.chat_id).collect();
    assert_eq!(chats.len() as i64, CHATS, "every chat got its message");
    assert_eq!(sent.len() as i64, CHATS, "and none got it twice");
}
