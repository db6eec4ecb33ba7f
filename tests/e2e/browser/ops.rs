//! The ops console as an operator uses it: sign in with the admin token, see the queues, find a
//! dead job, read its errors, retry it (the fake Bot API gets the message once), retry all dead
//! jobs after a confirmation that says how many, pause and resume a campaign, send it now and
//! watch the broadcast's bar reach 100%, look up a subscriber and refund their payment.

use e2e::{ADMIN_TOKEN, TELEGRAM_WEBHOOK_SECRET, World};
use sandbox::telegram::Limits;
use sandbox::telegram_updates::{self as updates, post_update};
use serde_json::json;

use super::{Chrome, Screen, assert_no_csp_violations, click, eval, screenshot, wait_until};

#[tokio::test]
async fn an_operator_retries_dead_jobs_and_runs_a_campaign_from_the_console() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let worker = world.start_worker(world.worker_config(100.0));
    // Telegram refuses the first send: the job dies at once with Telegram's words.
    world.telegram.fail_next("sendMessage", 400, 1);
    world.notify("console:first", 901, "Hello from the console").await;
    world
        .wait_for_count("SELECT count(*) FROM jobs WHERE state = 'dead'", 1, super::WAIT)
        .await;

    let chrome = Chrome::launch(Screen::Desktop).await;
    let page = chrome.page(None).await;
    page.goto(format!("{api}/ops")).await.unwrap();
    wait_until(
        &page,
        "!document.getElementById('sign-in').classList.contains('hidden')",
    )
    .await;
    page.find_element("#token")
        .await
        .unwrap()
        .click()
        .await
        .unwrap()
        .type_str(ADMIN_TOKEN)
        .await
        .unwrap();
    click(&page, "#sign-in-form button").await;
    wait_until(&page, "document.querySelectorAll('#queues tbody tr').length === 6").await;
    assert_eq!(
        eval::<String>(
            &page,
            "document.querySelector(\"#queues tr[data-queue='notifications'] .dead\").textContent"
        )
        .await,
        "1"
    );
    // The token is in this tab's session storage, nowhere in the address.
    assert_eq!(
        eval::<String>(&page, "sessionStorage.getItem('paygate.adminToken')").await,
        ADMIN_TOKEN
    );
    assert!(!eval::<String>(&page, "location.href").await.contains(ADMIN_TOKEN));
    screenshot(&page, "ops-queues").await;

    // The dead job, its errors, and a retry: the message goes out once.
    click(&page, "nav a[data-tab='dead']").await;
    wait_until(&page, "document.querySelectorAll('#dead-jobs tbody tr').length === 1").await;
    click(&page, "#dead-jobs tbody a").await;
    wait_until(&page, "!document.getElementById('job').classList.contains('hidden')").await;
    let errors: String = eval(&page, "document.getElementById('job-errors').textContent").await;
    assert!(errors.starts_with("attempt 1 at "), "{errors}");
    assert!(
        errors.contains("(terminal): Unknown error: \"Bad Request\""),
        "{errors}"
    );
    screenshot(&page, "ops-dead-job").await;
    click(&page, "#job-retry").await;
    wait_until(
        &page,
        "document.getElementById('job-state').textContent === 'Retried: now pending.'",
    )
    .await;
    world.message_after(901, 0, super::WAIT).await;

    // Three more die; "Retry all matching" asks with their count, then retries them.
    world.telegram.fail_next("sendMessage", 400, 3);
    for n in 0..3 {
        world.notify(&format!("console:bulk:{n}"), 910 + n, "Bulk").await;
    }
    world
        .wait_for_count("SELECT count(*) FROM jobs WHERE state = 'dead'", 3, super::WAIT)
        .await;
    click(&page, "#dead-filter button[type='submit']").await;
    wait_until(&page, "document.querySelectorAll('#dead-jobs tbody tr').length === 3").await;
    click(&page, "#retry-all").await;
    wait_until(&page, "document.getElementById('confirm').open").await;
    assert_eq!(
        eval::<String>(&page, "document.getElementById('confirm-text').textContent").await,
        "Retry 3 dead jobs in every queue?"
    );
    click(&page, "#confirm-yes").await;
    wait_until(
        &page,
        "document.getElementById('note') && document.getElementById('note').textContent === 'Retried 3.'",
    )
    .await;
    for n in 0..3 {
        world.message_after(910 + n, 0, super::WAIT).await;
    }

    // A campaign to 40 chats: paused and resumed, then sent now, its bar reaching 100%.
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{api}/v1/ops/campaigns"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "name": "winter", "audience": "chats", "chat_ids": (1000..1040).collect::<Vec<i64>>(),
            "promos": [{"name": "a", "text": "Pro for less this week", "buttons": [{"text": "Tell me more", "action": "callback"}]}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    click(&page, "nav a[data-tab='campaigns']").await;
    wait_until(
        &page,
        "document.querySelector(\"#campaigns tr[data-campaign='winter'] .state\")",
    )
    .await;
    click(&page, "#campaigns tr[data-campaign='winter'] td.row button:first-child").await;
    wait_until(
        &page,
        "document.querySelector(\"#campaigns tr[data-campaign='winter'] .state\").textContent === 'paused'",
    )
    .await;
    click(&page, "#campaigns tr[data-campaign='winter'] td.row button:first-child").await;
    wait_until(
        &page,
        "document.querySelector(\"#campaigns tr[data-campaign='winter'] .state\").textContent === 'running'",
    )
    .await;
    click(&page, "#campaigns tr[data-campaign='winter'] td.row button:last-child").await;
    wait_until(&page, "document.getElementById('confirm').open").await;
    click(&page, "#confirm-yes").await;
    wait_until(&page, "document.getElementById('broadcast-bar').style.width === '100%'").await;
    let text: String = eval(&page, "document.getElementById('broadcast-text').textContent").await;
    assert!(
        text.ends_with("40 of 40 settled — 40 sent, 0 unreachable, 0 failed"),
        "{text}"
    );
    // The campaign's figures, read again once it is done: 40 sends of promo a, drawn.
    wait_until(
        &page,
        "document.querySelector('#stats tbody tr td:nth-child(2)').textContent === '40'",
    )
    .await;
    assert_eq!(
        eval::<usize>(&page, "document.querySelectorAll('#chart svg rect').length").await,
        3
    );
    let preview: String = eval(&page, "document.getElementById('preview').textContent").await;
    assert_eq!(preview, "a: Pro for less this week\n[Tell me more → promo:winter:a]");
    screenshot(&page, "ops-campaign").await;

    // A subscriber who paid a week pass in Stars: looked up, and refunded from the page.
    world.telegram.record_star_payment(5150, "stxCONSOLE");
    let paid = updates::successful_payment(77, 5150, "week_pass", 75, "stxCONSOLE", None);
    let webhook = format!("{api}/webhooks/telegram");
    assert_eq!(
        post_update(&http, &webhook, Some(TELEGRAM_WEBHOOK_SECRET), &paid)
            .await
            .status(),
        204
    );
    world
        .wait_for_count(
            "SELECT count(*) FROM entitlements WHERE user_id = 5150 AND status = 'active'",
            1,
            super::WAIT,
        )
        .await;
    click(&page, "nav a[data-tab='users']").await;
    page.find_element("#user-id")
        .await
        .unwrap()
        .click()
        .await
        .unwrap()
        .type_str("5150")
        .await
        .unwrap();
    click(&page, "#user-form button").await;
    wait_until(
        &page,
        "document.querySelector(\"#user-payments tr[data-payment='stxCONSOLE'] button\")",
    )
    .await;
    let entitlement: String = eval(&page, "document.querySelector('#user-entitlements tbody tr').innerText").await;
    assert!(
        entitlement.starts_with("week_pass\ttelegram_stars:stxCONSOLE\tactive"),
        "{entitlement}"
    );
    click(&page, "#user-payments tr[data-payment='stxCONSOLE'] button").await;
    wait_until(&page, "document.getElementById('confirm').open").await;
    click(&page, "#confirm-yes").await;
    wait_until(
        &page,
        "document.getElementById('refund-state').textContent.endsWith(': succeeded.')",
    )
    .await;
    wait_until(
        &page,
        "document.querySelector(\"#user-payments tr[data-payment='stxCONSOLE']\").innerText.endsWith('refunded')",
    )
    .await;
    let entitlement: String = eval(&page, "document.querySelector('#user-entitlements tbody tr').innerText").await;
    assert!(entitlement.contains("\trevoked\t"), "{entitlement}");
    assert_eq!(world.telegram.star_refunds().len(), 1);
    screenshot(&page, "ops-subscriber").await;
    assert_no_csp_violations(&page).await;
    chrome.close().await;
    worker.stop().await;
    assert_eq!(
        world.telegram.messages_to(901).len(),
        1,
        "the retried message went out once"
    );
}
