//! Building the app and serving it until told to stop.
//!
//! [`Application::build`] connects to the database, starts listening for settled billing
//! requests and binds the port (0 picks a free one, for tests), so that every start-up failure
//! happens there; [`Application::run_until_stopped`]
//! serves until the shutdown future resolves, then stops accepting and lets in-flight requests
//! finish, within Heroku's 30 s grace.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use jobs::billing::requests::Settled;
use poem::endpoint::BoxEndpoint;
use poem::error::{ReadBodyError, SizedLimitError};
use poem::http::{Method, header};
use poem::listener::TcpAcceptor;
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Route, Server};
use sqlx::PgPool;

use crate::allow::AllowHeader;
use crate::auth::{AdminToken, MetricsToken, TelegramWebhookSecret, UserTokens};
use crate::config::Config;
use crate::error::{self, Problem, ProblemKind};
use crate::metrics::{self, DatabaseFigures, HttpMetrics};
use crate::routes;
use crate::routes::extract::RefuseUnreadableKey;
use crate::routes::stripe_webhook::{self, StripeWebhookSecrets};
use crate::telemetry::{RequestLog, RouteTable};
use crate::web;

/// The largest request body accepted, in bytes, on every route but those of [`BODY_LIMITS`].
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Routes that take larger bodies than [`MAX_BODY_BYTES`], by exact path.
pub const BODY_LIMITS: [(&str, usize); 1] = [(stripe_webhook::PATH, stripe_webhook::MAX_BODY_BYTES)];

/// How long in-flight requests may take to finish after a shutdown signal: inside Heroku's
/// 30 s between SIGTERM and SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Application is the web process, built and bound, not yet serving.
pub struct Application {
    port: u16,
    acceptor: TcpAcceptor,
    app: BoxEndpoint<'static, Response>,
}

impl Application {
    /// Connects to the database, binds `config.host:config.port` and builds the routes.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let pool = jobs::db::connect(config.database_url.expose(), config.database_pool_size)
            .await
            .context("connecting to the database (DATABASE_URL)")?;
        let addr = SocketAddr::new(config.host, config.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let port = listener.local_addr().context("reading the bound address")?.port();
        let acceptor = TcpAcceptor::from_tokio(listener).context("accepting on the bound socket")?;
        let settled = Settled::listen(&pool)
            .await
            .context("listening for settled billing requests (LISTEN on the database)")?;
        metrics::install();
        Ok(Application {
            port,
            acceptor,
            app: app(pool, &config, settled),
        })
    }

    /// The port the app listens on: the bound one when the config asked for 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and waits up to
    /// [`SHUTDOWN_GRACE`] for in-flight requests.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.app, shutdown, Some(SHUTDOWN_GRACE))
            .await
    }
}

/// The whole app: routes, then (inside out) the refusal of U+0000 and JSON null, of an
/// unreadable `Idempotency-Key`, the body limit, panic and error conversion to problems, `Allow`
/// on 405, HTTP metrics, and the request id and log line; `settled` wakes long-polling clients of
/// billing requests (one per process).
pub fn app(pool: PgPool, config: &Config, settled: Settled) -> BoxEndpoint<'static, Response> {
    let service = routes::service();
    // Every route and its methods: the spec's, and the spec and its page themselves.
    let served: Vec<(String, Vec<Method>)> = routes::methods()
        .into_iter()
        .chain(["/openapi.json", "/docs"].map(|path| (path.to_string(), vec![Method::GET])))
        .chain(web::PATHS.map(|path| (path.to_string(), vec![Method::GET])))
        .collect();
    let route_table = RouteTable::new(served.iter().map(|(template, _)| template.clone()));
    web::add_to(Route::new())
        .at(
            "/openapi.json",
            poem::get(poem::endpoint::make_sync(|_| {
                Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(routes::openapi_json())
            })),
        )
        // `/docs` and `/docs/`, as poem-openapi's own Swagger UI endpoint answered.
        .nest(
            "/docs",
            Route::new().at(
                "/",
                poem::get(poem::endpoint::make_sync(|_| {
                    poem::web::Html(routes::spec::swagger_ui_html())
                })),
            ),
        )
        .nest("/", service)
        .with(RefuseNuls)
        .with(RefuseUnreadableKey)
        .with(BodyLimit)
        .with(CatchPanic::new().with_handler(panicked))
        .catch_all_error(error::from_error)
        .with(AllowHeader::new(served))
        .with(HttpMetrics)
        .with(RequestLog::new(route_table))
        .data(pool)
        .data(AdminToken(config.admin_token.clone()))
        .data(MetricsToken(config.metrics_token.clone()))
        .data(DatabaseFigures::default())
        .data(UserTokens::new(&config.jwt))
        .data(StripeWebhookSecrets(config.stripe_webhook_secrets.clone()))
        .data(TelegramWebhookSecret(config.telegram.webhook_secret.clone()))
        .data(config.telegram.init_data.clone())
        .data(config.jwt.clone())
        .data(config.plans.clone())
        .data(config.texts.clone())
        .data(config.marketing.clone())
        .data(settled)
        .boxed()
}

fn panicked(payload: Box<dyn std::any::Any + Send>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    Problem::internal(&std::io::Error::other(format!("handler panicked: {message}"))).into_response()
}

/// BodyLimit refuses a request body over its route's limit ([`MAX_BODY_BYTES`], or the one
/// [`BODY_LIMITS`] names) with 413. A `Content-Length` over the limit is refused before anything
/// reads the body; then the body itself is read up to the limit and refused the moment it passes
/// it, so that a body that declares no length (HTTP/2 needs neither `Content-Length` nor
/// chunking) cannot grow the process either. An HTTP/1 chunked body is refused with 411; a
/// request with no body at all (a GET) passes. Every body is at most 256 KiB and every handler
/// reads it whole, so reading it here costs nothing more.
struct BodyLimit;

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint { inner }
    }
}

struct BodyLimitEndpoint<E> {
    inner: E,
}

/// The body limit of requests to `path`.
fn body_limit(path: &str) -> usize {
    BODY_LIMITS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(MAX_BODY_BYTES, |(_, limit)| *limit)
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        let limit = body_limit(req.uri().path());
        let headers = req.headers();
        if headers.contains_key(header::CONTENT_LENGTH) {
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(SizedLimitError::MissingContentLength)?;
            if length > limit {
                return Err(too_large(limit));
            }
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(SizedLimitError::MissingContentLength.into());
        }
        let body = match req.take_body().into_bytes_limit(limit).await {
            Ok(body) => body,
            Err(ReadBodyError::PayloadTooLarge) => return Err(too_large(limit)),
            Err(e) => return Err(e.into()),
        };
        req.set_body(body);
        self.inner.call(req).await
    }
}

fn too_large(limit: usize) -> poem::Error {
    Problem::new(
        ProblemKind::PayloadTooLarge,
        format!("the request body is over {limit} bytes"),
    )
    .into()
}

/// RefuseNuls answers 400 `invalid-request` to the two nulls this API never takes, before any
/// route sees them.
///
/// U+0000 where a route would store or look it up: `%00` in the path or query, or the escape
/// `\u0000` in any string or key of a JSON body to `/v1/`. PostgreSQL's `text` and `jsonb`
/// cannot hold it, so it would fail the statement half-way through a transaction (a 500).
///
/// JSON `null` anywhere inside a body to `/v1/`: the API's one rule for optional fields is that
/// absent means none, in requests as in answers (the spec marks nothing nullable), so a `null`
/// is refused rather than read as absent. A body that is `null` itself is left to the route, as
/// before: one that takes no body ignores it, one that takes an object refuses it.
///
/// The webhooks decide for themselves: Stripe's body is stored as sent (`text` holds the escape,
/// and Stripe's objects are full of nulls), and what Telegram sends is refused field by field
/// ([`jobs::inbox::telegram`]). It runs inside [`BodyLimit`], which has read the body already.
struct RefuseNuls;

impl<E: Endpoint> Middleware<E> for RefuseNuls {
    type Output = RefuseNulsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RefuseNulsEndpoint { inner }
    }
}

struct RefuseNulsEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RefuseNulsEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        // A URI cannot carry the byte itself; `%00` is its only spelling (hex digits all zero).
        let uri = req.uri().to_string();
        if uri.to_ascii_lowercase().contains("%00") {
            let detail = format!("the path or query holds %00, that is {}", jobs::db::NUL);
            return Err(Problem::invalid_request(detail).into());
        }
        // Media types are case-insensitive, and the routes take `Application/JSON` too.
        let json = req.content_type().map(str::to_ascii_lowercase).is_some_and(|t| {
            let essence = t.split(';').next().unwrap_or_default().trim();
            essence == "application/json" || essence.ends_with("+json")
        });
        if json && req.uri().path().starts_with("/v1/") {
            let body = req.take_body().into_bytes().await?;
            // A body that is not JSON is the route's to refuse, with its own message.
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(at) = jobs::db::nul_at(&value) {
                    let detail = format!("the body's `{at}` holds {}", jobs::db::NUL);
                    return Err(Problem::invalid_request(detail).into());
                }
                // A bare `null` is no body: routes that take none ignore it, as before.
                if let Some(at) = null_at(&value).filter(|_| !value.is_null()) {
                    let detail = format!("the body's `{at}` is null: leave out a field that has no value");
                    return Err(Problem::invalid_request(detail).into());
                }
            }
            req.set_body(body);
        }
        self.inner.call(req).await
    }
}

/// The JSON Pointer (RFC 6901) of the first `null` in `value`; the empty pointer is the root.
fn null_at(value: &serde_json::Value) -> Option<String> {
    jobs::db::pointer_to(value, &serde_json::Value::is_null, &|_| false)
}

#[cfg(test)]
mod tests {
    use poem::http::StatusCode;

    use super::*;

    #[test]
    fn a_null_is_found_at_any_depth_and_named_by_its_pointer() {
        use serde_json::json;
        assert_eq!(null_at(&json!(null)).as_deref(), Some(""));
        assert_eq!(null_at(&json!({"queue": null})).as_deref(), Some("/queue"));
        assert_eq!(
            null_at(&json!({"a/b": [1, {"c~": null}]})).as_deref(),
            Some("/a~1b/1/c~0")
        );
        assert_eq!(null_at(&json!({"a": [1, "null", false, {}]})), None);
    }

    #[test]
    fn the_webhook_takes_larger_bodies_than_the_rest() {
        assert_eq!(body_limit("/webhooks/stripe"), 256 * 1024);
        for path in ["/v1/ops/notifications", "/webhooks/stripe/", "/webhooks", "/"] {
            assert_eq!(body_limit(path), MAX_BODY_BYTES, "{path}");
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_internal_problem_without_its_message() {
        let resp = panicked(Box::new("index out of bounds: secret=42"));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], error::CONTENT_TYPE);
        let body = resp.into_body().into_string().await.unwrap();
        assert!(
            body.contains("urn:paygate:problem:internal") && !body.contains("secret"),
            "{body}"
        );
    }
}
