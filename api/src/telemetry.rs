//! Request ids, route labels and the one log line per request.
//!
//! Every request runs inside a `request` span carrying its id (the caller's `X-Request-Id` when
//! it is 1 to 200 visible ASCII characters, else a fresh UUID v4), method and route, so every
//! log line it causes carries them too; the id goes back in the `X-Request-Id` response header.
//! Bodies and the `Authorization` header are never logged.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderName, HeaderValue, Method};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tracing::Instrument;

/// The request id header, in and out.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route is the low-cardinality label of a request's route, for logs and metrics: the matched
/// path template (`/v1/ops/jobs/{id}`), or `unmatched`.
#[derive(Debug, Clone)]
pub struct Route(pub Arc<str>);

/// The label of requests that match no route.
pub const UNMATCHED: &str = "unmatched";

/// RouteTable labels request paths with the template they match.
#[derive(Debug, Clone)]
pub struct RouteTable {
    templates: Vec<Vec<Segment>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Static(String),
    /// A parameter, by the name the spec gives it (`{name}` for `:name` or `{name}`).
    Param(String),
}

impl RouteTable {
    /// A table of `templates` in OpenAPI form (`/jobs/{id}`, or poem's `/jobs/:id`).
    pub fn new(templates: impl IntoIterator<Item = String>) -> RouteTable {
        let templates = templates
            .into_iter()
            .map(|t| {
                segments(&t)
                    .into_iter()
                    .map(|s| match param_name(s) {
                        Some(name) => Segment::Param(name.to_string()),
                        None => Segment::Static(s.to_string()),
                    })
                    .collect()
            })
            .collect();
        RouteTable { templates }
    }

    /// The route label of `path`: the most specific matching template with its parameters
    /// written as the spec names them, `{id}` (a static segment beats a parameter, as in the
    /// router), else `unmatched`.
    pub fn label(&self, path: &str) -> String {
        let parts = segments(path);
        let best = self
            .templates
            .iter()
            .filter(|t| t.len() == parts.len() && t.iter().zip(&parts).all(|(seg, part)| matches_segment(seg, part)))
            .max_by_key(|t| {
                t.iter()
                    .map(|seg| matches!(seg, Segment::Static(_)) as usize)
                    .collect::<Vec<_>>()
            });
        match best {
            None => UNMATCHED.to_string(),
            Some(t) if t.is_empty() => "/".to_string(),
            Some(t) => t
                .iter()
                .zip(&parts)
                .map(|(seg, part)| match seg {
                    Segment::Static(_) => format!("/{part}"),
                    Segment::Param(name) => format!("/{{{name}}}"),
                })
                .collect(),
        }
    }
}

/// A path's segments; a trailing slash leaves an empty last segment, which no template has.
fn segments(path: &str) -> Vec<&str> {
    match path.strip_prefix('/').unwrap_or(path) {
        "" => Vec::new(),
        rest => rest.split('/').collect(),
    }
}

/// The parameter a template segment is, `:name` (poem's form) or `{name}` (OpenAPI's).
fn param_name(segment: &str) -> Option<&str> {
    segment
        .strip_prefix(':')
        .or_else(|| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn matches_segment(seg: &Segment, part: &str) -> bool {
    match seg {
        Segment::Static(s) => s == part,
        Segment::Param(_) => !part.is_empty(),
    }
}

/// Whether `id` is acceptable as a caller's request id: 1 to 200 visible ASCII characters.
pub fn valid_request_id(id: &str) -> bool {
    (1..=200).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The method as a label: the standard ones by name, anything else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// RequestLog is the outermost middleware: request id, span, route label, one log line.
pub struct RequestLog {
    routes: Arc<RouteTable>,
}

impl RequestLog {
    /// Labels routes with `routes`.
    pub fn new(routes: RouteTable) -> RequestLog {
        RequestLog {
            routes: Arc::new(routes),
        }
    }
}

impl<E: Endpoint> Middleware<E> for RequestLog {
    type Output = RequestLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestLogEndpoint {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// RequestLogEndpoint is [`RequestLog`] around an endpoint.
pub struct RequestLogEndpoint<E> {
    inner: E,
    routes: Arc<RouteTable>,
}

impl<E: Endpoint> Endpoint for RequestLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let request_id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| valid_request_id(id))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let route: Arc<str> = self.routes.label(req.uri().path()).into();
        req.set_data(Route(route.clone()));
        let method = method_label(req.method());
        let span = tracing::info_span!("request", request_id = %request_id, method, route = %route);

        async move {
            let start = Instant::now();
            let mut resp = match self.inner.call(req).await {
                Ok(resp) => resp.into_response(),
                Err(err) => err.into_response(),
            };
            let status = resp.status().as_u16();
            let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
            if resp.status().is_server_error() {
                tracing::warn!(status, latency_ms, "request finished");
            } else {
                tracing::info!(status, latency_ms, "request finished");
            }
            let id = HeaderValue::from_str(&request_id).expect("a request id is visible ASCII");
            resp.headers_mut().insert(REQUEST_ID.clone(), id);
            Ok(resp)
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new(
            [
                "/health",
                "/v1/ops/jobs/dead",
                "/v1/ops/jobs/{id}",
                "/v1/ops/jobs/:id/retry",
                "/v1/ops/jobs/dead/retry",
                "/v1/ops/queues/:name/pause",
                "/openapi.json",
            ]
            .map(String::from),
        )
    }

    #[test]
    fn numeric_segments_become_id() {
        let t = table();
        assert_eq!(t.label("/v1/ops/jobs/123"), "/v1/ops/jobs/{id}");
        assert_eq!(t.label("/v1/ops/jobs/123/retry"), "/v1/ops/jobs/{id}/retry");
        // Whatever the router routed there, even an id it will refuse.
        assert_eq!(t.label("/v1/ops/jobs/abc"), "/v1/ops/jobs/{id}");
    }

    #[test]
    fn parameters_keep_the_specs_names() {
        assert_eq!(
            table().label("/v1/ops/queues/checkout/pause"),
            "/v1/ops/queues/{name}/pause"
        );
    }

    #[test]
    fn static_segments_beat_parameters() {
        let t = table();
        assert_eq!(t.label("/v1/ops/jobs/dead"), "/v1/ops/jobs/dead");
        assert_eq!(t.label("/v1/ops/jobs/dead/retry"), "/v1/ops/jobs/dead/retry");
    }

    #[test]
    fn unknown_paths_are_unmatched() {
        let t = table();
        for path in [
            "/",
            "/nope",
            "/health/",
            "/health/x",
            "/v1/ops/jobs",
            "/v1/ops/jobs/1/explode",
            "/docsx",
            "",
        ] {
            assert_eq!(t.label(path), UNMATCHED, "{path}");
        }
    }

    #[test]
    fn routes_without_parameters_are_their_own_label() {
        let t = table();
        assert_eq!(t.label("/health"), "/health");
        assert_eq!(t.label("/openapi.json"), "/openapi.json");
    }

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(valid_request_id("abc-123_XYZ.~"));
        assert!(valid_request_id(&"a".repeat(200)));
        assert!(!valid_request_id(&"a".repeat(201)));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("tab\there"));
        assert!(!valid_request_id("é"));
    }

    #[test]
    fn odd_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
