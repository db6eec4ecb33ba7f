//! `/v1/ops`: what operators see and do with the queues — statistics, pause and resume, dead
//! jobs, retry and discard, one by one or in bulk (with a dry run). The same operations as the `worker jobs` CLI, through
//! [`jobs::queue::ops`].

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::access::audit::{self, Audit};
use jobs::billing::Plans;
use jobs::billing::subscriber::{self, Subscriber};
use jobs::queue::Queue;
use jobs::queue::ops::{
    self, Change, DeadFilter, DeadJob, JobDetail, JobFilter, JobSummary, LIST_LIMIT_MAX, QueueStats,
};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sqlx::PgPool;

use super::Tag;
use crate::auth::AdminAuth;
use crate::error::{Problem, ProblemDetails};

/// OpsApi serves `/v1/ops/queues` and `/v1/ops/jobs/...`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpsApi;

/// How many dead jobs a listing returns unless told.
pub const LIST_LIMIT_DEFAULT: i64 = 50;

/// DeadJobPage is one page of a dead-job listing, most recently dead first.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeadJobPage {
    pub jobs: Vec<DeadJob>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// JobPage is one page of a job listing, newest first.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// JobChanged is a job's state after a retry or discard.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobChanged {
    pub id: i64,
    /// The new state: `pending` after a retry, `discarded` after a discard.
    pub state: String,
}

/// DeadJobFilter selects dead jobs for a bulk change. `queue` and the ages narrow; a filter
/// without any must say `"all": true` to change every dead job, else it is a 400
/// `invalid-request` (an empty body changes nothing by mistake). Ages are at most 100 years
/// (3155760000 seconds); more is a 400 `invalid-request`.
// The `maximum` validators here and on the listing's query are `ops::MAX_AGE_SECS` written out:
// an attribute cannot name a constant, so a test below holds the spec to it.
#[derive(Debug, Default, Object)]
#[oai(deny_unknown_fields, skip_serializing_if_is_none)]
pub struct DeadJobFilter {
    /// Only jobs of this queue.
    pub queue: Option<Queue>,
    /// Only jobs dead for at least this many seconds; at most 100 years.
    #[oai(validator(minimum(value = "0"), maximum(value = "3155760000")))]
    pub older_than_seconds: Option<i64>,
    /// Only jobs dead for at most this many seconds; at most 100 years.
    #[oai(validator(minimum(value = "0"), maximum(value = "3155760000")))]
    pub newer_than_seconds: Option<i64>,
    /// Only jobs that died at or before this time: pass a dry run's `as_of` so that the change
    /// applies to no job that died after the count.
    pub died_at_most: Option<DateTime<Utc>>,
    /// Every dead job the other fields select, all of them when there are none. Required to be
    /// true when no other field narrows.
    #[oai(default)]
    pub all: bool,
    /// Only count the jobs the change would apply to; change nothing.
    #[oai(default)]
    pub dry_run: bool,
}

/// BulkChanged says how many jobs a bulk retry or discard changed, or with `dry_run` would.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BulkChanged {
    /// Jobs changed, or that would be.
    pub count: u64,
    /// Whether this was a dry run that changed nothing.
    pub dry_run: bool,
    /// The database's time when the jobs were selected: a dry run's, to pass as
    /// `died_at_most` to the change it counted for.
    pub as_of: DateTime<Utc>,
    /// Matching `checkout` and `refunds` jobs a retry left dead (or would) because they were
    /// created more than 23 hours ago and `past_key_memory` was not set; 0 for a discard.
    pub skipped_past_key_memory: u64,
}

/// QueuePaused is whether a queue is paused after a pause or resume.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct QueuePaused {
    pub queue: String,
    pub paused: bool,
    /// False when the queue already was as asked.
    pub changed: bool,
}

/// PauseResponse is a queue after a pause or resume, or why not.
#[derive(ApiResponse)]
pub enum PauseResponse {
    /// The queue as it is now.
    #[oai(status = 200)]
    Ok(Json<QueuePaused>),
    /// No queue has this name (`not-found`); the detail lists the queues.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// ShowResponse is one job, or why not.
#[derive(ApiResponse)]
pub enum ShowResponse {
    /// The job.
    #[oai(status = 200)]
    Ok(Json<JobDetail>),
    /// No job has this id (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// SubscriberResponse is one subscriber, or why not.
#[derive(ApiResponse)]
pub enum SubscriberResponse {
    /// Everything known about them.
    #[oai(status = 200)]
    Ok(Json<Subscriber>),
    /// Nothing is known about this user: no profile, entitlement, payment or message
    /// (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
}

/// ChangeResponse is the outcome of a retry or discard of one job.
#[derive(ApiResponse)]
pub enum ChangeResponse {
    /// The job changed state.
    #[oai(status = 200)]
    Ok(Json<JobChanged>),
    /// No job has this id (`not-found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemDetails>),
    /// The job is in a state the change does not apply to (`conflict`); the detail names it.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemDetails>),
}

fn seconds(s: Option<i64>) -> Option<Duration> {
    s.map(|s| Duration::from_secs(s.unsigned_abs()))
}

impl DeadJobFilter {
    fn parse(&self) -> Result<DeadFilter, Problem> {
        let filter = DeadFilter {
            queue: self.queue,
            older_than: seconds(self.older_than_seconds),
            newer_than: seconds(self.newer_than_seconds),
            died_at_most: self.died_at_most,
        };
        let narrows = filter.queue.is_some() || filter.older_than.is_some() || filter.newer_than.is_some();
        if !narrows && !self.all {
            return Err(Problem::invalid_request(
                "say which dead jobs: queue, older_than_seconds or newer_than_seconds, or \"all\": true for every one",
            ));
        }
        Ok(filter)
    }
}

/// The answer to a pause or resume of `name`: `change` runs it on the queue and says whether it
/// changed anything.
async fn set_paused<F: Future<Output = Result<bool, sqlx::Error>>>(
    name: &str,
    paused: bool,
    change: impl FnOnce(Queue) -> F,
) -> Result<PauseResponse, Problem> {
    let Ok(queue) = name.parse::<Queue>() else {
        let names: Vec<&str> = Queue::ALL.iter().map(|q| q.name()).collect();
        let detail = format!("no queue {name:?}; the queues are {}", names.join(", "));
        return Ok(PauseResponse::NotFound(Json(Problem::not_found(detail).body())));
    };
    let changed = change(queue).await?;
    if changed {
        tracing::info!(queue = queue.name(), paused, "queue paused or resumed");
    }
    Ok(PauseResponse::Ok(Json(QueuePaused {
        queue: queue.name().into(),
        paused,
        changed,
    })))
}

/// The answer to a change of job `id`: its new state is `done_state` when it changed.
fn change_response(id: i64, change: Change, done_state: &str, applies_to: &str) -> ChangeResponse {
    match change {
        Change::Done => ChangeResponse::Ok(Json(JobChanged {
            id,
            state: done_state.into(),
        })),
        Change::NotFound => ChangeResponse::NotFound(Json(Problem::not_found(format!("no job {id}")).body())),
        Change::WrongState(state) => ChangeResponse::Conflict(Json(
            Problem::conflict(format!(
                "job {id} is {state}; only {applies_to} jobs can be changed this way"
            ))
            .body(),
        )),
        Change::PastKeyMemory { queue, age } => ChangeResponse::Conflict(Json(
            Problem::conflict(ops::past_key_memory(id, &queue, age, "?past_key_memory=true")).body(),
        )),
    }
}

#[OpenApi(prefix_path = "/v1/ops", tag = "Tag::Ops")]
impl OpsApi {
    /// Audit the paid chats
    ///
    /// Per paid chat (a chat a plan in `PLANS` opens): the members without access (in the chat,
    /// not administrators, with no active entitlement that opens it) and the users with access
    /// who are not in it, as the bot's membership records (kept by Telegram's `chat_member`
    /// updates) and the active entitlements say. Changes nothing; `worker access audit --fix`
    /// removes the former and sends the latter their links.
    #[oai(path = "/access/audit", method = "get", operation_id = "audit_paid_chats")]
    async fn access_audit(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        plans: Data<&Plans>,
    ) -> Result<Json<Audit>, Problem> {
        let mut conn = pool.acquire().await?;
        Ok(Json(audit::audit(&mut conn, &plans).await?))
    }

    /// Queue statistics
    ///
    /// Every queue, including empty ones: its jobs by state, the oldest due job's wait, jobs
    /// completed in the last minute, 5 minutes and hour, throughput, and whether it is paused.
    #[oai(path = "/queues", method = "get", operation_id = "list_queues")]
    async fn queues(&self, _auth: AdminAuth, pool: Data<&PgPool>) -> Result<Json<Vec<QueueStats>>, Problem> {
        Ok(Json(ops::queue_stats(&pool).await?))
    }

    /// Pause a queue
    ///
    /// No worker process takes the queue's jobs from its next fetch (within a second), until
    /// the queue is resumed; the pause is stored, so it holds across restarts and deploys. Jobs
    /// running now finish, and new jobs are still enqueued. Pausing a paused queue changes
    /// nothing (`changed: false`).
    #[oai(path = "/queues/:name/pause", method = "post", operation_id = "pause_queue")]
    async fn pause(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The queue's name.
        name: Path<String>,
    ) -> Result<PauseResponse, Problem> {
        set_paused(&name.0, true, |q| ops::pause(&pool, q)).await
    }

    /// Resume a queue
    ///
    /// Workers take the queue's jobs again at once. Resuming a queue that is not paused changes
    /// nothing (`changed: false`).
    #[oai(path = "/queues/:name/resume", method = "post", operation_id = "resume_queue")]
    async fn resume(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The queue's name.
        name: Path<String>,
    ) -> Result<PauseResponse, Problem> {
        set_paused(&name.0, false, |q| ops::resume(&pool, q)).await
    }

    /// List jobs
    ///
    /// Jobs in any state, newest first, a page at a time (pass `next_before` as `before` for the
    /// next): by queue, state, logical key, or a field of the payload. Completed and discarded
    /// jobs are kept for `JOB_RETENTION_HOURS`, dead ones for `RECORD_RETENTION_DAYS`.
    #[oai(path = "/jobs", method = "get", operation_id = "list_jobs")]
    #[allow(clippy::too_many_arguments)] // one per query parameter
    async fn list_jobs(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// Only jobs of this queue.
        queue: Query<Option<Queue>>,
        /// Only jobs in this state: pending, running, completed, dead or discarded.
        state: Query<Option<String>>,
        /// Only the job of this logical key, e.g. `billing_request:12`.
        logical_key: Query<Option<String>>,
        /// Only jobs whose payload contains this JSON object, e.g. `{"user_id":42}`.
        payload: Query<Option<String>>,
        /// The most jobs to return, 1 to 500.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<i64>,
        /// Only jobs with a smaller id: the previous page's `next_before`.
        #[oai(validator(minimum(value = "0")))]
        before: Query<Option<i64>>,
    ) -> Result<Json<JobPage>, Problem> {
        let state = match state.0.as_deref() {
            None => None,
            Some(name) => Some(ops::STATES.into_iter().find(|s| *s == name).ok_or_else(|| {
                Problem::invalid_request(format!("no state {name:?}; the states are {}", ops::STATES.join(", ")))
            })?),
        };
        let payload = match payload.0.as_deref() {
            None => None,
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(object @ serde_json::Value::Object(_)) => Some(object),
                _ => {
                    return Err(Problem::invalid_request(
                        "payload must be a JSON object, e.g. {\"user_id\":42}",
                    ));
                }
            },
        };
        let filter = JobFilter {
            queue: queue.0,
            state,
            logical_key: logical_key.0,
            payload,
        };
        let limit = limit.0.clamp(1, LIST_LIMIT_MAX);
        let jobs = ops::list(&pool, &filter, limit, before.0).await?;
        let next_before = if jobs.len() as i64 == limit {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(Json(JobPage { jobs, next_before }))
    }

    /// List dead jobs
    ///
    /// Most recently dead first, a page at a time: pass `next_before` as `before` for the next.
    #[oai(path = "/jobs/dead", method = "get", operation_id = "list_dead_jobs")]
    #[allow(clippy::too_many_arguments)] // one per query parameter
    async fn list_dead(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// Only jobs of this queue: entitlements, refunds, notifications, broadcasts, checkout
        /// or tracking.
        queue: Query<Option<Queue>>,
        /// Only jobs dead for at least this many seconds; at most 100 years.
        #[oai(validator(minimum(value = "0"), maximum(value = "3155760000")))]
        older_than_seconds: Query<Option<i64>>,
        /// Only jobs dead for at most this many seconds; at most 100 years.
        #[oai(validator(minimum(value = "0"), maximum(value = "3155760000")))]
        newer_than_seconds: Query<Option<i64>>,
        /// The most jobs to return, 1 to 500.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<i64>,
        /// Only jobs with a smaller id: the previous page's `next_before`.
        #[oai(validator(minimum(value = "0")))]
        before: Query<Option<i64>>,
    ) -> Result<Json<DeadJobPage>, Problem> {
        let filter = DeadJobFilter {
            queue: queue.0,
            older_than_seconds: older_than_seconds.0,
            newer_than_seconds: newer_than_seconds.0,
            died_at_most: None,
            // A listing changes nothing: no filter lists every dead job.
            all: true,
            dry_run: false,
        }
        .parse()?;
        let limit = limit.0.clamp(1, LIST_LIMIT_MAX);
        let jobs = ops::list_dead(&pool, &filter, limit, before.0).await?;
        let next_before = if jobs.len() as i64 == limit {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(Json(DeadJobPage { jobs, next_before }))
    }

    /// Retry dead jobs
    ///
    /// Puts every dead job matching the filter back in its queue, due now, with a fresh round
    /// of attempts. `checkout` and `refunds` jobs created more than 23 hours ago stay dead
    /// unless `past_key_memory` (Stripe forgets idempotency keys after 24 hours, so their retry
    /// could repeat a Stripe call) and are counted in `skipped_past_key_memory`. A filter that
    /// narrows nothing needs `"all": true`; `"dry_run": true` only counts.
    #[oai(path = "/jobs/dead/retry", method = "post", operation_id = "retry_dead_jobs")]
    async fn retry_dead(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        filter: Json<DeadJobFilter>,
        /// Retry `checkout` and `refunds` jobs older than Stripe's key memory too.
        #[oai(default)]
        past_key_memory: Query<bool>,
    ) -> Result<Json<BulkChanged>, Problem> {
        let as_of = ops::database_now(&pool).await?;
        let bulk = ops::retry_matching(&pool, &filter.parse()?, past_key_memory.0, filter.dry_run, |_| {}).await?;
        if !filter.dry_run {
            tracing::info!(
                count = bulk.count,
                skipped = bulk.skipped_past_key_memory,
                "dead jobs retried"
            );
        }
        Ok(Json(BulkChanged {
            count: bulk.count,
            dry_run: filter.dry_run,
            as_of,
            skipped_past_key_memory: bulk.skipped_past_key_memory,
        }))
    }

    /// Discard dead jobs
    ///
    /// Discards every dead job matching the filter: kept for the record, never run. A filter
    /// that narrows nothing needs `"all": true`; `"dry_run": true` only counts.
    #[oai(path = "/jobs/dead/discard", method = "post", operation_id = "discard_dead_jobs")]
    async fn discard_dead(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        filter: Json<DeadJobFilter>,
    ) -> Result<Json<BulkChanged>, Problem> {
        let as_of = ops::database_now(&pool).await?;
        let count = ops::discard_matching(&pool, &filter.parse()?, filter.dry_run, |_| {}).await?;
        if !filter.dry_run {
            tracing::info!(count, "dead jobs discarded");
        }
        Ok(Json(BulkChanged {
            count,
            dry_run: filter.dry_run,
            as_of,
            skipped_past_key_memory: 0,
        }))
    }

    /// Show a job
    ///
    /// Everything known about one job, in any state.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "show_job")]
    async fn show(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The job's id. Not an integer: 400 `invalid-request`.
        id: Path<i64>,
    ) -> Result<ShowResponse, Problem> {
        Ok(match ops::show(&pool, id.0).await? {
            Some(job) => ShowResponse::Ok(Json(job)),
            None => ShowResponse::NotFound(Json(Problem::not_found(format!("no job {}", id.0)).body())),
        })
    }

    /// Look up a subscriber
    ///
    /// A Telegram user as ops look them up: their profile, every entitlement with its history,
    /// their payments through either provider (each named as `POST /v1/ops/refunds` takes it),
    /// and the last 20 messages the bot sent them.
    #[oai(path = "/users/:id", method = "get", operation_id = "show_subscriber")]
    async fn subscriber(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The Telegram user id. Not an integer: 400 `invalid-request`.
        id: Path<i64>,
    ) -> Result<SubscriberResponse, Problem> {
        Ok(match subscriber::look_up(&mut *pool.acquire().await?, id.0).await? {
            Some(found) => SubscriberResponse::Ok(Json(found)),
            None => SubscriberResponse::NotFound(Json(
                Problem::not_found(format!("nothing is known about user {}", id.0)).body(),
            )),
        })
    }

    /// Retry a dead job
    ///
    /// Puts a dead job back in its queue, due now, with a fresh round of attempts; 409
    /// `conflict` if it is not dead, or if it is a `checkout` or `refunds` job created more than
    /// 23 hours ago and `past_key_memory` is not set: Stripe forgets idempotency keys after 24
    /// hours, so its retry could repeat a Stripe call.
    #[oai(path = "/jobs/:id/retry", method = "post", operation_id = "retry_job")]
    async fn retry(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The job's id. Not an integer: 400 `invalid-request`.
        id: Path<i64>,
        /// Retry a `checkout` or `refunds` job older than Stripe's key memory, after checking at
        /// Stripe that its call was not made.
        #[oai(default)]
        past_key_memory: Query<bool>,
    ) -> Result<ChangeResponse, Problem> {
        let change = ops::retry(&pool, id.0, past_key_memory.0).await?;
        if change == Change::Done {
            tracing::info!(job_id = id.0, "dead job retried");
        }
        Ok(change_response(id.0, change, "pending", "dead"))
    }

    /// Discard a job
    ///
    /// Discards a dead or pending job: it is kept for the record and never runs; 409
    /// `conflict` in any other state.
    #[oai(path = "/jobs/:id/discard", method = "post", operation_id = "discard_job")]
    async fn discard(
        &self,
        _auth: AdminAuth,
        pool: Data<&PgPool>,
        /// The job's id. Not an integer: 400 `invalid-request`.
        id: Path<i64>,
    ) -> Result<ChangeResponse, Problem> {
        let change = ops::discard(&pool, id.0).await?;
        if change == Change::Done {
            tracing::info!(job_id = id.0, "job discarded");
        }
        Ok(change_response(id.0, change, "discarded", "dead or pending"))
    }
}

fn default_limit() -> i64 {
    LIST_LIMIT_DEFAULT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_limit_maximum_is_the_queue_s() {
        // The `maximum` validator of `limit` is a literal; keep it in step with jobs.
        assert_eq!(LIST_LIMIT_MAX, 500);
    }

    #[test]
    fn every_documented_age_maximum_is_the_queue_s() {
        use jobs::queue::ops::MAX_AGE_SECS;

        let spec: serde_json::Value = serde_json::from_str(crate::routes::openapi_json()).unwrap();
        let listing = spec["paths"]["/v1/ops/jobs/dead"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let filter = &spec["components"]["schemas"]["DeadJobFilter"]["properties"];
        for name in ["older_than_seconds", "newer_than_seconds"] {
            let param = listing.iter().find(|p| p["name"] == name).unwrap();
            for schema in [&param["schema"], &filter[name]] {
                assert_eq!(
                    schema["maximum"].as_f64(),
                    Some(MAX_AGE_SECS as f64),
                    "{name}: {schema}"
                );
                assert_eq!(schema["minimum"].as_f64(), Some(0.0), "{name}: {schema}");
            }
        }
    }

    #[test]
    fn the_spec_names_exactly_the_pipelines_queues() {
        let spec: serde_json::Value = serde_json::from_str(crate::routes::openapi_json()).unwrap();
        let names: Vec<&str> = Queue::ALL.iter().map(|q| q.name()).collect();
        assert_eq!(spec["components"]["schemas"]["Queue"]["enum"], serde_json::json!(names));
    }

    #[test]
    fn a_conflict_names_the_current_state() {
        let ChangeResponse::Conflict(Json(body)) =
            change_response(7, Change::WrongState("pending".into()), "pending", "dead")
        else {
            panic!("expected a conflict");
        };
        assert_eq!(body.status, 409);
        assert!(body.detail.contains("job 7 is pending"), "{}", body.detail);
    }
}
