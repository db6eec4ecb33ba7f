//! The API through a client generated from the spec (`paygate-client`: progenitor, at build time,
//! unmodified), the way a program built on the spec uses it: a user signs in, buys with a card
//! and reads their entitlements; an operator sends a notification, runs a campaign and follows its
//! broadcast, finds a dead job and retries it, and refunds the payment.

use std::time::Duration;

use e2e::{ADMIN_TOKEN, World};
use paygate_client::Client;
use paygate_client::types;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use sandbox::telegram::Limits;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// A generated client at `api` sending `Authorization: Bearer <token>`, if any.
fn client(api: &str, token: Option<&str>) -> Client {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    let http = reqwest::Client::builder().default_headers(headers).build().unwrap();
    Client::new_with_client(api, http)
}

/// Calls `read` every 100 ms until `done` holds for what it read, for at most [`WAIT`].
async fn until<T, F: std::future::Future<Output = T>>(mut read: impl FnMut() -> F, done: impl Fn(&T) -> bool) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = read().await;
        if done(&value) || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_generated_client_signs_in_buys_and_runs_ops_against_the_api() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api_receiving_stripe().await;
    let worker = world.start_worker(world.worker_config(30.0));
    let user_id = 6161;

    // A user signs in with the Mini App's initData.
    let init_data = e2e::init_data_for(&json!({"id": user_id, "first_name": "Lin"}));
    let session = client(&api, None)
        .sign_in_with_telegram(&types::SignInRequest {
            init_data: init_data.parse().unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.user.id, user_id);
    let me = client(&api, Some(&session.token));

    // Buys with a card: Checkout, long-polled for its URL, paid on the fake Stripe.
    let key: types::StartCheckoutIdempotencyKey = "client-buy-1".parse().unwrap();
    let checkout = types::CheckoutRequest {
        plan: "pro_monthly".into(),
    };
    let request = me.start_checkout(Some(&key), &checkout).await.unwrap().into_inner();
    assert_eq!(request.status, types::RequestState::Pending);
    let ready = me.show_checkout(request.id, Some(10)).await.unwrap().into_inner();
    assert_eq!(ready.status, types::RequestState::Ready, "{ready:?}");
    let paid = reqwest::get(ready.url.as_deref().expect("a Checkout URL"))
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let mine = until(
        || async { me.list_my_entitlements().await.unwrap().into_inner() },
        |m| !m.entitlements.is_empty(),
    )
    .await;
    assert_eq!(mine.entitlements.len(), 1, "{mine:?}");
    assert_eq!(mine.entitlements[0].plan, "pro_monthly");
    assert!(mine.entitlements[0].renews);

    // An operator sends a notification.
    let ops = client(&api, Some(ADMIN_TOKEN));
    let note = types::Notification {
        chat_id: user_id,
        text: "Welcome aboard".into(),
        parse_mode: None,
        buttons: vec![],
    };
    let accepted = ops.enqueue_notification(None, &note).await.unwrap().into_inner();
    assert!(!accepted.duplicate && accepted.job_id.is_some());

    // Runs a campaign to the user now and follows the broadcast to its end.
    let campaign = types::CampaignRequest {
        name: "client".into(),
        audience: types::AudienceKind::Chats,
        chat_ids: vec![user_id],
        cron: None,
        every_hours: None,
        promos: vec![types::PromoRequest {
            name: "a".into(),
            text: "Pro for less".into(),
            parse_mode: None,
            buttons: vec![types::PromoButtonRequest {
                text: "Tell me more".into(),
                action: types::Action::Callback,
            }],
        }],
    };
    ops.create_campaign(&campaign).await.unwrap();
    let started = ops.send_campaign_now("client").await.unwrap().into_inner();
    let progress = until(
        || async { ops.show_broadcast(started.broadcast_id).await.unwrap().into_inner() },
        |p| p.fanned_out && p.pending == 0,
    )
    .await;
    assert_eq!((progress.total, progress.sent), (1, 1), "{progress:?}");

    // A notification that exhausted its attempts is dead: listed, and retried from the client.
    let paused = ops.pause_queue("notifications").await.unwrap().into_inner();
    assert!(paused.paused);
    let note = types::Notification {
        text: "Your receipt".into(),
        ..note
    };
    let job = ops
        .enqueue_notification(None, &note)
        .await
        .unwrap()
        .into_inner()
        .job_id
        .unwrap();
    world.exhaust(job).await;
    ops.resume_queue("notifications").await.unwrap();
    let dead = ops
        .list_dead_jobs(None, None, None, None, Some(types::Queue::Notifications))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [job]);
    assert_eq!(ops.retry_job(job, None).await.unwrap().into_inner().state, "pending");

    // And refunds the payment: the entitlement ends and the user is told.
    let payment = world.stripe.checkout_sessions()[0]["id"].as_str().unwrap().to_string();
    let tag: String = payment.trim_start_matches("cs_test_").chars().take(14).collect();
    let key: types::CreateRefundIdempotencyKey = "client-refund-1".parse().unwrap();
    let refund = types::RefundRequest {
        provider: types::RefundProvider::Stripe,
        payment: format!("pi_{tag}_1").parse().unwrap(),
        amount: None,
        reason: None,
    };
    let created = ops.create_refund(&key, &refund).await.unwrap().into_inner();
    let settled = until(
        || async { ops.show_refund(created.id).await.unwrap().into_inner() },
        |r| r.status != types::RefundState::Pending,
    )
    .await;
    assert_eq!(settled.status, types::RefundState::Succeeded, "{settled:?}");
    let mine = until(
        || async { me.list_my_entitlements().await.unwrap().into_inner() },
        |m| m.entitlements.is_empty(),
    )
    .await;
    assert!(mine.entitlements.is_empty(), "{mine:?}");
    world
        .wait_for_count("SELECT count(*) FROM telegram_deliveries WHERE chat_id = 6161", 5, WAIT)
        .await;
    worker.stop().await;
    let told = world.telegram.texts_to(user_id);
    assert_eq!(told.len(), 5, "{told:?}");
    for text in [
        "Pro access is active until",
        "Welcome aboard",
        "Pro for less",
        "Your receipt",
        "refunded",
    ] {
        assert!(told.iter().any(|t| t.contains(text)), "{text} in {told:?}");
    }
}
