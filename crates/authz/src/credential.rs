//! Where the credential is read from, and its hash (the cache key and the revocation handle;
//! the credential itself is never logged or stored).

use sha2::{Digest, Sha256};

/// One place a credential may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A query parameter (`query:apikey`).
    Query(String),
    /// A request header (`header:X-Api-Key`), compared case-insensitively.
    Header(String),
}

/// The default sources: `?apikey=`, `X-Api-Key`, `Authorization`.
pub fn default_sources() -> Vec<Source> {
    vec![
        Source::Query("apikey".into()),
        Source::Header("x-api-key".into()),
        Source::Header("authorization".into()),
    ]
}

/// Parses `query:NAME,header:NAME,...`.
pub fn parse_sources(text: &str) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once(':') {
            Some(("query", name)) if !name.is_empty() => out.push(Source::Query(name.to_owned())),
            Some(("header", name)) if !name.is_empty() => {
                out.push(Source::Header(name.to_ascii_lowercase()));
            }
            _ => return Err(format!("'{part}' is not query:NAME or header:NAME")),
        }
    }
    if out.is_empty() {
        return Err("no credential source".into());
    }
    Ok(out)
}

/// The first credential found in the request, with the source it came from.
pub fn find<'a>(
    sources: &'a [Source],
    query: &str,
    headers: &'a [proto::v1::AuthzHeader],
) -> Option<(String, &'a Source)> {
    for source in sources {
        match source {
            Source::Query(name) => {
                for pair in query.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if k == name && !v.is_empty() {
                        return Some((percent_decode(v), source));
                    }
                }
            }
            Source::Header(name) => {
                if let Some(h) = headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name) && !h.value.is_empty())
                {
                    return Some((h.value.clone(), source));
                }
            }
        }
    }
    None
}

/// Hex SHA-256 of a credential.
pub fn hash(credential: &str) -> String {
    let digest = Sha256::digest(credential.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> proto::v1::AuthzHeader {
        proto::v1::AuthzHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn finds_credentials_in_order() {
        let s = default_sources();
        assert_eq!(
            find(&s, "a=1&apikey=k%201", &[]).map(|c| c.0),
            Some("k 1".into())
        );
        let headers = [h("X-API-KEY", "hk"), h("Authorization", "Bearer t")];
        assert_eq!(find(&s, "", &headers).map(|c| c.0), Some("hk".into()));
        assert_eq!(
            find(&s, "apikey=", &headers[1..]).map(|c| c.0),
            Some("Bearer t".into())
        );
        assert!(find(&s, "x=1", &[]).is_none());
    }

    #[test]
    fn parses_sources_and_hashes() {
        assert_eq!(
            parse_sources("query:key, header:X-Token").expect("ok"),
            vec![
                Source::Query("key".into()),
                Source::Header("x-token".into())
            ]
        );
        assert!(parse_sources("cookie:x").is_err());
        assert!(parse_sources("").is_err());
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
