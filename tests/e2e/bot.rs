//! The bot as a subscriber meets it, through the fake Bot API: commands written in the private
//! chat, its buttons pressed, a one-off plan paid with a Stars invoice in the chat, a monthly plan
//! paid by card through the Checkout link it sends, `/status` and `/billing` after, and what it
//! does with commands it does not know, commands in groups and repeated updates.

use std::time::Duration;

use e2e::{TELEGRAM_WEBHOOK_SECRET, World};
use sandbox::telegram::{Limits, SentMessage};
use sandbox::telegram_updates::{self as updates, post_update};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The buttons of `message`: (text, callback data or URL), every row in one list.
pub fn buttons(message: &SentMessage) -> Vec<(String, String)> {
    let rows = message
        .reply_markup
        .as_ref()
        .and_then(|m| m["inline_keyboard"].as_array().cloned());
    rows.unwrap_or_default()
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|b| {
            let action = b["callback_data"].as_str().or(b["url"].as_str()).unwrap_or_default();
            (b["text"].as_str().unwrap_or_default().to_string(), action.to_string())
        })
        .collect()
}

/// The user's conversation: each step is what they do, then the bot's next message.
pub struct Chat<'w> {
    pub world: &'w World,
    pub user: i64,
}

impl Chat<'_> {
    pub fn seen(&self) -> usize {
        self.world.telegram.messages_to(self.user).len()
    }

    pub async fn write(&self, text: &str) -> SentMessage {
        let seen = self.seen();
        self.world.telegram.write(self.user, text).await.unwrap();
        self.world.message_after(self.user, seen, WAIT).await
    }

    pub async fn press(&self, data: &str) -> SentMessage {
        let seen = self.seen();
        let answer = self.world.telegram.press(self.user, data).await.unwrap();
        // The button's spinner stops at once, in the webhook's response.
        assert_eq!(answer["method"], "answerCallbackQuery", "{answer}");
        self.world.message_after(self.user, seen, WAIT).await
    }

    pub async fn next(&self, seen: usize) -> SentMessage {
        self.world.message_after(self.user, seen, WAIT).await
    }
}

#[tokio::test]
async fn a_subscriber_buys_in_the_chat_with_stars_and_by_card_and_sees_it_in_status() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api_receiving_stripe().await;
    world.set_bot_webhook(&api).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let chat = Chat {
        world: &world,
        user: 6001,
    };

    // /start: a welcome and a button per plan.
    let welcome = chat.write("/start").await;
    assert!(welcome.text.starts_with("👋 Welcome!"), "{}", welcome.text);
    assert_eq!(
        buttons(&welcome),
        [
            ("Pro · ⭐ 250 / 💳 card".to_string(), "plan:pro_monthly".to_string()),
            ("Week pass · ⭐ 75".to_string(), "plan:week_pass".to_string()),
        ]
    );

    // The week's pass: Stars only, an invoice in the chat, paid through Telegram's form.
    let plan = chat.press("plan:week_pass").await;
    assert_eq!(
        plan.text,
        "Week pass: 7 days of access for ⭐ 75.\nHow would you like to pay?"
    );
    assert_eq!(
        buttons(&plan),
        [("Pay ⭐ 75".to_string(), "stars:week_pass".to_string())]
    );
    let invoice = chat.press("stars:week_pass").await;
    let sent_invoice = invoice.invoice.as_ref().expect("an invoice");
    assert_eq!(sent_invoice["payload"], "week_pass");
    assert_eq!(sent_invoice["currency"], "XTR");
    assert_eq!(sent_invoice["prices"][0]["amount"], 75);
    assert_eq!(invoice.text, "Week pass: 7 days of access.");
    let slug = sent_invoice["link"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://t.me/$");
    let seen = chat.seen();
    let paid = http
        .get(format!(
            "{}/sandbox/pay/{slug}?user_id={}",
            world.telegram.url(),
            chat.user
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200, "{}", paid.text().await.unwrap());
    let granted = chat.next(seen).await;
    assert!(
        granted.text.contains("Week pass access is active until"),
        "{}",
        granted.text
    );

    // The monthly plan by card: the Checkout link comes from the checkout worker.
    let plan = chat.press("plan:pro_monthly").await;
    assert!(
        plan.text.starts_with("Pro: 30 days of access for ⭐ 250 / 💳 card."),
        "{}",
        plan.text
    );
    assert_eq!(
        buttons(&plan),
        [
            ("Pay ⭐ 250".to_string(), "stars:pro_monthly".to_string()),
            ("💳 Pay by card".to_string(), "card:pro_monthly".to_string()),
        ]
    );
    let link = chat.press("card:pro_monthly").await;
    assert!(link.text.starts_with("Tap to pay for Pro by card"), "{}", link.text);
    let [(label, checkout_url)] = buttons(&link).try_into().expect("one button");
    assert_eq!(label, "💳 Pay by card");
    let seen = chat.seen();
    let paid = http.get(&checkout_url).send().await.unwrap();
    assert!(paid.status().is_success(), "{}", paid.text().await.unwrap());
    let granted = chat.next(seen).await;
    assert!(granted.text.contains("Pro access is active until"), "{}", granted.text);

    // Both show in /status; the card subscription is not sold again, for Stars either.
    let status = chat.write("/status").await;
    let lines: Vec<&str> = status.text.lines().collect();
    assert_eq!(lines[0], "Your access:", "{}", status.text);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("• Pro: renews on ") && l.ends_with("(card)")),
        "{}",
        status.text
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("• Week pass: until ") && l.ends_with("does not renew (Telegram Stars)")),
        "{}",
        status.text
    );
    let refused = chat.press("stars:pro_monthly").await;
    assert!(
        refused
            .text
            .starts_with("You already subscribe to Pro (card); it renews on "),
        "{}",
        refused.text
    );
    assert!(buttons(&refused).is_empty());
    let plan = chat.write("/start plan-pro_monthly").await;
    assert_eq!(plan.text, refused.text, "a deep link to the plan says the same");

    // /billing: the Billing Portal of the card subscription.
    let portal = chat.write("/billing").await;
    assert!(portal.text.starts_with("Change your card"), "{}", portal.text);
    let [(label, portal_url)] = buttons(&portal).try_into().expect("one button");
    assert_eq!(label, "Manage billing");
    assert!(portal_url.contains("/portal/"), "{portal_url}");

    // Buying the week's pass again while it lasts extends it, and the plan says so.
    let plan = chat.press("plan:week_pass").await;
    assert!(plan.text.contains("You have Week pass until "), "{}", plan.text);

    worker.stop().await;
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM entitlements WHERE user_id = {} AND status = 'active'",
                chat.user
            ))
            .await,
        2
    );
}

#[tokio::test]
async fn the_bot_answers_what_it_does_not_know_ignores_groups_and_never_answers_twice() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    world.set_bot_webhook(&api).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let http = reqwest::Client::new();
    let webhook = format!("{api}/webhooks/telegram");
    let chat = Chat {
        world: &world,
        user: 6002,
    };

    let help = chat.write("/help").await;
    assert!(
        help.text.starts_with("/plans: what you can subscribe to"),
        "{}",
        help.text
    );
    let unknown = chat.write("/frobnicate").await;
    assert_eq!(
        unknown.text,
        format!("Sorry, I did not understand that.\n\n{}", help.text)
    );
    let words = chat.write("hello there").await;
    assert_eq!(words.text, unknown.text);
    let status = chat.write("/status").await;
    assert_eq!(
        status.text,
        "You have no active plan. /plans shows what you can subscribe to."
    );
    let billing = chat.write("/billing").await;
    assert_eq!(
        billing.text,
        "You have nothing to manage yet. /plans shows what you can subscribe to."
    );

    // A deep link or a button naming a plan that is not sold: the plans instead.
    let gone = chat.write("/start plan-gold").await;
    assert!(
        gone.text.starts_with("That plan is not available any more."),
        "{}",
        gone.text
    );
    assert_eq!(buttons(&gone).len(), 2);
    let seen = chat.seen();
    let removed = updates::callback_query(9_000_001, "cq-removed", chat.user, chat.user, "card:week_pass");
    let answer: Value = post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &removed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["method"], "answerCallbackQuery");
    let unavailable = chat.next(seen).await;
    assert!(unavailable.text.starts_with("That plan is not available any more."));

    // The same update delivered three times is answered once.
    let repeated = updates::text_message(9_000_002, chat.user, "/plans");
    let seen = chat.seen();
    for _ in 0..3 {
        let resp = post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &repeated).await;
        assert_eq!(resp.status(), 204);
    }
    assert_eq!(chat.next(seen).await.text, "Choose a plan:");

    // A command in a group is stored and not answered.
    let mut in_group = updates::text_message(9_000_003, chat.user, "/plans");
    in_group["message"]["chat"] = serde_json::json!({"id": -100_777, "type": "supergroup", "title": "Paid"});
    let resp = post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &in_group).await;
    assert_eq!(resp.status(), 204);

    // Everything is sent by now: one more command, and its answer is the next message.
    let last = chat.write("/help").await;
    assert_eq!(last.text, help.text);
    worker.stop().await;
    assert_eq!(chat.seen(), 9, "{:?}", world.telegram.texts_to(chat.user));
    assert_eq!(
        world
            .count("SELECT count(*) FROM telegram_updates WHERE update_id IN (9000002, 9000003)")
            .await,
        2
    );
}
