//! A small HS256 JWT signer/verifier, independent of the code under test.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` with HS256 (`{"typ":"JWT","alg":"HS256"}`).
pub(crate) fn sign_hs256(claims: &Value, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "HS256"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies an HS256 token's header and signature; returns its claims.
pub(crate) fn verify_hs256(token: &str, key: &[u8]) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, sig] = parts[..] else {
        return Err(format!("not three parts: {token:?}"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|e| format!("base64url: {e}"))
    };
    let header: Value =
        serde_json::from_slice(&decode(header)?).map_err(|e| format!("header JSON: {e}"))?;
    if header["alg"] != "HS256" {
        return Err(format!("alg is not HS256: {header}"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&decode(sig)?)
        .map_err(|_| "signature does not verify".to_string())?;
    serde_json::from_slice(&decode(payload)?).map_err(|e| format!("claims JSON: {e}"))
}

#[test]
fn jwt_helper_round_trips() {
    let token = sign_hs256(&json!({"iss": "a", "exp": 1}), b"k");
    assert_eq!(
        verify_hs256(&token, b"k"),
        Ok(json!({"iss": "a", "exp": 1}))
    );
    assert!(verify_hs256(&token, b"other").is_err());
}
