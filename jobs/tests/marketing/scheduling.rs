//! One broadcast per slot however many schedulers fire it, pausing and resuming, the rotation
//! of promos across sends and ticks, and ops' campaign specs.

use chrono::{DateTime, TimeDelta, Utc};
use jobs::marketing::campaigns::{Audience, CampaignSpec, Schedule};

use crate::support::{BOT, broadcasts, campaign, campaigns, count, create_backdated, pool};

#[tokio::test]
async fn one_slot_makes_one_broadcast_however_many_processes_fire_it() {
    let (url, pool) = pool().await;
    let other_process = jobs::db::connect(&url, 10).await.unwrap();
    let c = campaign("hourly", Audience::AllUsers, Schedule::Every { hours: 1 }, &["a"]);
    let created = create_backdated(&pool, &c, TimeDelta::minutes(330)).await;
    let now = Utc::now();

    // Eight scheduler passes at once, from two pools (two processes' worth of connections).
    let passes = (0..8).map(|i| {
        let pool = if i % 2 == 0 {
            pool.clone()
        } else {
            other_process.clone()
        };
        tokio::spawn(async move { broadcasts::fire_due(&pool, now).await.unwrap() })
    });
    let started: usize = futures::future::join_all(passes)
        .await
        .into_iter()
        .map(|r| r.unwrap().len())
        .sum();
    assert_eq!(started, 1);
    let slots: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar("SELECT slot FROM broadcasts")
        .fetch_all(&pool)
        .await
        .unwrap();
    // Five and a half hours in: the slot at five hours, not the four it missed before.
    assert_eq!(slots, [Some(created + TimeDelta::hours(5))]);
    assert!(broadcasts::fire_due(&pool, now).await.unwrap().is_empty());

    // The next slot fires once; a worker down for ten hours then catches up with one, not ten.
    assert_eq!(
        broadcasts::fire_due(&pool, now + TimeDelta::hours(1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        broadcasts::fire_due(&pool, now + TimeDelta::hours(11))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM broadcasts").await, 3);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE queue = 'broadcasts'").await,
        3,
        "one fan-out job per broadcast"
    );
}

#[tokio::test]
async fn a_paused_campaign_skips_its_slots_and_resumes_at_the_next() {
    let (_, pool) = pool().await;
    let c = campaign("paused", Audience::AllUsers, Schedule::Every { hours: 1 }, &["a"]);
    create_backdated(&pool, &c, TimeDelta::minutes(90)).await;
    campaigns::set_paused(&pool, "paused", true).await.unwrap();
    assert!(broadcasts::fire_due(&pool, Utc::now()).await.unwrap().is_empty());
    let resumed = campaigns::set_paused(&pool, "paused", false).await.unwrap();
    assert!(!resumed.paused);
    // The slot that fell in the pause does not fire on resume; the next one does.
    assert!(broadcasts::fire_due(&pool, Utc::now()).await.unwrap().is_empty());
    let next = broadcasts::fire_due(&pool, Utc::now() + TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    // Send-now works for a paused campaign too.
    campaigns::set_paused(&pool, "paused", true).await.unwrap();
    assert!(broadcasts::begin(&pool, "paused", None).await.unwrap().is_some());
    assert!(broadcasts::begin(&pool, "nope", None).await.unwrap().is_none());
}

#[tokio::test]
async fn promos_rotate_in_order_across_sends_and_ticks() {
    let (_, pool) = pool().await;
    let c = campaign(
        "rotate",
        Audience::AllUsers,
        Schedule::Every { hours: 1 },
        &["a", "b", "c"],
    );
    create_backdated(&pool, &c, TimeDelta::minutes(61)).await;
    let mut sent = Vec::new();
    for i in 0..7 {
        let preview = campaigns::next_promo(&pool, "rotate").await.unwrap().unwrap();
        let started = if i == 3 {
            // A scheduled tick takes its turn in the same rotation.
            broadcasts::fire_due(&pool, Utc::now()).await.unwrap().remove(0)
        } else {
            broadcasts::begin(&pool, "rotate", None).await.unwrap().unwrap()
        };
        assert_eq!(preview.promo, started.promo);
        sent.push(started.promo);
    }
    assert_eq!(sent, ["a", "b", "c", "a", "b", "c", "a"]);
    let stored: Vec<String> = sqlx::query_scalar("SELECT promo FROM broadcasts ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored, sent);
}

#[tokio::test]
async fn a_spec_becomes_a_campaign_or_says_why_not() {
    let spec: CampaignSpec = serde_json::from_str(
        r#"{"name": "spec", "audience": "chats", "chat_ids": [-100], "cron": "0 9 * * 1",
            "promos": [{"name": "a", "text": "hi", "buttons": [{"text": "Go", "action": "callback"}]}]}"#,
    )
    .unwrap();
    let c = spec.clone().into_campaign().unwrap();
    assert_eq!(c.audience, Audience::Chats { chat_ids: vec![-100] });
    assert_eq!(
        c.schedule,
        Schedule::Cron {
            expression: "0 9 * * 1".into()
        }
    );
    let mut both = spec.clone();
    both.every_hours = Some(2);
    assert!(both.into_campaign().is_err());
    let mut stray = spec.clone();
    stray.audience = "all_users".into();
    assert!(stray.into_campaign().is_err());
    let mut default = spec;
    default.audience = "all_users".into();
    default.chat_ids = None;
    default.cron = None;
    assert_eq!(default.into_campaign().unwrap().schedule, Schedule::Every { hours: 4 });

    let (_, pool) = pool().await;
    let c = campaign("dup", Audience::AllUsers, Schedule::Every { hours: 4 }, &["a"]);
    campaigns::create(&pool, &c, Some(BOT)).await.unwrap();
    assert!(matches!(
        campaigns::create(&pool, &c, Some(BOT)).await,
        Err(campaigns::CampaignError::Exists(_))
    ));
    assert!(matches!(
        campaigns::set_paused(&pool, "missing", true).await,
        Err(campaigns::CampaignError::NotFound(_))
    ));
}

#[tokio::test]
async fn concurrent_sends_each_take_their_turn_in_the_rotation() {
    let (url, pool) = pool().await;
    let other_process = jobs::db::connect(&url, 10).await.unwrap();
    let c = campaign(
        "busy",
        Audience::AllUsers,
        Schedule::Every { hours: 1 },
        &["a", "b", "c"],
    );
    create_backdated(&pool, &c, TimeDelta::minutes(61)).await;
    // Nine operators' send-nows and a scheduler pass at once, over two pools.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let pool = if i % 2 == 0 {
            pool.clone()
        } else {
            other_process.clone()
        };
        tasks.push(tokio::spawn(async move {
            if i == 5 {
                broadcasts::fire_due(&pool, Utc::now()).await.unwrap().len()
            } else {
                usize::from(broadcasts::begin(&pool, "busy", None).await.unwrap().is_some())
            }
        }));
    }
    let begun: usize = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(begun, 10, "no send was lost to another");
    let promos: Vec<String> = sqlx::query_scalar("SELECT promo FROM broadcasts ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(promos, ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]);
}
