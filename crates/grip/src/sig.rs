//! `Grip-Sig`: HS256 JWTs with `iss` and `exp` claims, as Pushpin signs them and GRIP
//! libraries verify them. Also used to verify publish tokens (`--publish-key`).

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
    pub fn parse(text: &str) -> Result<SigKey, SigError> {
        let _ = text;
        todo!()
    }

    /// Key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Signs `{"iss": iss, "exp": now_unix + ttl_secs}` with HS256 (`{"typ":"JWT","alg":"HS256"}`).
pub fn sign(iss: &str, key: &SigKey, now_unix: u64, ttl_secs: u64) -> String {
    let _ = (iss, key, now_unix, ttl_secs);
    todo!()
}

/// Verifies an HS256 token: signature, `exp` > `now_unix`, and `iss` when `expected_iss` is set.
/// Returns the `iss` claim (empty when absent).
pub fn verify(
    token: &str,
    key: &SigKey,
    expected_iss: Option<&str>,
    now_unix: u64,
) -> Result<String, SigError> {
    let _ = (token, key, expected_iss, now_unix);
    todo!()
}
