//! Verification of the `Stripe-Signature` header of webhook requests.
//!
//! Stripe signs `"{t}.{raw body}"` with HMAC-SHA256 under the endpoint's secret and sends
//! `t=<unix time>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`. Several `v1` values appear while a secret is
//! being rolled, and we may hold several secrets for the same reason: any pair that matches
//! verifies. `v0` (a test scheme) is ignored. Comparison is constant time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use jobs::config::Secret;

/// How far the signed timestamp may be from our clock, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// SignatureError is why a signature was refused; its text is safe to show the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("the signed timestamp is more than {TOLERANCE_SECS} s from now")]
    OutsideTolerance,
    #[error("no v1 signature matches the payload under any configured secret")]
    Mismatch,
}

/// Checks `header` against `payload` under any of `secrets`, at unix time `now`.
pub fn verify(header: &str, payload: &[u8], secrets: &[Secret], now: i64) -> Result<(), SignatureError> {
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("every element must be key=value"));
        };
        match key {
            "t" if timestamp.is_some() => return Err(SignatureError::Malformed("more than one timestamp")),
            "t" => timestamp = Some(value),
            // A value that is not hex cannot match; skipping it lets another v1 verify.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t: i64 = timestamp
        .ok_or(SignatureError::Malformed("no timestamp"))?
        .parse()
        .map_err(|_| SignatureError::Malformed("the timestamp is not a number"))?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    if now.abs_diff(t) > TOLERANCE_SECS as u64 {
        return Err(SignatureError::OutsideTolerance);
    }
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        if signatures.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_800_000;

    fn sign(payload: &[u8], secret: &str, t: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::new(*s)).collect()
    }

    #[test]
    fn a_vector_signed_outside_this_code_verifies() {
        // printf '%s' '1763800000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test
        let header = "t=1763800000,v1=673ba2fb28a0074720006a5a633a2c987ec0cf4908b1aadbe8263820cd58c21a";
        assert_eq!(
            verify(header, br#"{"id":"evt_1"}"#, &secrets(&["whsec_test"]), NOW),
            Ok(())
        );
        assert_eq!(
            verify(header, br#"{"id":"evt_1"} "#, &secrets(&["whsec_test"]), NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_v1_under_any_secret_verifies_and_v0_is_ignored() {
        let body = br#"{"id":"evt_2"}"#;
        let good = sign(body, "whsec_new", NOW);
        let header = format!("t={NOW},v0={good},v1={},v1={good}", "ab".repeat(32));
        assert_eq!(
            verify(&header, body, &secrets(&["whsec_old", "whsec_new"]), NOW),
            Ok(())
        );
        let only_v0 = format!("t={NOW},v0={good}");
        assert_eq!(
            verify(&only_v0, body, &secrets(&["whsec_new"]), NOW),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn tampering_a_wrong_secret_and_the_clock_are_refused() {
        let body = br#"{"id":"evt_3"}"#;
        let header = format!("t={NOW},v1={}", sign(body, "whsec_a", NOW));
        let key = secrets(&["whsec_a"]);
        assert_eq!(
            verify(&header, br#"{"id":"evt_4"}"#, &key, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, &secrets(&["whsec_b"]), NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(&header, body, &key, NOW + 300), Ok(()));
        assert_eq!(verify(&header, body, &key, NOW - 300), Ok(()));
        assert_eq!(
            verify(&header, body, &key, NOW + 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(&header, body, &key, NOW - 301),
            Err(SignatureError::OutsideTolerance)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let key = secrets(&["whsec_a"]);
        for header in ["", "garbage", "v1=abcd", "t=abc,v1=abcd", "t=1,t=2,v1=abcd"] {
            assert!(
                matches!(verify(header, b"{}", &key, NOW), Err(SignatureError::Malformed(_))),
                "{header:?}"
            );
        }
    }
}
