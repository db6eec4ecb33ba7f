//! Entitlements ending on time, with worker processes as they run: a kill of the only worker in
//! the middle of an expiry run loses and doubles nothing, and two processes running the pass at
//! once end each entitlement once, remove each user from the plan's paid chat once, and tell
//! each user once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::{World, exited, signal};
use sandbox::telegram::Limits;

const WAIT: Duration = Duration::from_secs(90);

/// The paid chat the lapsed passes open.
const CHAT: i64 = -100_500;

/// The tests' plans, with the week pass opening [`CHAT`].
fn plans_with_chat() -> String {
    e2e::PLANS.replace(r#""stars_price": 75}"#, r#""stars_price": 75, "chats": [-100500]}"#)
}

fn spawn_worker(world: &World) -> std::process::Child {
    world
        .worker_process(env!("CARGO_BIN_EXE_worker-under-test"), 300.0)
        .env("PLANS", plans_with_chat())
        .spawn()
        .expect("starting the worker binary")
}

/// `n` active week passes of users from `first_user` on, whose paid end was 7 hours ago (past the
/// default grace of 6), each user a member of the pass's chat.
async fn lapsed(world: &World, first_user: i64, n: i64) {
    assert!(plans_with_chat().contains("-100500"), "the week pass opens the chat");
    for user in first_user..first_user + n {
        world.telegram.put_member(CHAT, user, "member");
    }
    sqlx::query(
        "INSERT INTO chat_members (chat_id, user_id, status, changed_at)
         SELECT $3, $1 + i, 'member', now() - interval '7 days' FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(first_user)
    .bind(n)
    .bind(CHAT)
    .execute(&world.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO entitlements (user_id, source, plan, entitlement, status, expires_at, renews, updated_at)
         SELECT $1 + i, 'telegram_stars:lapsed' || ($1 + i), 'week_pass', 'pro', 'active',
                now() - interval '7 hours', false, now() - interval '7 days 7 hours'
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(first_user)
    .bind(n)
    .execute(&world.pool)
    .await
    .unwrap();
}

/// Checks that each of the `n` users was ended once, counted once, and has exactly one recorded
/// message about it; returns how many times the fake Bot API got each user's message.
async fn ended_once_each(world: &World, first_user: i64, n: i64) -> HashMap<i64, usize> {
    let ended = format!(
        "SELECT count(*) FROM entitlements WHERE status = 'expired' AND user_id BETWEEN {first_user} AND {}",
        first_user + n - 1
    );
    assert_eq!(world.count(&ended).await, n);
    assert_eq!(
        world
            .count("SELECT count(*) FROM entitlement_changes WHERE status = 'expired'")
            .await,
        n,
        "one history row each"
    );
    assert_eq!(
        world
            .count("SELECT value::bigint FROM counters WHERE name = 'entitlement_expiries_total'")
            .await,
        n
    );
    assert_eq!(
        world
            .count(
                "SELECT count(DISTINCT chat_id) FROM telegram_deliveries WHERE logical_key LIKE 'entitlement_change:%'"
            )
            .await,
        n
    );
    assert_eq!(
        world
            .count("SELECT count(*) FROM telegram_deliveries WHERE logical_key LIKE 'entitlement_change:%'")
            .await,
        n,
        "one recorded message each"
    );
    let sends = sent(world, "access has ended. You can renew it any time:");
    assert_eq!(sends.len() as i64, n, "every user was told");
    sends
}

/// How many times the fake Bot API got each user a message ending with `ending`; every message
/// is either that or one of removal from the chat.
fn sent(world: &World, ending: &str) -> HashMap<i64, usize> {
    let mut sends = HashMap::new();
    for message in world.telegram.messages() {
        let removal = message.text.ends_with("Subscribe again to come back:");
        let expiry = message.text.ends_with("access has ended. You can renew it any time:");
        assert!(removal || expiry, "{}", message.text);
        if message.text.ends_with(ending) {
            *sends.entry(message.chat_id).or_insert(0) += 1;
        }
    }
    sends
}

/// Checks that each of the `n` users is out of [`CHAT`], in the fake and in the records, was
/// counted as removed once, and has exactly one recorded message about it; returns how many
/// times the fake Bot API got each user's message.
async fn removed_once_each(world: &World, first_user: i64, n: i64) -> HashMap<i64, usize> {
    // Out, and not banned: free to come back by a later purchase.
    let not_left: Vec<(i64, String)> = (first_user..first_user + n)
        .map(|user| (user, world.telegram.status_in(CHAT, user)))
        .filter(|(_, status)| status != "left")
        .collect();
    assert!(not_left.is_empty(), "not out of the chat: {not_left:?}");
    assert_eq!(
        world
            .count("SELECT count(*) FROM chat_access WHERE outcome = 'removed' AND NOT granted")
            .await,
        n
    );
    assert_eq!(
        world
            .count("SELECT count(*) FROM chat_members WHERE status = 'left'")
            .await,
        n
    );
    assert_eq!(
        world
            .count(
                "SELECT value::bigint FROM counters
                 WHERE name = 'access_changes_total' AND labels = 'action=\"removed\",reason=\"no_access\"'"
            )
            .await,
        n
    );
    assert_eq!(
        world
            .count("SELECT count(*) FROM telegram_deliveries WHERE logical_key LIKE 'access_removed:%'")
            .await,
        n,
        "one recorded message each"
    );
    let sends = sent(world, "Subscribe again to come back:");
    assert_eq!(sends.len() as i64, n, "every user was told");
    sends
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_an_expiry_pass_loses_and_doubles_nothing() {
    const USERS: i64 = 400;
    let world = World::new(Limits {
        per_second: 1000.0,
        ..Limits::default()
    })
    .await;
    lapsed(&world, 30_000, USERS).await;

    let mut first = spawn_worker(&world);
    let deadline = Instant::now() + WAIT;
    while world.count("SELECT count(*) FROM telegram_deliveries").await < 40 {
        assert!(Instant::now() < deadline, "the first worker ended nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&first, "KILL");
    exited(&mut first).await;
    let in_flight = world
        .count("SELECT count(*) FROM jobs WHERE state = 'running' AND queue = 'notifications'")
        .await;
    let expired_at_kill = world
        .count("SELECT count(*) FROM entitlements WHERE status = 'expired'")
        .await;
    assert!(expired_at_kill < USERS, "the kill came too late to test anything");

    // A new process runs the pass again at its start and rescues the dead one's jobs.
    let mut second = spawn_worker(&world);
    told_all(&world, USERS).await;
    signal(&second, "TERM");
    assert!(exited(&mut second).await.success());

    let ended = ended_once_each(&world, 30_000, USERS).await;
    let removed = removed_once_each(&world, 30_000, USERS).await;
    // Only a message in flight at the kill can have gone out twice (README, "Notifications and
    // their remaining duplicate window").
    let twice = (ended.values().chain(removed.values())).filter(|n| **n > 1).count() as i64;
    assert!(
        twice <= in_flight,
        "{twice} messages sent twice, {in_flight} messages in flight"
    );
    eprintln!("killed with {expired_at_kill} of {USERS} ended and {in_flight} messages in flight; {twice} sent twice");
}

/// Waits until each of `n` users got both messages: the end and the removal.
async fn told_all(world: &World, n: i64) {
    for kind in ["entitlement_change", "access_removed"] {
        world
            .wait_for_count(
                &format!("SELECT count(*) FROM telegram_deliveries WHERE logical_key LIKE '{kind}:%'"),
                n,
                WAIT,
            )
            .await;
    }
}

#[tokio::test]
async fn two_worker_processes_running_the_expiry_pass_at_once_end_remove_and_tell_each_user_once() {
    const USERS: i64 = 200;
    let world = World::new(Limits {
        per_second: 1000.0,
        ..Limits::default()
    })
    .await;
    lapsed(&world, 40_000, USERS).await;
    let mut workers = [spawn_worker(&world), spawn_worker(&world)];
    told_all(&world, USERS).await;
    for worker in &mut workers {
        signal(worker, "TERM");
        assert!(exited(worker).await.success());
    }
    let ended = ended_once_each(&world, 40_000, USERS).await;
    assert!(ended.values().all(|n| *n == 1), "nobody was told twice of the end");
    let removed = removed_once_each(&world, 40_000, USERS).await;
    assert!(
        removed.values().all(|n| *n == 1),
        "nobody was told twice of the removal"
    );
    assert_eq!(
        world
            .count("SELECT count(*) FROM jobs WHERE queue = 'entitlements' AND logical_key LIKE 'expire:%'")
            .await,
        USERS,
        "one expiry job per entitlement"
    );
}
