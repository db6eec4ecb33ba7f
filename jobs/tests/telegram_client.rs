//! The Telegram client against the fake Bot API over loopback: Stars invoice links, Stars
//! refunds and the webhook's registration, what each sends and how each failure is sorted. Also
//! that the sandbox's updates are ones a strict Bot API library accepts as Telegram's.

use std::time::Duration;

use jobs::config::Secret;
use jobs::telegram::client::{BOT_UPDATES, SendError, StarRefund, StarsInvoice, TelegramClient};
use sandbox::telegram::{FakeTelegram, Limits};
use sandbox::telegram_updates::{self as updates, Recurring};
use serde_json::{Value, json};
use teloxide_core::types::{MessageKind, Update, UpdateKind};

const TOKEN: &str = "123456:telegram-client-test";
const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);

async fn start() -> (FakeTelegram, TelegramClient) {
    let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
    let client = TelegramClient::new(&Secret::new(TOKEN), fake.url(), "paygate-test").unwrap();
    (fake, client)
}

fn monthly() -> StarsInvoice {
    StarsInvoice {
        title: "Pro".into(),
        description: "Pro access for 30 days".into(),
        payload: "pro_monthly".into(),
        amount_stars: 250,
        subscription_period: Some(THIRTY_DAYS),
    }
}

fn permanent_reason<T: std::fmt::Debug>(result: Result<T, SendError>) -> String {
    match result {
        Err(SendError::Permanent(reason)) => reason,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_invoice_link_sells_the_plan_in_stars_for_thirty_days() {
    let (fake, client) = start().await;

    let link = client.create_invoice_link(&monthly()).await.unwrap();

    assert!(link.starts_with("https://t.me/$"), "{link}");
    let created = fake.invoice_links();
    assert_eq!(created.len(), 1);
    let sent = &created[0];
    assert_eq!(sent["link"], link.as_str());
    assert_eq!(sent["currency"], "XTR");
    assert_eq!(sent["prices"], json!([{"label": "Pro", "amount": 250}]));
    assert_eq!(sent["payload"], "pro_monthly");
    assert_eq!(sent["title"], "Pro");
    assert_eq!(sent["description"], "Pro access for 30 days");
    assert_eq!(sent["subscription_period"], 2_592_000);
    assert_eq!(sent.get("provider_token"), None, "Stars take no provider token: {sent}");
}

#[tokio::test]
async fn a_one_off_invoice_has_no_subscription_period() {
    let (fake, client) = start().await;
    let once = StarsInvoice {
        subscription_period: None,
        ..monthly()
    };

    client.create_invoice_link(&once).await.unwrap();

    assert_eq!(fake.invoice_links()[0].get("subscription_period"), None);
}

#[tokio::test]
async fn a_subscription_period_telegram_does_not_offer_is_refused_for_good() {
    let (fake, client) = start().await;
    let weekly = StarsInvoice {
        subscription_period: Some(Duration::from_secs(7 * 86_400)),
        ..monthly()
    };

    let reason = permanent_reason(client.create_invoice_link(&weekly).await);

    assert!(reason.contains("SUBSCRIPTION_PERIOD_INVALID"), "{reason}");
    assert!(fake.invoice_links().is_empty());
}

/// teloxide waits 10 s after any 5xx before reading the answer, so this test takes that long;
/// paused time would instead fire the client's own timeouts while the fake answers.
#[tokio::test]
async fn a_telegram_server_error_is_transient() {
    let (fake, client) = start().await;
    fake.fail_next("createInvoiceLink", 500, 1);

    let result = client.create_invoice_link(&monthly()).await;

    assert!(
        matches!(&result, Err(SendError::Transient(reason)) if reason.contains("Internal Server Error")),
        "{result:?}"
    );
    assert!(fake.invoice_links().is_empty());
}

#[tokio::test]
async fn flood_control_on_a_refund_says_how_long_to_wait() {
    let (fake, client) = start().await;
    fake.record_star_payment(5, "charge-flood");
    fake.fail_next("refundStarPayment", 429, 1);

    let result = client.refund_star_payment(5, "charge-flood").await;

    assert_eq!(result, Err(SendError::RetryAfter(Duration::from_secs(1))));
    assert!(fake.star_refunds().is_empty());
}

#[tokio::test]
async fn a_refund_is_made_once_and_asking_again_finds_it_done() {
    let (fake, client) = start().await;
    fake.record_star_payment(5, "charge-1");

    let first = client.refund_star_payment(5, "charge-1").await;
    let again = client.refund_star_payment(5, "charge-1").await;

    assert_eq!(first, Ok(StarRefund::Refunded));
    assert_eq!(again, Ok(StarRefund::AlreadyRefunded));
    assert_eq!(fake.star_refunds(), [(5, "charge-1".to_string())]);
}

#[tokio::test]
async fn refunding_a_charge_telegram_does_not_know_is_refused_for_good() {
    let (fake, client) = start().await;
    fake.record_star_payment(5, "charge-of-5");

    let unknown = permanent_reason(client.refund_star_payment(5, "charge-nobody-paid").await);
    let someone_elses = permanent_reason(client.refund_star_payment(6, "charge-of-5").await);

    assert!(unknown.contains("CHARGE_ID_INVALID"), "{unknown}");
    assert!(someone_elses.contains("CHARGE_ID_INVALID"), "{someone_elses}");
    assert!(fake.star_refunds().is_empty());
}

#[tokio::test]
async fn the_webhook_is_set_with_its_secret_and_update_kinds_and_read_back() {
    let (fake, client) = start().await;
    let url = "https://paygate.example/telegram/webhook";

    client.set_webhook(url, "s3cret_token-1", &BOT_UPDATES).await.unwrap();

    assert_eq!(
        fake.webhook(),
        Some(json!({
            "url": url,
            "secret_token": "s3cret_token-1",
            "allowed_updates": [
                "message",
                "callback_query",
                "pre_checkout_query",
                "my_chat_member",
                "chat_member",
                "chat_join_request"
            ],
            "drop_pending_updates": false,
        }))
    );
    assert_eq!(client.webhook_info().await, Ok((url.to_string(), 0, None)));

    fake.set_webhook_error("Wrong response from the webhook: 500 Internal Server Error");
    let (_, _, last_error) = client.webhook_info().await.unwrap();
    assert_eq!(
        last_error.as_deref(),
        Some("Wrong response from the webhook: 500 Internal Server Error")
    );
}

#[tokio::test]
async fn without_a_webhook_its_url_reads_empty() {
    let (_fake, client) = start().await;

    assert_eq!(client.webhook_info().await, Ok((String::new(), 0, None)));
}

#[tokio::test]
async fn a_secret_telegram_cannot_send_in_a_header_is_refused_for_good() {
    let (fake, client) = start().await;

    // What `openssl rand -base64` gives: `+`, `/` and `=` are not allowed.
    let result = client
        .set_webhook("https://paygate.example/telegram/webhook", "a+b/c=", &BOT_UPDATES)
        .await;

    let reason = permanent_reason(result);
    assert!(
        reason.contains("secret token contains unallowed characters"),
        "{reason}"
    );
    assert_eq!(fake.webhook(), None);
}

/// Parses `update` from its text, as a webhook receives it: teloxide reads an update's kind with
/// borrowed keys, which a `serde_json::Value` cannot lend.
fn parse(update: Value) -> UpdateKind {
    let text = update.to_string();
    let parsed: Update = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    parsed.kind
}

fn message(kind: UpdateKind) -> teloxide_core::types::Message {
    match kind {
        UpdateKind::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// teloxide's types require what Telegram always sends, and an update it cannot read becomes
/// `UpdateKind::Error` rather than failing, so each kind is matched, not just parsed.
#[test]
fn the_sandbox_updates_read_as_telegrams() {
    match parse(updates::pre_checkout_query(1, "q-1", 5, "pro_monthly", "XTR", 250)) {
        UpdateKind::PreCheckoutQuery(q) => {
            assert_eq!((q.id.0.as_str(), q.from.id.0), ("q-1", 5));
            assert_eq!(
                (q.currency.as_str(), q.total_amount, q.invoice_payload.as_str()),
                ("XTR", 250, "pro_monthly")
            );
        }
        other => panic!("{other:?}"),
    }

    let renewal = Recurring {
        expiration: 1_800_000_000,
        is_first: true,
    };
    let paid = message(parse(updates::successful_payment(
        2,
        5,
        "pro_monthly",
        250,
        "charge-2",
        Some(renewal),
    )));
    let payment = paid.successful_payment().expect("a successful payment");
    assert_eq!(payment.telegram_payment_charge_id.0, "charge-2");
    assert!(payment.is_recurring && payment.is_first_recurring);
    assert_eq!(
        payment.subscription_expiration_date.map(|d| d.timestamp()),
        Some(1_800_000_000)
    );
    assert_eq!(paid.from.as_ref().map(|u| u.id.0), Some(5));

    match message(parse(updates::refunded_payment(3, 5, "pro_monthly", 250, "charge-2"))).kind {
        MessageKind::RefundedPayment(refund) => {
            assert_eq!(refund.refunded_payment.telegram_payment_charge_id.0, "charge-2");
            assert_eq!(refund.refunded_payment.total_amount, 250);
        }
        other => panic!("{other:?}"),
    }

    match parse(updates::callback_query(4, "q-4", 5, 5, "plan:pro_monthly")) {
        UpdateKind::CallbackQuery(q) => {
            assert_eq!(q.data.as_deref(), Some("plan:pro_monthly"));
            assert_eq!(q.message.expect("the button's message").chat().id.0, 5);
        }
        other => panic!("{other:?}"),
    }

    let start = message(parse(updates::start_command(5, 5, "promo-spring")));
    assert_eq!(start.text(), Some("/start promo-spring"));
    let commands: Vec<String> = start
        .parse_entities()
        .unwrap_or_default()
        .iter()
        .map(|e| e.text().to_string())
        .collect();
    assert_eq!(commands, ["/start"]);

    assert_eq!(
        message(parse(updates::text_message(6, 5, "hello"))).text(),
        Some("hello")
    );
    assert!(matches!(
        parse(updates::unknown_kind(7)),
        UpdateKind::MessageReaction(_)
    ));

    for (status, blocked) in [("kicked", true), ("member", false)] {
        match parse(updates::my_chat_member(8, 5, status, 1_800_000_000)) {
            UpdateKind::MyChatMember(m) => {
                assert_eq!((m.chat.id.0, m.from.id.0), (5, 5));
                assert_eq!(m.new_chat_member.is_banned(), blocked, "{status}");
                assert_eq!(m.date.timestamp(), 1_800_000_000);
            }
            other => panic!("{other:?}"),
        }
    }
}
