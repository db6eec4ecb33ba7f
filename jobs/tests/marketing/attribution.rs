//! Clicks and conversions: a payment attributed to the payer's last click once, and the per-promo
//! statistics they make.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jobs::marketing::broadcasts::Outcome;
use jobs::marketing::campaigns::Audience;
use jobs::marketing::stats;
use jobs::tracking::{self, AttributePayment};

use crate::support::{broadcasts, click, count, pool, run_fan_out, seen, send_now};

const WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

fn payment(id: &str, user: i64, amount: i64, at: DateTime<Utc>) -> AttributePayment {
    AttributePayment {
        payment: format!("telegram_stars:{id}"),
        user_id: user,
        amount,
        currency: "XTR".into(),
        paid_at: at,
    }
}

#[tokio::test]
async fn a_payment_after_a_click_is_attributed_to_the_last_click_once() {
    let (_, pool) = pool().await;
    seen(&pool, [7, 8]).await;
    let first = send_now(&pool, "conv", Audience::AllUsers, &["a", "b"]).await;
    run_fan_out(&pool, 100).await;
    let now = Utc::now() + TimeDelta::seconds(1);
    let mut conn = pool.acquire().await.unwrap();
    tracking::record(&mut conn, &click(1, 7, ("conv", "a"), now))
        .await
        .unwrap();
    tracking::record(&mut conn, &click(1, 7, ("conv", "a"), now))
        .await
        .unwrap();
    let broadcast: Option<i64> = sqlx::query_scalar("SELECT broadcast_id FROM promo_clicks WHERE update_id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        broadcast,
        Some(first.broadcast_id),
        "the click names the broadcast it came from"
    );

    // A later click on another promo is the last touch.
    tracking::record(&mut conn, &click(2, 7, ("conv", "b"), now + TimeDelta::hours(1)))
        .await
        .unwrap();
    let paid = payment("stx1", 7, 250, now + TimeDelta::hours(2));
    assert_eq!(
        tracking::attribute(&mut conn, &paid, WINDOW).await.unwrap().as_deref(),
        Some("conv")
    );
    assert_eq!(
        tracking::attribute(&mut conn, &paid, WINDOW).await.unwrap(),
        None,
        "stored once"
    );
    let (promo, amount): (String, i64) = sqlx::query_as("SELECT promo, amount FROM conversions WHERE payment = $1")
        .bind(&paid.payment)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((promo.as_str(), amount), ("b", 250));

    // Outside the window, before any click, or by someone who never clicked: not attributed.
    let late = payment(
        "stx2",
        7,
        250,
        now + TimeDelta::hours(1) + TimeDelta::days(7) + TimeDelta::seconds(1),
    );
    assert_eq!(tracking::attribute(&mut conn, &late, WINDOW).await.unwrap(), None);
    let early = payment("stx3", 7, 250, now - TimeDelta::minutes(1));
    assert_eq!(tracking::attribute(&mut conn, &early, WINDOW).await.unwrap(), None);
    let stranger = payment("stx4", 8, 250, now + TimeDelta::hours(2));
    assert_eq!(tracking::attribute(&mut conn, &stranger, WINDOW).await.unwrap(), None);
    // Just inside the window still counts.
    let inside = payment("stx5", 7, 90, now + TimeDelta::hours(1) + TimeDelta::days(7));
    assert!(tracking::attribute(&mut conn, &inside, WINDOW).await.unwrap().is_some());
    assert_eq!(count(&pool, "SELECT count(*) FROM conversions").await, 2);
}

#[tokio::test]
async fn stats_count_sends_clickers_conversions_and_revenue_per_promo() {
    let (_, pool) = pool().await;
    seen(&pool, 1..=10).await;
    let a = send_now(&pool, "st", Audience::AllUsers, &["a", "b"])
        .await
        .broadcast_id;
    run_fan_out(&pool, 100).await;
    let mut conn = pool.acquire().await.unwrap();
    for chat in 1..=8 {
        broadcasts::record_outcome(&mut conn, a, chat, Outcome::Sent)
            .await
            .unwrap();
    }
    let now = Utc::now() + TimeDelta::seconds(1);
    // Four clickers, one of them twice.
    for (update, user) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4)] {
        tracking::record(&mut conn, &click(update, user, ("st", "a"), now))
            .await
            .unwrap();
    }
    for (id, user, amount, currency) in [("p1", 1, 250, "XTR"), ("p2", 2, 999, "usd")] {
        let mut p = payment(id, user, amount, now + TimeDelta::minutes(5));
        p.currency = currency.into();
        tracking::attribute(&mut conn, &p, WINDOW).await.unwrap();
    }
    let stats = stats::campaign(
        &pool,
        "st",
        Some(now - TimeDelta::hours(1)),
        Some(now + TimeDelta::hours(1)),
    )
    .await
    .unwrap()
    .unwrap();
    let a = &stats.promos[0];
    assert_eq!(
        (a.promo.as_str(), a.sends, a.unique_clickers, a.conversions),
        ("a", 8, 4, 2)
    );
    assert_eq!((a.click_through_rate, a.conversion_rate), (0.5, 0.5));
    let revenue: Vec<(&str, i64)> = a.revenue.iter().map(|r| (r.currency.as_str(), r.amount)).collect();
    assert_eq!(revenue, [("XTR", 250), ("usd", 999)]);
    let b = &stats.promos[1];
    assert_eq!((b.sends, b.unique_clickers, b.click_through_rate), (0, 0, 0.0));
    // A range that ends before everything counts nothing.
    let before = stats::campaign(
        &pool,
        "st",
        Some(now - TimeDelta::days(2)),
        Some(now - TimeDelta::days(1)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((before.promos[0].sends, before.promos[0].unique_clickers), (0, 0));
    assert!(stats::campaign(&pool, "none", None, None).await.unwrap().is_none());
}
