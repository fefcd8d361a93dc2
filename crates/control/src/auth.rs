//! Publish authentication: a static bearer token, or a JWT signed with a shared key (the GRIP
//! libraries' `GRIP_URL=...?iss=...&key=...` convention).

use grip::sig::SigKey;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Who may publish.
#[derive(Clone)]
pub enum PublishAuth {
    /// Anyone who can reach the listener (keep it on loopback).
    Open,
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// `Authorization: Bearer <HS256 JWT signed with the key, exp in the future>`, and with
    /// that `iss` claim when one is configured (the `iss` of the publisher's `GRIP_URL`).
    Key(SigKey, Option<String>),
}

impl std::fmt::Debug for PublishAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            PublishAuth::Open => "Open",
            PublishAuth::Token(_) => "Token(<redacted>)",
            PublishAuth::Key(..) => "Key(<redacted>)",
        })
    }
}

impl PublishAuth {
    /// True when `authorization` (the header value, if any) is acceptable.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let bearer = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        match self {
            PublishAuth::Open => true,
            PublishAuth::Token(token) => {
                bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(token.as_bytes())))
            }
            PublishAuth::Key(key, iss) => bearer.is_some_and(|b| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                grip::sig::verify(b, key, iss.as_deref(), now).is_ok()
            }),
        }
    }

    /// True unless the API is open.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, PublishAuth::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_key() {
        let t = PublishAuth::Token("s3cret".into());
        assert!(t.allows(Some(b"Bearer s3cret")));
        assert!(t.allows(Some(b"bearer s3cret")));
        assert!(!t.allows(Some(b"Bearer s3cres")));
        assert!(!t.allows(Some(b"Basic s3cret")));
        assert!(!t.allows(None));
        let key = SigKey::parse("k").expect("key");
        let k = PublishAuth::Key(key.clone(), None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let good = format!("Bearer {}", grip::sig::sign("me", &key, now, 600));
        assert!(k.allows(Some(good.as_bytes())));
        let expired = format!("Bearer {}", grip::sig::sign("me", &key, now - 700, 600));
        assert!(!k.allows(Some(expired.as_bytes())));
        let other = SigKey::parse("other").expect("key");
        let wrong = format!("Bearer {}", grip::sig::sign("me", &other, now, 600));
        assert!(!k.allows(Some(wrong.as_bytes())));
        assert!(PublishAuth::Open.allows(None));
        // With an issuer configured, the token's `iss` must match it.
        let with_iss = PublishAuth::Key(key.clone(), Some("me".into()));
        assert!(with_iss.allows(Some(good.as_bytes())));
        let stranger = format!("Bearer {}", grip::sig::sign("stranger", &key, now, 600));
        assert!(
            k.allows(Some(stranger.as_bytes())),
            "no iss configured: any iss"
        );
        assert!(!with_iss.allows(Some(stranger.as_bytes())));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
