//! Problem details (RFC 7807): the one shape of every 4xx and 5xx answer.
//!
//! A [`Problem`] names its kind with a stable URN, `urn:paygate:problem:<slug>`, that clients
//! may match on; `title` is the kind's fixed summary and `detail` says what happened this time.
//! Handlers return problems for the caller's mistakes; [`from_error`] turns every other error
//! (poem's routing errors, poem-openapi's extraction errors, the body limit) into one. A 500
//! never carries its cause: [`Problem::internal`] logs it and answers with a generic detail.

use std::fmt;

use poem::error::ResponseError;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object, types::Type};
use serde::Serialize;

/// The media type of every problem answer.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "urn:paygate:problem:";

/// ProblemKind is what went wrong, as far as a client needs to know to react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: malformed JSON, wrong types, missing fields, bad parameters, unknown queue names.
    InvalidRequest,
    /// 400: a well-formed notification that Telegram would refuse.
    InvalidNotification,
    /// 400: a webhook whose signature is missing, malformed, stale or wrong.
    InvalidSignature,
    /// 400: a plan code that is not in the catalogue, or not for sale through this route.
    UnknownPlan,
    /// 400: a well-formed campaign that cannot run (bad names, schedule, audience or promos).
    InvalidCampaign,
    /// 401: the bearer token is missing or wrong.
    Unauthorized,
    /// 404: no such route, or no such resource.
    NotFound,
    /// 405: the route exists, but not for this method.
    MethodNotAllowed,
    /// 409: the resource is in a state the request does not apply to.
    Conflict,
    /// 409: the caller already has a renewing subscription to the plan they ask to buy.
    AlreadySubscribed,
    /// 411: a request body without a `Content-Length`.
    LengthRequired,
    /// 413: a request body over the limit.
    PayloadTooLarge,
    /// 415: a request body of a media type the route does not take.
    UnsupportedMediaType,
    /// 429: too many requests of this kind from this caller; `Retry-After` says when to retry.
    RateLimited,
    /// 500: our fault; the cause is in the logs.
    Internal,
    /// 503: a dependency (the database) is not answering.
    Unavailable,
    /// Any other status that the HTTP stack may produce; its slug is `http-<status>`.
    Other(StatusCode),
}

impl ProblemKind {
    /// Every named kind, for the golden test of the slugs.
    pub const NAMED: [ProblemKind; 16] = [
        ProblemKind::InvalidRequest,
        ProblemKind::InvalidNotification,
        ProblemKind::InvalidSignature,
        ProblemKind::UnknownPlan,
        ProblemKind::InvalidCampaign,
        ProblemKind::Unauthorized,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::Conflict,
        ProblemKind::AlreadySubscribed,
        ProblemKind::LengthRequired,
        ProblemKind::PayloadTooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::RateLimited,
        ProblemKind::Internal,
        ProblemKind::Unavailable,
    ];

    /// The HTTP status answered with this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::InvalidRequest
            | ProblemKind::InvalidNotification
            | ProblemKind::InvalidSignature
            | ProblemKind::UnknownPlan
            | ProblemKind::InvalidCampaign => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::Conflict | ProblemKind::AlreadySubscribed => StatusCode::CONFLICT,
            ProblemKind::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Other(status) => status,
        }
    }

    /// The stable `type` URN of this kind.
    pub fn type_uri(self) -> String {
        match self {
            ProblemKind::Other(status) => format!("{TYPE_PREFIX}http-{}", status.as_u16()),
            named => format!("{TYPE_PREFIX}{}", named.slug()),
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidRequest => "invalid-request",
            ProblemKind::InvalidNotification => "invalid-notification",
            ProblemKind::InvalidSignature => "invalid-signature",
            ProblemKind::UnknownPlan => "unknown-plan",
            ProblemKind::InvalidCampaign => "invalid-campaign",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::Conflict => "conflict",
            ProblemKind::AlreadySubscribed => "already-subscribed",
            ProblemKind::LengthRequired => "length-required",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::Internal => "internal",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Other(_) => "http",
        }
    }

    /// The kind's fixed, human summary.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidRequest => "The request is invalid",
            ProblemKind::InvalidNotification => "The notification would be refused by Telegram",
            ProblemKind::InvalidSignature => "The webhook signature does not verify",
            ProblemKind::UnknownPlan => "No such plan for sale",
            ProblemKind::InvalidCampaign => "The campaign cannot run as given",
            ProblemKind::Unauthorized => "A valid bearer token is required",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::Conflict => "The resource is in the wrong state",
            ProblemKind::AlreadySubscribed => "Already subscribed to this plan",
            ProblemKind::LengthRequired => "A Content-Length is required",
            ProblemKind::PayloadTooLarge => "The request body is too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::RateLimited => "Too many requests",
            ProblemKind::Internal => "Internal error",
            ProblemKind::Unavailable => "Service unavailable",
            ProblemKind::Other(status) => status.canonical_reason().unwrap_or("Error"),
        }
    }

    /// The kind a poem error of `status` becomes when nothing more specific is known.
    fn of_status(status: StatusCode) -> ProblemKind {
        match status {
            StatusCode::BAD_REQUEST => ProblemKind::InvalidRequest,
            StatusCode::UNAUTHORIZED => ProblemKind::Unauthorized,
            StatusCode::NOT_FOUND => ProblemKind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
            StatusCode::CONFLICT => ProblemKind::Conflict,
            StatusCode::LENGTH_REQUIRED => ProblemKind::LengthRequired,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => ProblemKind::RateLimited,
            // Our own 503 is built by the readiness probe; any other 5xx is a fault of ours.
            s if s.is_server_error() => ProblemKind::Internal,
            s => ProblemKind::Other(s),
        }
    }
}

/// Problem is an error answer: a kind and what happened this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.type_uri(), self.detail)
    }
}

impl std::error::Error for Problem {}

/// The detail of every 500: the cause is logged, never sent.
const INTERNAL_DETAIL: &str = "something went wrong on our side; the request id in X-Request-Id helps find it";

impl Problem {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
        }
    }

    /// An `invalid-request` problem.
    pub fn invalid_request(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::InvalidRequest, detail)
    }

    /// A `not-found` problem.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::NotFound, detail)
    }

    /// A `conflict` problem.
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::Conflict, detail)
    }

    /// An `unauthorized` problem; it says nothing about what was sent.
    pub fn unauthorized() -> Problem {
        Problem::new(
            ProblemKind::Unauthorized,
            "send a valid token for this route as Authorization: Bearer <token>",
        )
    }

    /// An `internal` problem for `cause`, which is logged with its source chain and not
    /// returned.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Problem {
        tracing::error!(error = %Chain(cause), "request failed");
        Problem::new(ProblemKind::Internal, INTERNAL_DETAIL)
    }

    /// The body of this problem.
    pub fn body(&self) -> ProblemDetails {
        ProblemDetails {
            type_: self.kind.type_uri(),
            title: self.kind.title().to_string(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Problem {
        Problem::internal(&err)
    }
}

impl ResponseError for Problem {
    fn status(&self) -> StatusCode {
        self.kind.status()
    }

    fn as_response(&self) -> Response {
        self.body().into_response()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        self.body().into_response()
    }
}

/// Problems are documented once per operation, as its `4XX` and `5XX` responses (every client
/// generator reads a status range as an error; some take `default` for a success); routes list
/// the problems they answer on purpose (404, 409) as their own responses too.
impl ApiResponse for Problem {
    fn meta() -> MetaResponses {
        let problem = |status_range: &str, description: &'static str| MetaResponse {
            description,
            status: None,
            status_range: Some(status_range.into()),
            content: vec![MetaMediaType {
                content_type: CONTENT_TYPE,
                schema: ProblemDetails::schema_ref(),
            }],
            headers: vec![],
        };
        MetaResponses {
            responses: vec![
                problem(
                    "4XX",
                    "A problem (RFC 7807) with the request. `type` is a stable \
                     `urn:paygate:problem:<slug>`: invalid-request (400), invalid-notification (400), \
                     invalid-signature (400), unknown-plan (400), invalid-campaign (400), unauthorized (401), \
                     not-found (404), method-not-allowed (405), conflict (409), already-subscribed (409), \
                     length-required (411), \
                     payload-too-large (413), unsupported-media-type (415), rate-limited (429).",
                ),
                problem(
                    "5XX",
                    "A problem (RFC 7807) on the server's side: internal (500), unavailable (503).",
                ),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ProblemDetails::register(registry);
    }
}

/// ProblemDetails is the body of a problem answer, sent as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
#[oai(rename = "Problem", skip_serializing_if_is_none)]
pub struct ProblemDetails {
    /// A stable URN naming the kind of problem, `urn:paygate:problem:<slug>`: match on this.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a human.
    pub detail: String,
}

impl IntoResponse for ProblemDetails {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("a problem serialises to JSON");
        let mut resp = Response::builder().status(status).content_type(CONTENT_TYPE).body(body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Turns any error that reached the top of the app into a problem answer. Installed with
/// `catch_all_error`, so that no error leaves in poem's plain-text form.
pub async fn from_error(err: poem::Error) -> Response {
    problem_of(err).into_response()
}

/// The problem an error stands for.
pub fn problem_of(err: poem::Error) -> Problem {
    if let Some(problem) = err.downcast_ref::<Problem>() {
        return problem.clone();
    }
    let kind = ProblemKind::of_status(err.status());
    let detail = match kind {
        // poem-openapi's messages name the parameter or field and why it failed to parse.
        ProblemKind::InvalidRequest | ProblemKind::UnsupportedMediaType => err.to_string(),
        ProblemKind::Unauthorized => return Problem::unauthorized(),
        ProblemKind::NotFound => "no route matches this path".into(),
        ProblemKind::MethodNotAllowed => "the route does not accept this method".into(),
        ProblemKind::LengthRequired => "a request body needs a Content-Length header".into(),
        // The body limit middleware names the limit; this is a body that grew past it unannounced.
        ProblemKind::PayloadTooLarge => "the request body is over this route's limit".into(),
        ProblemKind::Internal => return Problem::internal(&err),
        _ => kind.title().to_string(),
    };
    Problem::new(kind, detail)
}

/// Displays an error with its sources, `outer: inner: innermost`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use poem::error::{MethodNotAllowedError, NotFoundError, SizedLimitError};
    use poem_openapi::error::{AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError};

    use super::*;

    #[test]
    fn problem_types_are_pinned() {
        let pinned: Vec<(String, u16)> = ProblemKind::NAMED
            .iter()
            .map(|k| (k.type_uri(), k.status().as_u16()))
            .collect();
        let expected = [
            ("invalid-request", 400),
            ("invalid-notification", 400),
            ("invalid-signature", 400),
            ("unknown-plan", 400),
            ("invalid-campaign", 400),
            ("unauthorized", 401),
            ("not-found", 404),
            ("method-not-allowed", 405),
            ("conflict", 409),
            ("already-subscribed", 409),
            ("length-required", 411),
            ("payload-too-large", 413),
            ("unsupported-media-type", 415),
            ("rate-limited", 429),
            ("internal", 500),
            ("unavailable", 503),
        ]
        .map(|(slug, status)| (format!("urn:paygate:problem:{slug}"), status));
        assert_eq!(pinned, expected);
        assert_eq!(
            ProblemKind::Other(StatusCode::IM_A_TEAPOT).type_uri(),
            "urn:paygate:problem:http-418"
        );
    }

    fn mapped(err: impl Into<poem::Error>) -> Problem {
        problem_of(err.into())
    }

    #[test]
    fn poem_and_poem_openapi_errors_map_to_problems() {
        let payload = mapped(ParseRequestPayloadError {
            reason: "expected `,`".into(),
        });
        assert_eq!(payload.kind, ProblemKind::InvalidRequest);
        assert!(payload.detail.contains("expected `,`"), "{}", payload.detail);

        let param = mapped(ParseParamError {
            name: "limit",
            reason: "not an integer".into(),
        });
        assert_eq!(param.kind, ProblemKind::InvalidRequest);
        assert!(param.detail.contains("limit"), "{}", param.detail);

        assert_eq!(mapped(AuthorizationError).kind, ProblemKind::Unauthorized);
        assert_eq!(mapped(NotFoundError).kind, ProblemKind::NotFound);
        assert_eq!(mapped(MethodNotAllowedError).kind, ProblemKind::MethodNotAllowed);
        assert_eq!(
            mapped(SizedLimitError::PayloadTooLarge).kind,
            ProblemKind::PayloadTooLarge
        );
        assert_eq!(
            mapped(SizedLimitError::MissingContentLength).kind,
            ProblemKind::LengthRequired
        );
        assert_eq!(
            mapped(ContentTypeError::ExpectContentType).kind,
            ProblemKind::UnsupportedMediaType
        );
    }

    #[test]
    fn our_problems_pass_through_unchanged() {
        let problem = Problem::conflict("job 7 is pending");
        assert_eq!(mapped(problem.clone()), problem);
    }

    #[test]
    fn a_server_error_never_shows_its_cause() {
        let err = poem::Error::from_string(
            "password=hunter2 in connection string",
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        let problem = problem_of(err);
        assert_eq!(problem.kind, ProblemKind::Internal);
        assert!(!problem.detail.contains("hunter2"));
    }

    #[test]
    fn the_body_is_problem_json() {
        let resp = Problem::not_found("no job 7").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = serde_json::to_value(Problem::not_found("no job 7").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "urn:paygate:problem:not-found", "title": "Not found", "status": 404, "detail": "no job 7"})
        );
    }

    #[test]
    fn an_unauthorized_answer_names_the_scheme() {
        let resp = Problem::unauthorized().into_response();
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
