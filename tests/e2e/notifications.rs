//! The `notifications` queue end to end: enqueue → worker → fake Bot API → delivery record.

use std::time::Duration;

use e2e::World;
use sandbox::telegram::Limits;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_enqueued_notification_is_sent_once_and_recorded() {
    let world = World::new(Limits::default()).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let job = world.notify("n1", 42, "hello").await.id().unwrap();
    world
        .wait_for_count(
            "SELECT count(*) FROM telegram_deliveries WHERE status = 'sent'",
            1,
            WAIT,
        )
        .await;
    world.wait_for_job(job, "completed", WAIT).await;
    let sent = world.telegram.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].chat_id, sent[0].text.as_str()), (42, "hello"));
    // The same logical notification again: not queued, not sent.
    assert!(matches!(
        world.notify("n1", 42, "hello").await,
        jobs::queue::Enqueued::Duplicate(_)
    ));
    worker.stop().await;
    assert_eq!(world.telegram.messages().len(), 1);
}

#[tokio::test]
async fn a_blocked_chat_is_marked_unreachable_and_not_retried() {
    let world = World::new(Limits::default()).await;
    world.telegram.block(7);
    let worker = world.start_worker(world.worker_config(30.0));
    let job = world.notify("n1", 7, "promo").await.id().unwrap();
    world
        .wait_for_count(
            "SELECT count(*) FROM telegram_chats WHERE chat_id = 7 AND unreachable_at IS NOT NULL",
            1,
            WAIT,
        )
        .await;
    world.wait_for_job(job, "completed", WAIT).await;
    let (_, attempt, errors) = world.job(job).await;
    assert_eq!((attempt, errors), (1, serde_json::json!([])));
    // Later messages to the chat are not even attempted.
    let later = world.notify("n2", 7, "promo 2").await.id().unwrap();
    world.wait_for_job(later, "completed", WAIT).await;
    worker.stop().await;
    assert!(world.telegram.messages().is_empty());
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM telegram_deliveries ORDER BY logical_key")
        .fetch_all(&world.pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["unreachable", "unreachable"]);
}

#[tokio::test]
async fn telegrams_retry_after_is_obeyed_without_burning_an_attempt() {
    let world = World::new(Limits::default()).await;
    world.telegram.throttle_next(9, 1);
    let worker = world.start_worker(world.worker_config(30.0));
    let job = world.notify("n1", 9, "hi").await.id().unwrap();
    world.wait_for_job(job, "completed", WAIT).await;
    worker.stop().await;
    let (_, attempt, errors) = world.job(job).await;
    assert_eq!(attempt, 1, "the throttled attempt was given back");
    assert_eq!(errors[0]["kind"], "retry_after");
    assert_eq!(world.telegram.messages().len(), 1);
}

#[tokio::test]
async fn sends_already_granted_a_slot_wait_out_a_429() {
    // Five messages to one chat. The first send is told to wait 2 s while the next two already
    // hold slots inside that window; the fake refuses (and counts) any send inside it, as
    // Telegram does.
    let world = World::new(Limits::default()).await;
    world.telegram.throttle_next(11, 2);
    for i in 0..5 {
        world.notify(&format!("held-{i}"), 11, "held").await;
    }
    let worker = world.start_worker(world.worker_config(30.0));
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries", 5, Duration::from_secs(60))
        .await;
    worker.stop().await;
    assert_eq!(
        world.telegram.rate_limited(),
        0,
        "no send came inside Telegram's retry_after window"
    );
    assert_eq!(world.telegram.messages().len(), 5);
}

#[tokio::test]
async fn sends_keep_telegrams_per_chat_and_global_pace() {
    // 6 messages to one chat and 20 to others, at 10 a second overall: the fake refuses any
    // send that breaks a limit, so a 429 would show here.
    let world = World::new(Limits {
        per_second: 10.0,
        ..Limits::default()
    })
    .await;
    for i in 0..6 {
        world.notify(&format!("same-{i}"), 1, "same chat").await;
    }
    for i in 0..20 {
        world.notify(&format!("other-{i}"), 100 + i, "other chats").await;
    }
    let worker = world.start_worker(world.worker_config(10.0));
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries", 26, Duration::from_secs(60))
        .await;
    worker.stop().await;
    assert_eq!(world.telegram.rate_limited(), 0, "no send broke Telegram's limits");
    let same: Vec<u64> = world
        .telegram
        .messages()
        .iter()
        .filter(|m| m.chat_id == 1)
        .map(|m| m.at_ms)
        .collect();
    assert_eq!(same.len(), 6);
    // As the receiver saw them, not as the sender meant them: the pace's margin covers jitter.
    for gap in same.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap >= 1000, "two messages to one chat {gap} ms apart: {same:?}");
    }
    let all: Vec<u64> = world.telegram.messages().iter().map(|m| m.at_ms).collect();
    let busiest = all
        .iter()
        .map(|start| all.iter().filter(|t| (*start..*start + 1000).contains(t)).count())
        .max()
        .unwrap();
    assert!(
        busiest <= 10,
        "{busiest} messages arrived within one second at 10 a second"
    );
}

/// A worker process records its own figures for `/metrics` while it runs, and removes them when
/// it stops cleanly.
#[tokio::test]
async fn a_worker_process_records_its_figures_while_it_runs() {
    let world = World::new(Limits::default()).await;
    let worker = world.start_worker(world.worker_config(30.0));
    world
        .wait_for_count(
            "SELECT count(*) FROM worker_processes WHERE resident_memory_bytes > 0 AND threads > 1",
            1,
            Duration::from_secs(20),
        )
        .await;
    worker.stop().await;
    assert_eq!(world.count("SELECT count(*) FROM worker_processes").await, 0);
}
