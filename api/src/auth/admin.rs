//! Who may call the ops routes: the holder of `ADMIN_TOKEN`, sent as a bearer token; and who may
//! scrape `/metrics`: the holder of `METRICS_TOKEN`, or of `ADMIN_TOKEN` while that is unset.
//!
//! Tokens are compared in constant time and never logged; a missing or wrong one is a 401
//! `unauthorized` problem that says nothing about what was sent.

use jobs::config::Secret;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::error::Problem;

/// AdminToken is the expected ops token, handed to the app as request data.
#[derive(Clone)]
pub struct AdminToken(pub Secret);

/// Operator access: `Authorization: Bearer <ADMIN_TOKEN>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "adminToken", checker = "check_admin")]
pub struct AdminAuth(Admin);

/// Admin is the proof that a request carried the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

async fn check_admin(req: &Request, bearer: Bearer) -> poem::Result<Admin> {
    let expected = req.data::<AdminToken>().map(|AdminToken(token)| token);
    check_bearer(expected, &bearer).map(|()| Admin)
}

/// Whether `bearer` is `expected`, in constant time: a 401 if not, a 500 (logged) if the app
/// was built without the token.
fn check_bearer(expected: Option<&Secret>, bearer: &Bearer) -> poem::Result<()> {
    let Some(expected) = expected else {
        let missing = std::io::Error::other("the app was built without an AdminToken");
        return Err(Problem::internal(&missing).into());
    };
    if expected.matches(bearer.token.as_bytes()) {
        Ok(())
    } else {
        Err(Problem::unauthorized().into())
    }
}

/// MetricsToken is the expected scraper token (`METRICS_TOKEN`), handed to the app as request
/// data; `None` when unset, and the admin token is taken instead.
#[derive(Clone)]
pub struct MetricsToken(pub Option<Secret>);

/// Scraper access to `/metrics`: `Authorization: Bearer <METRICS_TOKEN>` (or `ADMIN_TOKEN` when
/// `METRICS_TOKEN` is unset). The metrics show revenue and campaign names, and a scrape reads
/// the database.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "metricsToken", checker = "check_metrics")]
pub struct MetricsAuth(Scraper);

/// Scraper is the proof that a request carried the metrics token.
#[derive(Debug, Clone, Copy)]
pub struct Scraper;

async fn check_metrics(req: &Request, bearer: Bearer) -> poem::Result<Scraper> {
    let expected = match req.data::<MetricsToken>() {
        Some(MetricsToken(Some(token))) => Some(token),
        _ => req.data::<AdminToken>().map(|AdminToken(token)| token),
    };
    check_bearer(expected, &bearer).map(|()| Scraper)
}
