//! The web process's configuration, read from the environment only.
//!
//! A missing or malformed variable is a [`ConfigError`] naming it; `main` prints that one line
//! and exits 1.

use std::net::{IpAddr, Ipv4Addr};

use jobs::config::{ConfigError, Secret, parsed_or, required};

/// The shortest `ADMIN_TOKEN` accepted: shorter ones are guessable.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;

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
        Ok(Config {
            host,
            port,
            database_url,
            database_pool_size,
            admin_token,
        })
    }
}
