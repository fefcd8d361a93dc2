//! `Grip-Sig`: HS256 JWTs with `iss` and `exp` claims, as Pushpin signs them and GRIP
//! libraries verify them. Also used to verify publish tokens (`--publish-key`).
//!
//! Hand-rolled HS256 only (no asymmetric keys): header `{"typ":"JWT","alg":"HS256"}`, base64url
//! without padding, MAC compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lifetime Pushpin gives the `Grip-Sig` tokens it signs (`exp = now + 3600`).
pub const DEFAULT_SIG_TTL_SECS: u64 = 3600;

/// Pushpin's default signing key (`sig_key=changeme` in its stock `pushpin.conf`). GRIP
/// libraries' "is this request proxied?" checks accept it out of the box, so an edge started
/// without `--sig-key` signs with it, as a stock Pushpin does.
pub const PUSHPIN_DEFAULT_KEY: &str = "changeme";

/// The fixed JOSE header of every token we sign.
const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

/// base64url that tolerates `=` padding on input (some encoders add it).
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A signing/verification key: a literal string or `base64:<data>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigKey(Vec<u8>);

impl std::fmt::Debug for SigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("SigKey(<redacted>)")
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// Not three base64url parts, or the header/claims are not JSON.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not HS256.
    #[error("unsupported algorithm")]
    Algorithm,
    /// The signature does not verify with the key.
    #[error("bad signature")]
    Signature,
    /// `exp` is missing or not in the future.
    #[error("token expired")]
    Expired,
    /// `iss` differs from the expected issuer.
    #[error("wrong issuer")]
    Issuer,
    /// A `base64:` key that does not decode.
    #[error("key is not valid base64")]
    BadKey,
}

impl SigKey {
    /// Parses a key as given on the command line or in a route: `base64:<data>` or literal.
    ///
    /// `base64:` data is standard base64 (padding optional). An empty key (literal or decoded)
    /// is rejected with [`SigError::BadKey`]: signing with it would be meaningless.
    pub fn parse(text: &str) -> Result<SigKey, SigError> {
        let bytes = match text.strip_prefix("base64:") {
            Some(b64) => crate::jsonutil::decode_base64(b64).ok_or(SigError::BadKey)?,
            None => text.as_bytes().to_vec(),
        };
        if bytes.is_empty() {
            return Err(SigError::BadKey);
        }
        Ok(SigKey(bytes))
    }

    /// Pushpin's default key, [`PUSHPIN_DEFAULT_KEY`].
    pub fn pushpin_default() -> SigKey {
        SigKey(PUSHPIN_DEFAULT_KEY.as_bytes().to_vec())
    }

    /// True for Pushpin's well-known default key (anyone can forge a `Grip-Sig` with it).
    pub fn is_pushpin_default(&self) -> bool {
        self.0 == PUSHPIN_DEFAULT_KEY.as_bytes()
    }

    /// Key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this never fails; the fallback is unreachable but
        // keeps the code free of `unwrap`.
        HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()))
    }
}

/// Signs `{"iss": iss, "exp": now_unix + ttl_secs}` with HS256 (`{"typ":"JWT","alg":"HS256"}`).
pub fn sign(iss: &str, key: &SigKey, now_unix: u64, ttl_secs: u64) -> String {
    let exp = now_unix.saturating_add(ttl_secs);
    let iss_json = serde_json::Value::String(iss.to_owned()).to_string();
    let claims = format!(r#"{{"iss":{iss_json},"exp":{exp}}}"#);
    let mut token = String::with_capacity(128 + claims.len() * 4 / 3);
    URL_SAFE_NO_PAD.encode_string(HEADER_JSON, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let mut mac = key.mac();
    mac.update(token.as_bytes());
    let sig = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    token
}

/// Verifies an HS256 token: signature, `exp` > `now_unix`, and `iss` when `expected_iss` is set.
/// Returns the `iss` claim (empty when absent).
///
/// Checks in order: shape and JSON ([`SigError::Malformed`]), `alg` ([`SigError::Algorithm`]),
/// signature, `exp` (a number; fractional values are truncated), `iss` (must be a string when
/// present).
pub fn verify(
    token: &str,
    key: &SigKey,
    expected_iss: Option<&str>,
    now_unix: u64,
) -> Result<String, SigError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SigError::Malformed);
    };
    let header: serde_json::Value = decode_json_part(h64)?;
    let claims: serde_json::Value = decode_json_part(c64)?;
    let (Some(header), Some(claims)) = (header.as_object(), claims.as_object()) else {
        return Err(SigError::Malformed);
    };
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(SigError::Algorithm);
    }
    let sig = B64URL_LENIENT
        .decode(s64)
        .map_err(|_| SigError::Malformed)?;
    let signed_len = h64.len() + 1 + c64.len();
    let mut mac = key.mac();
    mac.update(&token.as_bytes()[..signed_len]);
    mac.verify_slice(&sig).map_err(|_| SigError::Signature)?;

    let exp = match claims.get("exp") {
        Some(serde_json::Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u
            } else if let Some(f) = n.as_f64() {
                if f.is_finite() && f > 0.0 {
                    f as u64
                } else {
                    0
                }
            } else {
                0
            }
        }
        _ => return Err(SigError::Expired),
    };
    if exp <= now_unix {
        return Err(SigError::Expired);
    }
    let iss = match claims.get("iss") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(SigError::Malformed),
    };
    if let Some(expected) = expected_iss
        && iss != expected
    {
        return Err(SigError::Issuer);
    }
    Ok(iss)
}

fn decode_json_part(part: &str) -> Result<serde_json::Value, SigError> {
    let bytes = B64URL_LENIENT
        .decode(part)
        .map_err(|_| SigError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| SigError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn key(s: &str) -> SigKey {
        SigKey::parse(s).expect("key")
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// Builds a token with arbitrary header/claims, signed with `k`.
    fn forge(header: &str, claims: &str, k: &SigKey) -> String {
        let signing = format!("{}.{}", b64(header), b64(claims));
        let mut mac = k.mac();
        mac.update(signing.as_bytes());
        format!(
            "{signing}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn key_parsing() {
        assert_eq!(key("changeme").as_bytes(), b"changeme");
        assert_eq!(key("base64:aGVsbG8=").as_bytes(), b"hello");
        assert_eq!(key("base64:aGVsbG8").as_bytes(), b"hello");
        assert_eq!(SigKey::parse("base64:***"), Err(SigError::BadKey));
        assert_eq!(SigKey::parse("base64:"), Err(SigError::BadKey));
        assert_eq!(SigKey::parse(""), Err(SigError::BadKey));
    }

    #[test]
    fn debug_never_prints_key() {
        let k = key("supersecret");
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("supersecret"));
        assert_eq!(dbg, "SigKey(<redacted>)");
        let e = verify("x", &k, None, NOW).expect_err("err");
        assert!(!format!("{e:?} {e}").contains("supersecret"));
    }

    #[test]
    fn sign_shape() {
        let t = sign("pushpin", &key("changeme"), NOW, 3600);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(parts[0]).expect("b64");
        assert_eq!(header, br#"{"typ":"JWT","alg":"HS256"}"#);
        let claims = URL_SAFE_NO_PAD.decode(parts[1]).expect("b64");
        assert_eq!(
            String::from_utf8(claims).expect("utf8"),
            format!(r#"{{"iss":"pushpin","exp":{}}}"#, NOW + 3600)
        );
        assert!(!t.contains('='));
        assert!(!t.contains('+') && !t.contains('/'));
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256 of the signing input with key "changeme", computed independently
        // (python3: hmac.new(b"changeme", signing_input, hashlib.sha256)).
        let t = sign("pushpin", &key("changeme"), 1_000_000_000, 0);
        assert_eq!(
            t,
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxMDAwMDAwMDAwfQ.\
             3u74W1YW8_nHdJnSrOb2n0fradZFBxkvpQE70YmP2B8"
        );
    }

    #[test]
    fn round_trip() {
        let k = key("changeme");
        let t = sign("pushpin", &k, NOW, 3600);
        assert_eq!(verify(&t, &k, None, NOW), Ok("pushpin".to_owned()));
        assert_eq!(
            verify(&t, &k, Some("pushpin"), NOW + 3599),
            Ok("pushpin".into())
        );
        // Base64 and literal forms of the same bytes are the same key.
        let k2 = key("base64:Y2hhbmdlbWU=");
        assert_eq!(verify(&t, &k2, None, NOW), Ok("pushpin".into()));
        // Issuer with characters that need JSON escaping.
        let t = sign("a\"b\\c", &k, NOW, 10);
        assert_eq!(verify(&t, &k, Some("a\"b\\c"), NOW), Ok("a\"b\\c".into()));
    }

    #[test]
    fn expired() {
        let k = key("changeme");
        let t = sign("pushpin", &k, NOW, 3600);
        assert_eq!(verify(&t, &k, None, NOW + 3600), Err(SigError::Expired));
        assert_eq!(verify(&t, &k, None, NOW + 99_999), Err(SigError::Expired));
        let no_exp = forge(r#"{"alg":"HS256"}"#, r#"{"iss":"x"}"#, &k);
        assert_eq!(verify(&no_exp, &k, None, NOW), Err(SigError::Expired));
        let str_exp = forge(r#"{"alg":"HS256"}"#, r#"{"exp":"9999999999"}"#, &k);
        assert_eq!(verify(&str_exp, &k, None, NOW), Err(SigError::Expired));
    }

    #[test]
    fn wrong_key_and_tampering() {
        let k = key("changeme");
        let t = sign("pushpin", &k, NOW, 3600);
        assert_eq!(
            verify(&t, &key("other"), None, NOW),
            Err(SigError::Signature)
        );
        // Swap in different claims, keep the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let evil = format!(
            "{}.{}.{}",
            parts[0],
            b64(&format!(r#"{{"iss":"evil","exp":{}}}"#, NOW + 3600)),
            parts[2]
        );
        assert_eq!(verify(&evil, &k, None, NOW), Err(SigError::Signature));
        // Well-formed but short signature (a MAC prefix).
        let full = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        let short = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(&full[..16])
        );
        assert_eq!(verify(&short, &k, None, NOW), Err(SigError::Signature));
        // Empty signature.
        let empty = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(verify(&empty, &k, None, NOW), Err(SigError::Signature));
    }

    #[test]
    fn wrong_issuer() {
        let k = key("changeme");
        let t = sign("pushpin", &k, NOW, 3600);
        assert_eq!(verify(&t, &k, Some("other"), NOW), Err(SigError::Issuer));
        let no_iss = forge(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"exp":{}}}"#, NOW + 5),
            &k,
        );
        assert_eq!(verify(&no_iss, &k, None, NOW), Ok(String::new()));
        assert_eq!(
            verify(&no_iss, &k, Some("pushpin"), NOW),
            Err(SigError::Issuer)
        );
    }

    #[test]
    fn algorithm_checks() {
        let k = key("changeme");
        let claims = format!(r#"{{"iss":"x","exp":{}}}"#, NOW + 60);
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert_eq!(verify(&none, &k, None, NOW), Err(SigError::Algorithm));
        let hs512 = forge(r#"{"alg":"HS512"}"#, &claims, &k);
        assert_eq!(verify(&hs512, &k, None, NOW), Err(SigError::Algorithm));
        let missing = forge(r#"{"typ":"JWT"}"#, &claims, &k);
        assert_eq!(verify(&missing, &k, None, NOW), Err(SigError::Algorithm));
        // A foreign header layout with HS256 is fine.
        let ok = forge(r#"{"alg":"HS256","typ":"JWT","kid":"1"}"#, &claims, &k);
        assert_eq!(verify(&ok, &k, Some("x"), NOW), Ok("x".into()));
    }

    #[test]
    fn malformed() {
        let k = key("changeme");
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30",
            "bm90anNvbg.e30.",
            "W10.W10.",
        ] {
            assert_eq!(verify(t, &k, None, NOW), Err(SigError::Malformed), "{t:?}");
        }
        let bad_sig_b64 = format!(
            "{}.{}.***",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"exp":9999999999}"#)
        );
        assert_eq!(
            verify(&bad_sig_b64, &k, None, NOW),
            Err(SigError::Malformed)
        );
        let iss_num = forge(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"iss":5,"exp":{}}}"#, NOW + 5),
            &k,
        );
        assert_eq!(verify(&iss_num, &k, None, NOW), Err(SigError::Malformed));
    }
}
