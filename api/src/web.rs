//! The two web faces, served by this process from files built into the binary (`api/web/`):
//! the Mini App (`/app`) subscribers open from the bot, and the ops console (`/ops`). Plain HTML,
//! CSS and JavaScript with no build step: a Rust team can read and change them, and nothing but
//! `cargo build` makes the binary. Each page only calls the public API, so neither has a power
//! the API lacks.
//!
//! Every answer here carries a Content-Security-Policy that allows scripts from this origin
//! only (and, for the Mini App, Telegram's `telegram-web-app.js`), no inline script or style,
//! and calls to this origin only; the Mini App may be framed by Telegram's web clients, the
//! console by nobody.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response, Route, get, handler};

/// The paths served here, each with GET only: `Allow` on a 405, and the request log's routes.
pub const PATHS: [&str; 6] = [
    "/app",
    "/ops",
    "/web/common.css",
    "/web/app.js",
    "/web/ops.js",
    "/favicon.ico",
];

// Telegram's script, framed in Telegram Web, adds a <style> element of the client's own for
// its custom styles: `style-src 'self'` blocks that (cosmetic only; the app works without it).
const MINI_APP_CSP: &str = "default-src 'none'; script-src 'self' https://telegram.org/js/telegram-web-app.js; \
     style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors https://web.telegram.org https://*.telegram.org";
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `route` with the pages and their files added.
pub fn add_to(route: Route) -> Route {
    route
        .at("/app", get(mini_app))
        .at("/ops", get(console))
        .at("/web/common.css", get(common_css))
        .at("/web/app.js", get(app_js))
        .at("/web/ops.js", get(ops_js))
        .at("/favicon.ico", get(favicon))
}

/// Face is whose policy a page or file is served under.
#[derive(Clone, Copy)]
enum Face {
    /// The Mini App's page: Telegram's script, framed by Telegram's web clients.
    MiniApp,
    /// The console and the shared files: this origin's scripts only, never framed.
    Console,
}

/// One file, with the headers every page and file here carries.
fn file(body: &'static str, content_type: &'static str, face: Face) -> Response {
    let csp = match face {
        Face::MiniApp => MINI_APP_CSP,
        Face::Console => CONSOLE_CSP,
    };
    let mut response = Response::builder()
        .content_type(content_type)
        .header(header::CONTENT_SECURITY_POLICY, csp)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        // Built into the binary: a deploy changes them, so the browser asks again each time.
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body);
    if let Face::Console = face {
        let headers = response.headers_mut();
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[handler]
fn mini_app() -> Response {
    file(
        include_str!("../web/app.html"),
        "text/html; charset=utf-8",
        Face::MiniApp,
    )
}

#[handler]
fn console() -> Response {
    file(
        include_str!("../web/ops.html"),
        "text/html; charset=utf-8",
        Face::Console,
    )
}

#[handler]
fn common_css() -> Response {
    file(
        include_str!("../web/common.css"),
        "text/css; charset=utf-8",
        Face::Console,
    )
}

#[handler]
fn app_js() -> Response {
    file(
        include_str!("../web/app.js"),
        "text/javascript; charset=utf-8",
        Face::Console,
    )
}

#[handler]
fn ops_js() -> Response {
    file(
        include_str!("../web/ops.js"),
        "text/javascript; charset=utf-8",
        Face::Console,
    )
}

/// No icon: an empty answer rather than a 404 problem in every browser's log.
#[handler]
fn favicon() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
