//! The bot's conversation against a real PostgreSQL: what a press of a pay button stores, and
//! that the link of a request made in the chat reaches it once, in either order of the worker
//! settling it and a press finding it (pending: the press attaches the chat and the settlement
//! carries it; settled: the press queues the link under the key the worker's used).

use jobs::billing::Plans;
use jobs::billing::requests::{self, Settlement};
use jobs::bot::{self, Bot, Choice, Texts};
use jobs::queue::{Enqueued, enqueue};
use sqlx::PgPool;

const USER: i64 = 777;

fn plans() -> Plans {
    Plans::parse(r#"{"pro": {"name": "Pro", "entitlement": "pro", "period_days": 30, "stripe_price": "price_pro"}}"#)
        .unwrap()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn press(pool: &PgPool, update_id: i64, choice: Choice<'_>) {
    let plans = plans();
    let texts = Texts::default();
    let mut tx = pool.begin().await.unwrap();
    let bot = Bot {
        plans: &plans,
        texts: &texts,
    };
    bot::on_choice(&mut tx, bot, update_id, USER, choice).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_card_link_asked_for_twice_in_the_chat_is_made_once_and_sent_once() {
    let url = sandbox::postgres::test_database().await;
    let pool = jobs::db::connect(&url, 5).await.unwrap();

    press(&pool, 1, Choice::Card("pro")).await;
    press(&pool, 2, Choice::Card("pro")).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM billing_requests").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE queue = 'checkout'").await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE queue = 'notifications'").await,
        0
    );
    let id: i64 = sqlx::query_scalar("SELECT id FROM billing_requests WHERE reply_chat_id = $1")
        .bind(USER)
        .fetch_one(&pool)
        .await
        .unwrap();

    // The worker settles it and, in the same transaction, queues the link for the chat.
    let (plans, texts) = (plans(), Texts::default());
    let bot = Bot {
        plans: &plans,
        texts: &texts,
    };
    let mut tx = pool.begin().await.unwrap();
    let settled = requests::settle(
        &mut tx,
        id,
        Settlement::Ready {
            url: "https://checkout.example/c/1",
            provider_id: "cs_1",
        },
    )
    .await
    .unwrap()
    .expect("it was pending");
    let link = bot::link_job(bot, &settled).expect("a link for the chat");
    assert_eq!(link.payload["chat_id"], USER);
    assert_eq!(link.payload["buttons"][0][0]["url"], "https://checkout.example/c/1");
    assert!(matches!(enqueue(&mut tx, &link).await.unwrap(), Enqueued::New(_)));
    tx.commit().await.unwrap();

    // A press that found the request pending, and waited on its row while it was settled, sees
    // it settled and queues the same link: the key makes it one message.
    let mut tx = pool.begin().await.unwrap();
    let found = requests::reply_in(&mut tx, id, USER).await.unwrap().expect("settled");
    let again = bot::link_job(bot, &found).unwrap();
    assert!(matches!(
        enqueue(&mut tx, &again).await.unwrap(),
        Enqueued::Duplicate(_)
    ));
    tx.commit().await.unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE queue = 'notifications'").await,
        1
    );

    // Settling twice sends nothing more: the second settlement changes nothing.
    let mut tx = pool.begin().await.unwrap();
    let twice = requests::settle(&mut tx, id, Settlement::Failed { reason: "late" })
        .await
        .unwrap();
    assert!(twice.is_none());
}

#[tokio::test]
async fn a_request_made_elsewhere_and_still_pending_sends_its_link_to_the_chat_that_asks() {
    let url = sandbox::postgres::test_database().await;
    let pool = jobs::db::connect(&url, 5).await.unwrap();
    // The Mini App asked first (no chat); then the user presses the bot's button.
    let mut tx = pool.begin().await.unwrap();
    requests::create(&mut tx, USER, requests::Kind::Checkout, Some("pro"), None, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    press(&pool, 1, Choice::Card("pro")).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM billing_requests").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing_requests WHERE reply_chat_id = 777").await,
        1,
        "the chat is attached to the pending request"
    );
    // The worker settles it after the press: what it settled carries the chat, so it queues the
    // link there.
    let mut tx = pool.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT id FROM billing_requests")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let settled = requests::settle(
        &mut tx,
        id,
        Settlement::Failed {
            reason: "card declined",
        },
    )
    .await
    .unwrap()
    .expect("it was pending");
    assert_eq!(settled.reply_chat_id, Some(USER));
    let (plans, texts) = (plans(), Texts::default());
    let told = bot::link_message(
        Bot {
            plans: &plans,
            texts: &texts,
        },
        &settled,
    )
    .expect("a message for the chat");
    assert_eq!(told.chat_id, USER);
    assert!(
        told.text.starts_with("Sorry, that did not work: card declined"),
        "{}",
        told.text
    );
}
