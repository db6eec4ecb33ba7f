//! The Mini App and the ops console in a real headless Chromium (Debian's `chromium`, found at
//! `$CHROMIUM` or `/usr/bin/chromium`), driven over the DevTools protocol by chromiumoxide,
//! against the running `api`, real PostgreSQL and the fakes. Each test writes screenshots of
//! the screens it reaches into `target/screenshots/`.

mod miniapp;
mod ops;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde::de::DeserializeOwned;

const WAIT: Duration = Duration::from_secs(20);

/// Screen is the size a test looks at pages on.
pub enum Screen {
    /// 390 × 844, as a phone's Telegram shows a Mini App.
    Phone,
    /// 1280 × 900, an operator's.
    Desktop,
}

/// Chrome is one headless Chromium for one test; it is killed when dropped.
pub struct Chrome {
    browser: Browser,
    events: tokio::task::JoinHandle<()>,
    _profile: TempProfile,
}

/// A fresh profile directory, removed when dropped.
struct TempProfile(PathBuf);

impl Drop for TempProfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Chrome {
    /// Starts Chromium with a viewport of `screen`. telegram.org does not resolve: a page's
    /// `telegram-web-app.js` fails at once, and a test's double of `window.Telegram.WebApp`
    /// stands in for it.
    pub async fn launch(screen: Screen) -> Chrome {
        let (width, height, mobile) = match screen {
            Screen::Phone => (390, 844, true),
            Screen::Desktop => (1280, 900, false),
        };
        let executable = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(format!("paygate-chromium-{}", uuid::Uuid::new_v4()));
        let mut config = BrowserConfig::builder()
            .chrome_executable(&executable)
            .user_data_dir(&profile)
            .viewport(Viewport {
                width,
                height,
                device_scale_factor: Some(1.0),
                emulating_mobile: mobile,
                is_landscape: false,
                has_touch: mobile,
            })
            .window_size(width, height)
            .launch_timeout(Duration::from_secs(30))
            // This machine's network is closed; without these Chromium keeps calling Google.
            .args([
                "disable-gpu",
                "disable-quic",
                "no-first-run",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
            ])
            .arg(("host-resolver-rules", "MAP telegram.org ~NOTFOUND"));
        // Chromium refuses to run as root with its sandbox.
        if unsafe { libc::geteuid() } == 0 {
            config = config.no_sandbox();
        }
        let config = config.build().expect("a browser configuration");
        let (browser, mut handler) = Browser::launch(config)
            .await
            .unwrap_or_else(|e| panic!("starting {executable} (install Debian's chromium): {e}"));
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Chrome {
            browser,
            events,
            _profile: TempProfile(profile),
        }
    }

    /// A new tab, with `init_script` run in every document it loads before the page's own
    /// scripts, and every Content-Security-Policy violation recorded for
    /// [`assert_no_csp_violations`] (the test's own scripts are exempt from the policy; the
    /// page's are not).
    pub async fn page(&self, init_script: Option<&str>) -> Page {
        let page = self.browser.new_page("about:blank").await.expect("a new tab");
        page.add_init_script(CSP_WATCH).await.expect("an init script");
        if let Some(script) = init_script {
            page.add_init_script(script).await.expect("an init script");
        }
        page
    }

    /// Closes the browser and waits for it to exit.
    pub async fn close(mut self) {
        self.browser.close().await.expect("closing the browser");
        let _ = self.browser.wait().await;
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        self.events.abort();
    }
}

const CSP_WATCH: &str = "window.__csp = []; document.addEventListener('securitypolicyviolation', \
     (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));";

/// Asserts that the page broke none of its Content-Security-Policy.
pub async fn assert_no_csp_violations(page: &Page) {
    let violations: Vec<String> = eval(page, "window.__csp").await;
    assert!(violations.is_empty(), "the page broke its CSP: {violations:?}");
}

/// Evaluates `expression` in `page`.
pub async fn eval<T: DeserializeOwned>(page: &Page, expression: &str) -> T {
    page.evaluate(expression)
        .await
        .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("reading what {expression} gave: {e}"))
}

/// Runs `statement` in `page`, for what it does.
pub async fn run(page: &Page, statement: &str) {
    page.evaluate(format!("{{ {statement}; }} true"))
        .await
        .unwrap_or_else(|e| panic!("running {statement}: {e}"));
}

/// Waits until `condition` (a JavaScript expression) is true in `page`; panics after [`WAIT`]
/// with the page's error line and text.
pub async fn wait_until(page: &Page, condition: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = page
            .evaluate(format!("Boolean({condition})"))
            .await
            .ok()
            .and_then(|r| r.into_value::<bool>().ok());
        if ok == Some(true) {
            return;
        }
        if Instant::now() > deadline {
            let text: String = eval(page, "document.body ? document.body.innerText : ''").await;
            panic!("waited {WAIT:?} for {condition}; the page says:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `selector` matches.
pub async fn click(page: &Page, selector: &str) {
    wait_until(page, &format!("document.querySelector({selector:?})")).await;
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("finding {selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

/// Saves what `page` shows as `target/screenshots/<name>.png`.
pub async fn screenshot(page: &Page, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshots directory");
    page.save_screenshot(
        ScreenshotParams::builder().full_page(true).build(),
        dir.join(format!("{name}.png")),
    )
    .await
    .expect("a screenshot");
}
