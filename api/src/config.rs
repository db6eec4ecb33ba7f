//! The web process's configuration, read from the environment only.
//!
//! A missing or malformed variable is a [`ConfigError`] naming it; `main` prints that one line
//! and exits 1.

use std::net::{IpAddr, Ipv4Addr};

use jobs::billing::Plans;
use jobs::config::{ConfigError, Secret, optional, parsed_or, required};

/// The shortest `ADMIN_TOKEN` accepted: shorter ones are guessable.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;

/// The shortest `JWT_SECRET` accepted: an HS256 key should carry at least 256 bits.
pub const JWT_SECRET_MIN_LEN: usize = 32;

/// The prefix of every Stripe webhook signing secret.
pub const STRIPE_WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// Config is everything the web process needs to start. Its Debug shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST`: the address to listen on, 0.0.0.0 by default.
    pub host: IpAddr,
    /// `PORT`: the port to listen on, 8080 by default; 0 picks a free one.
    pub port: u16,
    /// `DATABASE_URL`: required; a secret, since it usually carries a password.
    pub database_url: Secret,
    /// `DATABASE_POOL_SIZE`: the most database connections, 10 by default.
    pub database_pool_size: u32,
    /// `ADMIN_TOKEN`: the bearer token of the `/v1/ops` routes; required, at least 16 characters.
    pub admin_token: Secret,
    /// `PLANS` (the catalogue as JSON) or `PLANS_FILE` (a file holding it): required; what
    /// `POST /v1/billing/checkout` may sell. See [`jobs::billing::plans`] for the format.
    pub plans: Plans,
    /// `STRIPE_WEBHOOK_SECRET`: required; the signing secret of the Stripe webhook endpoint
    /// (`whsec_…`), or several separated by commas while one is being rolled: a delivery signed
    /// under any of them verifies.
    pub stripe_webhook_secrets: Vec<Secret>,
    /// How user tokens are checked.
    pub jwt: JwtConfig,
}

/// JwtConfig is how user tokens (HS256 JWTs) are signed and checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `JWT_SECRET`: required, at least 32 characters; the HS256 key.
    pub secret: Secret,
    /// `JWT_ISSUER`: the `iss` tokens carry and must carry, `paygate` by default.
    pub issuer: String,
    /// `JWT_AUDIENCE`: the `aud` tokens carry and must carry, `paygate-api` by default.
    pub audience: String,
}

impl Config {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let port = parsed_or("PORT", 8080u16)?;
        let database_url = Secret::new(required("DATABASE_URL")?);
        let admin_token = Secret::required("ADMIN_TOKEN", ADMIN_TOKEN_MIN_LEN)?;
        let database_pool_size = parsed_or("DATABASE_POOL_SIZE", 10u32)?;
        if database_pool_size == 0 {
            return Err(ConfigError {
                var: "DATABASE_POOL_SIZE",
                problem: "must be at least 1".into(),
            });
        }
        let host = parsed_or("HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        let plans = Plans::from_env()?;
        let stripe_webhook_secrets = parse_webhook_secrets(&required("STRIPE_WEBHOOK_SECRET")?)?;
        let jwt = JwtConfig {
            secret: Secret::required("JWT_SECRET", JWT_SECRET_MIN_LEN)?,
            issuer: optional("JWT_ISSUER").unwrap_or_else(|| "paygate".into()),
            audience: optional("JWT_AUDIENCE").unwrap_or_else(|| "paygate-api".into()),
        };
        Ok(Config {
            host,
            port,
            database_url,
            database_pool_size,
            admin_token,
            plans,
            stripe_webhook_secrets,
            jwt,
        })
    }
}

/// The secrets of a `STRIPE_WEBHOOK_SECRET` value: comma-separated, each `whsec_…`. The error
/// says which one is wrong by position, never by value.
pub fn parse_webhook_secrets(raw: &str) -> Result<Vec<Secret>, ConfigError> {
    raw.split(',')
        .enumerate()
        .map(|(i, part)| {
            let secret = part.trim();
            let fault = |what: &str| ConfigError {
                var: "STRIPE_WEBHOOK_SECRET",
                problem: format!("is malformed: secret {} of the list {what}", i + 1),
            };
            if secret.is_empty() {
                return Err(fault("is empty"));
            }
            match secret.strip_prefix(STRIPE_WEBHOOK_SECRET_PREFIX) {
                Some(rest) if !rest.is_empty() => Ok(Secret::new(secret)),
                _ => Err(fault("is not a webhook signing secret (whsec_…)")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_are_a_comma_separated_list() {
        let secrets = parse_webhook_secrets("whsec_old, whsec_new").unwrap();
        let exposed: Vec<&str> = secrets.iter().map(Secret::expose).collect();
        assert_eq!(exposed, ["whsec_old", "whsec_new"]);
        assert_eq!(parse_webhook_secrets("whsec_1").unwrap().len(), 1);
    }

    #[test]
    fn a_bad_webhook_secret_is_named_by_position_only() {
        for (raw, says) in [
            ("whsec_a,", "secret 2 of the list is empty"),
            ("sk_live_abc", "secret 1 of the list is not a webhook signing secret"),
            ("whsec_a,whsec_", "secret 2 of the list is not"),
        ] {
            let err = parse_webhook_secrets(raw).unwrap_err();
            assert_eq!(err.var, "STRIPE_WEBHOOK_SECRET");
            assert!(err.problem.contains(says), "{raw}: {err}");
            assert!(!err.to_string().contains("sk_live_abc"), "{err}");
        }
    }
}
