//! Reading configuration from the environment, the only place it comes from.
//!
//! Every reader fails with a [`ConfigError`] naming the variable, which the binaries print as the
//! one line they stop on. Secrets are read into [`Secret`], which never prints its value.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

/// ConfigError is a missing or malformed environment variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {var} {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// The value of `var`, or `None` when it is unset or empty.
pub fn optional(var: &'static str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// The value of `var`, which must be set.
pub fn required(var: &'static str) -> Result<String, ConfigError> {
    optional(var).ok_or_else(|| ConfigError {
        var,
        problem: "is not set".into(),
    })
}

/// The value of `var`, or when it is unset the contents of the file `file_var` names, with the
/// name of the variable it came from (for the error of what is wrong with it); `None` when
/// neither is set.
pub fn inline_or_file(
    var: &'static str,
    file_var: &'static str,
) -> Result<Option<(&'static str, String)>, ConfigError> {
    if let Some(value) = optional(var) {
        return Ok(Some((var, value)));
    }
    let Some(path) = optional(file_var) else {
        return Ok(None);
    };
    let contents = std::fs::read_to_string(&path).map_err(|e| ConfigError {
        var: file_var,
        problem: format!("cannot be read ({e}): {path:?}"),
    })?;
    Ok(Some((file_var, contents)))
}

/// `var` parsed as a `T`, or `default` when it is unset.
pub fn parsed_or<T>(var: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match optional(var) {
        None => Ok(default),
        Some(raw) => parse(var, &raw),
    }
}

/// `raw`, the value of `var`, parsed as a `T`.
pub fn parse<T>(var: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    raw.trim().parse().map_err(|e| ConfigError {
        var,
        problem: format!("is malformed ({e}): {:?}", raw.trim()),
    })
}

/// Secret is a credential read from the environment. Its Debug and Display show no part of it,
/// and comparing it with a candidate takes the same time wherever they differ.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a required secret; `min_len` rejects obviously weak values at start-up.
    pub fn required(var: &'static str, min_len: usize) -> Result<Secret, ConfigError> {
        let value = required(var)?;
        if value.len() < min_len {
            return Err(ConfigError {
                var,
                problem: format!("is too short (at least {min_len} characters)"),
            });
        }
        Ok(Secret(value))
    }

    /// The credential itself, for the one place that must send or sign with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in constant time for candidates of the same length.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn a_secret_matches_only_itself() {
        let s = Secret::new("abc123");
        assert!(s.matches(b"abc123"));
        assert!(!s.matches(b"abc124"));
        assert!(!s.matches(b"abc12"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn a_malformed_value_names_the_variable() {
        let err = parse::<u16>("PORT", "eighty").unwrap_err();
        assert_eq!(err.var, "PORT");
        assert!(
            err.to_string().starts_with("configuration error: PORT is malformed"),
            "{err}"
        );
    }
}
