//! Per-key limits and credential expiry (docs/protocol.md, "Key limits and usage"): what the gateway's allow answer says about
//! the key (`Gripmesh-Max-Connections`, `Gripmesh-Message-Quota`, `Gripmesh-Expires`), and the
//! `exp` of a Bearer JWT credential (read, not verified: the gateway verified it).
//!
//! Values come from outside: anything unusable (negative, garbage, out of range) is ignored
//! with a log line (never the credential), and never fails the check.

use base64::Engine;

/// `Gripmesh-Max-Connections: N`.
pub const MAX_CONNECTIONS_HEADER: &str = "gripmesh-max-connections";
/// `Gripmesh-Message-Quota: N/PERIOD`, PERIOD one of `1m`, `1h`, `1d`.
pub const MESSAGE_QUOTA_HEADER: &str = "gripmesh-message-quota";
/// `Gripmesh-Expires: <unix seconds>`.
pub const EXPIRES_HEADER: &str = "gripmesh-expires";

/// What the gateway (and the credential itself) say about a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent connections of the key, cluster-wide.
    pub max_connections: Option<u32>,
    /// Messages per period (count, period in seconds).
    pub message_quota: Option<(u32, u32)>,
    /// Unix seconds when the credential expires.
    pub expires_at: Option<u64>,
}

impl Limits {
    /// Reads the limit headers of a gateway answer; unusable values are logged and ignored.
    pub fn from_headers(headers: &[(String, String)]) -> Limits {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        let mut out = Limits::default();
        if let Some(v) = get(MAX_CONNECTIONS_HEADER) {
            match v.parse::<u32>() {
                Ok(n) => out.max_connections = Some(n),
                Err(_) => {
                    tracing::warn!(header = MAX_CONNECTIONS_HEADER, value = %clip(v), "unusable limit from the gateway; ignored")
                }
            }
        }
        if let Some(v) = get(MESSAGE_QUOTA_HEADER) {
            match parse_quota(v) {
                Some(q) => out.message_quota = Some(q),
                None => {
                    tracing::warn!(header = MESSAGE_QUOTA_HEADER, value = %clip(v), "unusable quota from the gateway; ignored")
                }
            }
        }
        if let Some(v) = get(EXPIRES_HEADER) {
            match v.parse::<u64>() {
                Ok(t) if t > 0 => out.expires_at = Some(t),
                _ => {
                    tracing::warn!(header = EXPIRES_HEADER, value = %clip(v), "unusable expiry from the gateway; ignored")
                }
            }
        }
        out
    }

    /// The sooner of two expiries.
    pub fn expire_by(&mut self, at: Option<u64>) {
        self.expires_at = match (self.expires_at, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// `N/PERIOD` with PERIOD `1m`, `1h` or `1d` ⇒ (N, seconds).
pub fn parse_quota(v: &str) -> Option<(u32, u32)> {
    let (n, period) = v.trim().split_once('/')?;
    let n: u32 = n.trim().parse().ok()?;
    let secs = match period.trim() {
        "1m" => 60,
        "1h" => 3600,
        "1d" => 86_400,
        _ => return None,
    };
    Some((n, secs))
}

/// The `exp` claim of a `Bearer <JWT>` credential, read without verifying (the gateway does).
pub fn bearer_jwt_exp(credential: &str) -> Option<u64> {
    let (scheme, token) = credential.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut parts = token.trim().split('.');
    let (_, Some(claims), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    // Bounded: a claims part larger than this is not a credential we read.
    if claims.len() > 8 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = value.get("exp")?;
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| f as u64)
    })
}

/// A value from outside, shortened for a log line.
fn clip(v: &str) -> String {
    v.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_limit_headers_and_ignores_garbage() {
        let l = Limits::from_headers(&h(&[
            ("Gripmesh-Max-Connections", "3"),
            ("Gripmesh-Message-Quota", "100/1m"),
            ("Gripmesh-Expires", "1900000000"),
        ]));
        assert_eq!(
            l,
            Limits {
                max_connections: Some(3),
                message_quota: Some((100, 60)),
                expires_at: Some(1_900_000_000),
            }
        );
        for bad in ["-1", "lots", "", "1.5"] {
            let l = Limits::from_headers(&h(&[
                ("Gripmesh-Max-Connections", bad),
                ("Gripmesh-Message-Quota", bad),
                ("Gripmesh-Expires", bad),
            ]));
            assert_eq!(l, Limits::default(), "{bad}");
        }
        let too_big = Limits::from_headers(&h(&[("Gripmesh-Max-Connections", "99999999999")]));
        assert_eq!(too_big.max_connections, None);
        assert_eq!(parse_quota("5/1d"), Some((5, 86_400)));
        assert_eq!(parse_quota("5/2m"), None);
        assert_eq!(parse_quota("-5/1m"), None);
    }

    #[test]
    fn reads_a_bearer_jwt_exp_without_verifying() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "Bearer {}.{}.sig",
            enc(r#"{"alg":"HS256"}"#),
            enc(r#"{"sub":"a","exp":1900000000}"#)
        );
        assert_eq!(bearer_jwt_exp(&token), Some(1_900_000_000));
        assert_eq!(bearer_jwt_exp("Bearer opaque-token"), None);
        assert_eq!(bearer_jwt_exp("apikey"), None);
        let no_exp = format!("Bearer {}.{}.s", enc("{}"), enc(r#"{"sub":"a"}"#));
        assert_eq!(bearer_jwt_exp(&no_exp), None);
    }

    #[test]
    fn the_sooner_expiry_wins() {
        let mut l = Limits {
            expires_at: Some(10),
            ..Default::default()
        };
        l.expire_by(Some(5));
        assert_eq!(l.expires_at, Some(5));
        l.expire_by(None);
        assert_eq!(l.expires_at, Some(5));
    }
}
