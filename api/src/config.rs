//! The web process's configuration, read from the environment only.
//!
//! A missing or malformed variable is a [`ConfigError`] naming it; `main` prints that one line
//! and exits 1.

use std::net::{IpAddr, Ipv4Addr};

use jobs::billing::Plans;
use jobs::bot::Texts;
use jobs::config::{ConfigError, Secret, optional, parsed_or, required};
use jobs::marketing::Settings;

use crate::auth::init_data::{self, InitDataKeys};

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
    /// `DATABASE_POOL_SIZE`: the most database connections, 5 by default (see the README's
    /// connection budget: one web and one worker dyno fit the smallest Heroku Postgres plan).
    pub database_pool_size: u32,
    /// `ADMIN_TOKEN`: the bearer token of the `/v1/ops` routes; required, at least 16 characters.
    pub admin_token: Secret,
    /// `METRICS_TOKEN`: the bearer token of `GET /metrics`, at least 16 characters; unset, the
    /// admin token is taken instead.
    pub metrics_token: Option<Secret>,
    /// `PLANS` (the catalogue as JSON) or `PLANS_FILE` (a file holding it): required; what
    /// `POST /v1/billing/checkout` may sell. See [`jobs::billing::plans`] for the format.
    pub plans: Plans,
    /// `BOT_TEXTS` (JSON) or `BOT_TEXTS_FILE`: what the bot says, where it differs from the
    /// defaults. See [`jobs::bot::texts`].
    pub texts: Texts,
    /// `STRIPE_WEBHOOK_SECRET`: required; the signing secret of the Stripe webhook endpoint
    /// (`whsec_…`), or several separated by commas while one is being rolled: a delivery signed
    /// under any of them verifies.
    pub stripe_webhook_secrets: Vec<Secret>,
    /// How user tokens are checked.
    pub jwt: JwtConfig,
    /// The Telegram side: the webhook's secret and Mini App sign-in.
    pub telegram: TelegramConfig,
    /// `TELEGRAM_BOT_USERNAME` and `TELEGRAM_MESSAGES_PER_SECOND`: for campaigns' deep links and
    /// broadcasts' expected finish.
    pub marketing: Settings,
}

/// TelegramConfig is what the web process needs of the bot.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// `TELEGRAM_WEBHOOK_SECRET`: required; the secret token Telegram sends with every update
    /// (1–256 of `A-Z a-z 0-9 _ -`, as Telegram allows; at least 16 here).
    pub webhook_secret: Secret,
    /// `TELEGRAM_BOT_TOKEN` (required), `TELEGRAM_INIT_DATA_MAX_AGE` (seconds, 3600 by default)
    /// and `TELEGRAM_INIT_DATA_PUBLIC_KEY` (optional: `production`, `test`, or 64 hex digits):
    /// how Mini App `initData` is checked.
    pub init_data: InitDataKeys,
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
        let metrics_token = match optional("METRICS_TOKEN") {
            Some(_) => Some(Secret::required("METRICS_TOKEN", ADMIN_TOKEN_MIN_LEN)?),
            None => None,
        };
        let database_pool_size = parsed_or("DATABASE_POOL_SIZE", 5u32)?;
        if database_pool_size < 2 {
            // One connection is the LISTEN for settled billing requests for as long as it runs.
            return Err(ConfigError {
                var: "DATABASE_POOL_SIZE",
                problem: "must be at least 2 (one is the LISTEN for settled billing requests)".into(),
            });
        }
        let host = parsed_or("HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        let plans = Plans::from_env()?;
        let texts = Texts::from_env()?;
        let stripe_webhook_secrets = parse_webhook_secrets(&required("STRIPE_WEBHOOK_SECRET")?)?;
        let jwt = JwtConfig {
            secret: Secret::required("JWT_SECRET", JWT_SECRET_MIN_LEN)?,
            issuer: optional("JWT_ISSUER").unwrap_or_else(|| "paygate".into()),
            audience: optional("JWT_AUDIENCE").unwrap_or_else(|| "paygate-api".into()),
        };
        let telegram = TelegramConfig {
            webhook_secret: webhook_secret(&required("TELEGRAM_WEBHOOK_SECRET")?)?,
            init_data: init_data_keys()?,
        };
        Ok(Config {
            telegram,
            marketing: Settings::from_env()?,
            host,
            port,
            database_url,
            database_pool_size,
            admin_token,
            metrics_token,
            plans,
            texts,
            stripe_webhook_secrets,
            jwt,
        })
    }
}

impl TelegramConfig {
    /// The configuration for the bot with `bot_token` and the webhook secret `webhook_secret`,
    /// with the defaults of the variables left unset: the HMAC `hash` only, a 1-hour max age.
    pub fn new(bot_token: &str, webhook_secret: &str) -> Result<TelegramConfig, ConfigError> {
        Ok(TelegramConfig {
            webhook_secret: self::webhook_secret(webhook_secret)?,
            init_data: InitDataKeys {
                bot_token: Secret::new(bot_token),
                bot_id: bot_id(bot_token)?,
                ed25519_public_key: None,
                max_age: DEFAULT_INIT_DATA_MAX_AGE,
            },
        })
    }
}

/// How old Mini App `initData` may be unless `TELEGRAM_INIT_DATA_MAX_AGE` says otherwise.
pub const DEFAULT_INIT_DATA_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The bot's id: the digits of its token before `:`.
fn bot_id(token: &str) -> Result<u64, ConfigError> {
    token
        .split_once(':')
        .and_then(|(id, _)| id.parse::<u64>().ok())
        .ok_or_else(|| ConfigError {
            var: "TELEGRAM_BOT_TOKEN",
            problem: "is not a bot token (<bot id>:<secret>)".into(),
        })
}

/// The shortest `TELEGRAM_WEBHOOK_SECRET` accepted.
pub const TELEGRAM_WEBHOOK_SECRET_MIN_LEN: usize = 16;

/// A `TELEGRAM_WEBHOOK_SECRET`: what Telegram's `setWebhook` accepts, and long enough to guess.
pub fn webhook_secret(raw: &str) -> Result<Secret, ConfigError> {
    let allowed = raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !allowed || !(TELEGRAM_WEBHOOK_SECRET_MIN_LEN..=256).contains(&raw.len()) {
        return Err(ConfigError {
            var: "TELEGRAM_WEBHOOK_SECRET",
            problem: format!("must be {TELEGRAM_WEBHOOK_SECRET_MIN_LEN} to 256 characters of A-Z, a-z, 0-9, _ and -"),
        });
    }
    Ok(Secret::new(raw))
}

/// How Mini App `initData` is checked, from `TELEGRAM_BOT_TOKEN`, `TELEGRAM_INIT_DATA_MAX_AGE`
/// and `TELEGRAM_INIT_DATA_PUBLIC_KEY`.
fn init_data_keys() -> Result<InitDataKeys, ConfigError> {
    let token = required("TELEGRAM_BOT_TOKEN")?;
    let bot_id = bot_id(&token)?;
    let max_age: u64 = parsed_or("TELEGRAM_INIT_DATA_MAX_AGE", DEFAULT_INIT_DATA_MAX_AGE.as_secs())?;
    if max_age == 0 {
        return Err(ConfigError {
            var: "TELEGRAM_INIT_DATA_MAX_AGE",
            problem: "must be at least 1 (seconds)".into(),
        });
    }
    let ed25519_public_key = match optional("TELEGRAM_INIT_DATA_PUBLIC_KEY").as_deref() {
        None => None,
        Some(name_or_hex) => {
            let hex = match name_or_hex {
                "production" => init_data::TELEGRAM_PUBLIC_KEY_PRODUCTION,
                "test" => init_data::TELEGRAM_PUBLIC_KEY_TEST,
                hex => hex,
            };
            Some(init_data::verifying_key_from_hex(hex).ok_or_else(|| ConfigError {
                var: "TELEGRAM_INIT_DATA_PUBLIC_KEY",
                problem: "is not `production`, `test` or an Ed25519 public key in 64 hex digits".into(),
            })?)
        }
    };
    Ok(InitDataKeys {
        bot_token: Secret::new(token),
        bot_id,
        ed25519_public_key,
        max_age: std::time::Duration::from_secs(max_age),
    })
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
    fn telegram_settings_take_what_telegram_takes_and_never_echo_a_secret() {
        let ok = TelegramConfig::new("7342037142:AAH-token", "abc_DEF-0123456789").unwrap();
        assert_eq!(ok.init_data.bot_id, 7342037142);
        assert_eq!(ok.init_data.max_age, DEFAULT_INIT_DATA_MAX_AGE);
        for bad in [
            "short-secret",
            "has space in it 0123",
            "ünïcode-secret-0123",
            &"x".repeat(257),
        ] {
            let err = TelegramConfig::new("1:t", bad).expect_err(bad);
            assert_eq!(err.var, "TELEGRAM_WEBHOOK_SECRET");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        for bad in ["no-colon", "abc:def", ":def"] {
            let err = TelegramConfig::new(bad, "abc_DEF-0123456789").expect_err(bad);
            assert_eq!(err.var, "TELEGRAM_BOT_TOKEN");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

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
