//! The web process: validates and authenticates requests, writes them and their jobs in one
//! transaction, answers. It never calls Stripe or Telegram itself; workers do.
//!
//! # Layout
//! - [`config`]: the environment it reads.
//! - [`startup`]: [`startup::Application`] — build (database, port, routes and middleware) and
//!   serve until a shutdown signal.
//! - [`routes`]: every route, declared with poem-openapi; [`openapi_json`] is their spec.
//!   [`routes::health`] (probes and metrics), [`routes::notifications`], [`routes::ops`],
//!   [`routes::refunds`], [`routes::billing`], [`routes::me`], [`routes::stripe_webhook`].
//! - [`auth`]: the ops bearer token and user tokens (JWT).
//! - [`error`]: problem+json answers, and the conversion of every other error into one.
//! - [`telemetry`]: request ids, route labels, the request span and log line.
//! - [`metrics`]: the Prometheus recorder, HTTP and webhook metrics, and the job pipeline and
//!   billing counters read at scrape.

pub mod allow;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod web;

pub use config::Config;
pub use routes::openapi_json;
pub use startup::Application;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// The checked-in spec, `openapi/openapi.json` at the workspace root.
    fn checked_in_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
    }

    #[test]
    fn openapi_spec_is_checked_in() {
        let generated = format!("{}\n", super::openapi_json());
        let path = checked_in_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("writing openapi/openapi.json");
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "openapi/openapi.json is not the spec the code generates; regenerate it with\n\
             \n    UPDATE_OPENAPI=1 cargo test -p api openapi\n\nand commit the result"
        );
    }
}
