//! Probes for the platform: liveness and readiness (no authentication), and Prometheus metrics
//! (the metrics token).

use std::time::Duration;

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use crate::auth::MetricsAuth;
use crate::error::{Problem, ProblemDetails, ProblemKind};
use crate::metrics::DatabaseFigures;

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// ProbeApi serves `/health`, `/ready` and `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeApi;

/// Status is the body of a passing probe.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Status {
    /// Always `ok`.
    pub status: String,
}

impl Status {
    fn ok() -> Status {
        Status { status: "ok".into() }
    }
}

/// ReadyResponse says whether the process can serve requests that need the database.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database answered.
    #[oai(status = 200)]
    Ready(Json<Status>),
    /// The database did not answer within 2 seconds (`urn:paygate:problem:unavailable`).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<ProblemDetails>),
}

/// MetricsResponse is a Prometheus scrape.
#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Metrics in the Prometheus text exposition format 0.0.4.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

#[OpenApi(tag = "Tag::Probes")]
impl ProbeApi {
    /// Liveness
    ///
    /// The process is up. Does not touch the database.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Status> {
        Json(Status::ok())
    }

    /// Readiness
    ///
    /// The database answers `SELECT 1` within 2 seconds; else 503 `unavailable`.
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, pool: Data<&PgPool>) -> ReadyResponse {
        let check = jobs::db::ping(&pool);
        let detail = match tokio::time::timeout(READY_TIMEOUT, check).await {
            Ok(Ok(_)) => return ReadyResponse::Ready(Json(Status::ok())),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness check failed");
                "the database is not answering"
            }
            Err(_) => {
                tracing::warn!(timeout_s = READY_TIMEOUT.as_secs(), "readiness check timed out");
                "the database did not answer in time"
            }
        };
        ReadyResponse::Unavailable(Json(Problem::new(ProblemKind::Unavailable, detail).body()))
    }

    /// Prometheus metrics
    ///
    /// HTTP traffic of this process, and the job pipeline (queue depths, worker counters and
    /// job durations) and billing counters read from the database: by one scrape at a time,
    /// and at most every 5 seconds, whatever the number of scrapers. Needs
    /// `Authorization: Bearer <METRICS_TOKEN>` (`ADMIN_TOKEN` when `METRICS_TOKEN` is unset).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(
        &self,
        _auth: MetricsAuth,
        pool: Data<&PgPool>,
        figures: Data<&DatabaseFigures>,
    ) -> Result<MetricsResponse, Problem> {
        // A Result for the spec: it documents the problem answers (401 without the token).
        Ok(MetricsResponse::Ok(PlainText(
            crate::metrics::scrape(&pool, &figures).await,
        )))
    }
}
