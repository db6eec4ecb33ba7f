//! The Mini App as a subscriber meets it inside Telegram (dark theme, phone-sized): sign in with
//! the initData Telegram gives, see the plans, pay a week pass with Stars through the fake Bot
//! API, see it appear, pay the monthly plan by card on the fake Stripe's Checkout page, see it
//! appear.

use e2e::World;
use sandbox::telegram::Limits;
use serde_json::json;

use super::{Chrome, Screen, assert_no_csp_violations, click, eval, run, screenshot, wait_until};

const USER: i64 = 4242;

/// The double of `window.Telegram.WebApp`, for `USER` with Telegram's dark theme.
fn telegram_double() -> String {
    let setup = json!({
        "initData": e2e::init_data_for(&json!({"id": USER, "first_name": "Ada", "username": "ada"})),
        "colorScheme": "dark",
        "themeParams": {
            "bg_color": "#17212b", "text_color": "#f5f5f5", "hint_color": "#708499",
            "link_color": "#6ab3f3", "button_color": "#5288c1", "button_text_color": "#ffffff",
            "secondary_bg_color": "#232e3c"
        }
    });
    include_str!("telegram_double.js").replace("SETUP_JSON", &serde_json::to_string(&setup.to_string()).unwrap())
}

#[tokio::test]
async fn a_subscriber_signs_in_pays_with_stars_and_by_card_and_sees_the_access() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api_receiving_stripe().await;
    world.set_bot_webhook(&api).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let chrome = Chrome::launch(Screen::Phone).await;
    let page = chrome.page(Some(&telegram_double())).await;
    page.goto(format!("{api}/app")).await.unwrap();

    // Signed in, as Telegram's user: greeted, no access yet, the plans with their prices.
    wait_until(&page, "!document.getElementById('home').classList.contains('hidden')").await;
    assert_eq!(
        eval::<String>(&page, "document.getElementById('hello').textContent").await,
        "Hi, Ada"
    );
    let plans: Vec<String> = eval(
        &page,
        "[...document.querySelectorAll('.plan')].map(p => p.innerText.replace(/\\s+/g, ' ').trim())",
    )
    .await;
    assert_eq!(
        plans,
        [
            "Pro 30 days · ⭐ 250 / 💳 card Choose",
            "Week pass 7 days · ⭐ 75 Choose"
        ]
    );
    assert!(eval::<bool>(&page, "window.__telegram.ready && window.__telegram.expanded").await);
    // Telegram's dark theme: its colours, not the page's defaults.
    assert_eq!(
        eval::<String>(&page, "getComputedStyle(document.body).backgroundColor").await,
        "rgb(23, 33, 43)"
    );
    assert_eq!(
        eval::<String>(&page, "getComputedStyle(document.body).color").await,
        "rgb(245, 245, 245)"
    );
    screenshot(&page, "miniapp-plans").await;

    // The week pass: Telegram's main button pays it with Stars.
    click(&page, ".plan[data-plan='week_pass'] button").await;
    wait_until(
        &page,
        "window.Telegram.WebApp.MainButton.isVisible && window.Telegram.WebApp.BackButton.isVisible",
    )
    .await;
    assert_eq!(
        eval::<String>(&page, "window.Telegram.WebApp.MainButton.text").await,
        "Pay ⭐ 75"
    );
    run(&page, "window.__telegram.press('MainButton')").await;
    wait_until(&page, "window.__telegram.invoices.length === 1").await;
    let invoice: String = eval(&page, "window.__telegram.invoices[0]").await;
    let slug = invoice.strip_prefix("https://t.me/$").expect("a Stars invoice link");
    // Telegram's payment form: the fake asks the webhook's pre-checkout, then pays.
    let paid = reqwest::get(format!("{}/sandbox/pay/{slug}?user_id={USER}", world.telegram.url()))
        .await
        .unwrap();
    assert_eq!(paid.status(), 200, "{}", paid.text().await.unwrap());
    run(&page, "window.__telegram.closeInvoice('paid')").await;
    wait_until(&page, "document.querySelector(\".entitlement[data-plan='week_pass']\")").await;
    let access: String = eval(&page, "document.querySelector('.entitlement').innerText").await;
    assert!(access.starts_with("Week pass\nuntil "), "{access}");
    assert!(access.ends_with("does not renew"), "{access}");

    // Pro by card: Checkout opens in the browser (openLink); paying there grants it.
    click(&page, ".plan[data-plan='pro_monthly'] button").await;
    click(&page, "#pay-card").await;
    // Telegram opens a link only from a tap: the page offers it once it is ready.
    wait_until(
        &page,
        "!document.getElementById('open-link').classList.contains('hidden')",
    )
    .await;
    assert_eq!(eval::<usize>(&page, "window.__telegram.links.length").await, 0);
    click(&page, "#open-link").await;
    wait_until(&page, "window.__telegram.links.length === 1").await;
    let checkout: String = eval(&page, "window.__telegram.links[0]").await;
    let stripe_page = chrome.page(None).await;
    stripe_page.goto(checkout).await.unwrap();
    wait_until(
        &page,
        "document.querySelector(\".entitlement[data-plan='pro_monthly']\")",
    )
    .await;
    let renews: String = eval(
        &page,
        "document.querySelector(\".entitlement[data-plan='pro_monthly']\").innerText",
    )
    .await;
    assert!(renews.contains("renews on "), "{renews}");
    assert!(
        !eval::<bool>(&page, "document.getElementById('manage').classList.contains('hidden')").await,
        "a card subscriber can manage billing"
    );
    screenshot(&page, "miniapp-access").await;

    // The user switches Telegram to its light theme: the page follows at once.
    run(
        &page,
        "window.__telegram.changeTheme('light', {bg_color: '#ffffff', text_color: '#000000', \
         hint_color: '#999999', button_color: '#2481cc', button_text_color: '#ffffff', \
         secondary_bg_color: '#efeff3'})",
    )
    .await;
    assert_eq!(
        eval::<String>(&page, "getComputedStyle(document.body).backgroundColor").await,
        "rgb(255, 255, 255)"
    );
    assert_eq!(
        eval::<String>(
            &page,
            "getComputedStyle(document.querySelector('.card')).backgroundColor"
        )
        .await,
        "rgb(239, 239, 243)"
    );

    // Manage billing: the Billing Portal, opened from a tap like Checkout.
    click(&page, "#manage").await;
    wait_until(
        &page,
        "!document.getElementById('open-link').classList.contains('hidden')",
    )
    .await;
    assert_eq!(
        eval::<String>(&page, "document.getElementById('open-link').textContent").await,
        "Open the billing page"
    );
    click(&page, "#open-link").await;
    wait_until(&page, "window.__telegram.links.length === 2").await;
    let portal: String = eval(&page, "window.__telegram.links[1]").await;
    assert!(portal.contains("/portal/"), "{portal}");
    assert_no_csp_violations(&page).await;
    assert_no_csp_violations(&stripe_page).await;
    chrome.close().await;
    worker.stop().await;
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM entitlements WHERE user_id = {USER} AND status = 'active'"
            ))
            .await,
        2
    );
}

#[tokio::test]
async fn opened_outside_telegram_the_mini_app_says_where_to_open_it() {
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let chrome = Chrome::launch(Screen::Phone).await;
    let page = chrome.page(None).await;
    page.goto(format!("{api}/app")).await.unwrap();
    wait_until(
        &page,
        "document.getElementById('status').textContent.startsWith('Open this page')",
    )
    .await;
    assert_no_csp_violations(&page).await;
    chrome.close().await;
}
