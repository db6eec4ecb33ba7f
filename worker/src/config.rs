//! The worker's configuration, from the environment only.

use std::time::Duration;

use jobs::billing::Plans;
use jobs::billing::expiry::{DEFAULT_GRACE, DEFAULT_REMINDER_HOURS};
use jobs::billing::stripe::Links;
use jobs::bot::Texts;
use jobs::config::{ConfigError, Secret, optional, parsed_or, required};
use jobs::marketing::Settings;
use jobs::marketing::broadcasts::DEFAULT_BROADCAST_RETENTION;
use jobs::retention::{DEFAULT_RECORD_RETENTION, MIN_RECORD_RETENTION};
use jobs::stripe::client::DEFAULT_API_URL as STRIPE_DEFAULT_API_URL;
use jobs::telegram::client::DEFAULT_API_URL;
use jobs::telegram::pace::Pace;
use jobs::tracking::DEFAULT_ATTRIBUTION_WINDOW;

/// Config is everything `worker run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// `DATABASE_POOL_SIZE`: 10 by default; the lease heartbeat's connection comes on top.
    pub database_pool_size: u32,
    /// Jobs one queue's worker runs at once in this process.
    pub concurrency: usize,
    pub telegram_bot_token: Secret,
    pub telegram_api_url: String,
    pub telegram_pace: Pace,
    /// How long completed and discarded jobs are kept.
    pub job_retention: Duration,
    /// Names this process's workers; `DYNO` on Heroku, else the host name.
    pub instance: String,
    /// `PLANS` or `PLANS_FILE`: the plan catalogue.
    pub plans: Plans,
    /// `BOT_TEXTS` or `BOT_TEXTS_FILE`: what the bot says.
    pub texts: Texts,
    pub stripe: StripeConfig,
    /// Where notifications send users (`BILLING_PORTAL_LINK`).
    pub links: Links,
    /// `ATTRIBUTION_WINDOW_HOURS`: how long after a promo click a payment is attributed to it.
    pub attribution_window: Duration,
    /// The bot's username and the send rate, as the web process reads them too.
    pub marketing: Settings,
    /// `BROADCAST_RETENTION_DAYS`: how long after a broadcast's fan-out finished its
    /// per-recipient rows are kept before only its counts remain.
    pub broadcast_retention: Duration,
    /// `RECORD_RETENTION_DAYS`: how long the records that guard against repeats (effect
    /// ledger, deliveries, Stripe events, billing requests, pre-checkout answers) and dead jobs
    /// are kept; see [`jobs::retention`].
    pub record_retention: Duration,
    /// `EXPIRY_GRACE_HOURS`: how long an entitlement stays active after its paid end without a
    /// renewal before the expiry pass ends it.
    pub expiry_grace: Duration,
    /// `REMINDER_HOURS`: how many hours before an entitlement that will not renew ends its user
    /// is reminded, each offset once per paid period; empty for no reminders.
    pub reminder_hours: Vec<u32>,
}

/// StripeConfig is how the worker talks to Stripe and where Stripe sends users back to.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `STRIPE_SECRET_KEY`: required.
    pub secret_key: Secret,
    /// `STRIPE_API_URL`: Stripe's own by default; the local run and tests point it at the fake.
    pub api_url: String,
    /// `CHECKOUT_SUCCESS_URL`, `CHECKOUT_CANCEL_URL`: where Checkout sends the user after paying
    /// or giving up; required.
    pub success_url: String,
    pub cancel_url: String,
    /// `BILLING_PORTAL_RETURN_URL`: where the Billing Portal's "return" link goes; required.
    pub portal_return_url: String,
}

impl Config {
    /// Reads the configuration; the error names the first bad variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        let marketing = Settings::from_env()?;
        let concurrency: usize = parsed_or("WORKER_CONCURRENCY", 20)?;
        if concurrency == 0 {
            return Err(ConfigError {
                var: "WORKER_CONCURRENCY",
                problem: "must be at least 1".into(),
            });
        }
        let database_pool_size: u32 = parsed_or("DATABASE_POOL_SIZE", 10)?;
        if database_pool_size < 2 {
            // One connection is the LISTEN for new jobs for as long as the process runs.
            return Err(ConfigError {
                var: "DATABASE_POOL_SIZE",
                problem: "must be at least 2 for a worker (one is its LISTEN for new jobs)".into(),
            });
        }
        Ok(Config {
            database_url: required("DATABASE_URL")?,
            database_pool_size,
            concurrency,
            telegram_bot_token: Secret::required("TELEGRAM_BOT_TOKEN", 1)?,
            telegram_api_url: optional("TELEGRAM_API_URL").unwrap_or_else(|| DEFAULT_API_URL.to_string()),
            telegram_pace: Pace {
                per_second: marketing.messages_per_second,
                ..Pace::TELEGRAM_DEFAULT
            },
            job_retention: Duration::from_secs(3600 * parsed_or::<u64>("JOB_RETENTION_HOURS", 168)?),
            instance: optional("DYNO").unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "worker".into())
            }),
            plans: Plans::from_env()?,
            texts: Texts::from_env()?,
            stripe: StripeConfig {
                secret_key: Secret::required("STRIPE_SECRET_KEY", 8)?,
                api_url: optional("STRIPE_API_URL").unwrap_or_else(|| STRIPE_DEFAULT_API_URL.to_string()),
                success_url: url("CHECKOUT_SUCCESS_URL")?,
                cancel_url: url("CHECKOUT_CANCEL_URL")?,
                portal_return_url: url("BILLING_PORTAL_RETURN_URL")?,
            },
            links: Links {
                billing_portal: optional("BILLING_PORTAL_LINK")
                    .map(|_| url("BILLING_PORTAL_LINK"))
                    .transpose()?,
            },
            // Up to a year.
            attribution_window: whole_units("ATTRIBUTION_WINDOW_HOURS", HOUR, DEFAULT_ATTRIBUTION_WINDOW, 8760)?,
            marketing,
            // Up to ten years.
            broadcast_retention: whole_units("BROADCAST_RETENTION_DAYS", DAY, DEFAULT_BROADCAST_RETENTION, 3650)?,
            record_retention: record_retention()?,
            // Up to a month.
            expiry_grace: whole_units("EXPIRY_GRACE_HOURS", HOUR, DEFAULT_GRACE, 720)?,
            reminder_hours: reminder_hours()?,
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// `RECORD_RETENTION_DAYS`: 7 to 3650 days, past every provider's redelivery window.
fn record_retention() -> Result<Duration, ConfigError> {
    let retention = whole_units("RECORD_RETENTION_DAYS", DAY, DEFAULT_RECORD_RETENTION, 3650)?;
    if retention < MIN_RECORD_RETENTION {
        return Err(ConfigError {
            var: "RECORD_RETENTION_DAYS",
            problem: "must be 7 to 3650: Stripe redelivers an event for up to 3 days".into(),
        });
    }
    Ok(retention)
}
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The duration in `var`: a whole number of `unit`s from 1 to `max`, `default` unless set.
fn whole_units(var: &'static str, unit: Duration, default: Duration, max: u64) -> Result<Duration, ConfigError> {
    match parsed_or::<u64>(var, default.as_secs() / unit.as_secs())? {
        n if (1..=max).contains(&n) => Ok(unit * n as u32),
        _ => Err(ConfigError {
            var,
            problem: format!("must be 1 to {max}"),
        }),
    }
}

/// `REMINDER_HOURS`: hours before the end, comma-separated (`72,24`), each 1 to 720; `none` for
/// no reminders.
fn reminder_hours() -> Result<Vec<u32>, ConfigError> {
    let Some(raw) = optional("REMINDER_HOURS") else {
        return Ok(DEFAULT_REMINDER_HOURS.to_vec());
    };
    if raw.trim() == "none" {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(|part| match part.trim().parse::<u32>() {
            Ok(hours) if (1..=720).contains(&hours) => Ok(hours),
            _ => Err(ConfigError {
                var: "REMINDER_HOURS",
                problem: format!("must be hours of 1 to 720 separated by commas, or none: {raw:?}"),
            }),
        })
        .collect()
}

/// The absolute http(s) URL in `var`, which must be set.
fn url(var: &'static str) -> Result<String, ConfigError> {
    let value = required(var)?;
    match reqwest::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(value),
        _ => Err(ConfigError {
            var,
            problem: format!("must be an absolute http(s) URL: {value:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_in_whole_units_defaults_and_refuses_what_is_out_of_range() {
        // Variables only this test reads.
        unsafe {
            std::env::set_var("PAYGATE_TEST_UNITS_48", "48");
            std::env::set_var("PAYGATE_TEST_UNITS_0", "0");
            std::env::set_var("PAYGATE_TEST_UNITS_9000", "9000");
            std::env::set_var("PAYGATE_TEST_UNITS_WORD", "week");
        }
        assert_eq!(
            whole_units("PAYGATE_TEST_UNITS_48", HOUR, DAY, 8760).unwrap(),
            HOUR * 48
        );
        assert_eq!(
            whole_units("PAYGATE_TEST_UNITS_UNSET", DAY, DAY * 30, 3650).unwrap(),
            DAY * 30
        );
        for var in [
            "PAYGATE_TEST_UNITS_0",
            "PAYGATE_TEST_UNITS_9000",
            "PAYGATE_TEST_UNITS_WORD",
        ] {
            let e = whole_units(var, HOUR, DAY, 8760).unwrap_err();
            assert_eq!(e.var, var);
        }
        assert_eq!(
            whole_units("PAYGATE_TEST_UNITS_0", HOUR, DAY, 8760)
                .unwrap_err()
                .problem,
            "must be 1 to 8760"
        );
    }
}
