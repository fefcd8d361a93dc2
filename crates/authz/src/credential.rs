//! Where the credential is read from, and its hash (the cache key and the revocation handle;
//! the credential itself is never logged or stored).

use bus::cluster_state::credential_hash as hash;
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

/// One credential the request presented: the index of its source in the configured list and
/// its value (percent-decoded for query parameters; possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// Index into the configured sources.
    pub source: usize,
    /// The value as the gateway will read it.
    pub value: String,
}

/// Every credential the request presented, in every configured source, in source order: each
/// occurrence of a query parameter (names compared after percent-decoding, so `api%6Bey=` is
/// `apikey=`) and each copy of a header. Empty values are listed too (they are part of what
/// the gateway saw) but never name a credential.
pub fn presented(
    sources: &[Source],
    query: &str,
    headers: &[proto::v1::AuthzHeader],
) -> Vec<Presented> {
    let mut out = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        match source {
            Source::Query(name) => {
                for (k, v) in query_pairs(query) {
                    if percent_decode(k) == *name {
                        out.push(Presented {
                            source: index,
                            value: percent_decode(v),
                        });
                    }
                }
            }
            Source::Header(name) => {
                for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
                    out.push(Presented {
                        source: index,
                        value: h.value.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The distinct hashes of the non-empty credentials in `presented`, in order (the first is
/// the connection's key).
pub fn hashes(presented: &[Presented]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in presented.iter().filter(|p| !p.value.is_empty()) {
        let h = hash(&p.value);
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// `query` without the parameters named by query credential sources: what the gateway
/// decided on besides the credentials themselves.
pub fn query_without_credentials(sources: &[Source], query: &str) -> String {
    let is_credential = |k: &str| {
        let k = percent_decode(k);
        sources
            .iter()
            .any(|s| matches!(s, Source::Query(n) if *n == k))
    };
    let mut out = String::with_capacity(query.len());
    for pair in query.split('&') {
        let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
        if is_credential(k) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    out
}

/// The decision cache key: SHA-256 over the route, method, path, query without credential
/// parameters and every credential presented (source and value), each length-prefixed so no
/// two different requests share a key. A decision is reused only for exactly what the gateway
/// decided on (docs/protocol.md, "Auth sidecar").
pub fn decision_key(
    sources: &[Source],
    req: &proto::v1::CheckRequest,
    presented: &[Presented],
) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(req.route_id.as_bytes());
    field(req.method.as_bytes());
    field(req.path.as_bytes());
    field(query_without_credentials(sources, &req.query).as_bytes());
    for p in presented {
        field(&(p.source as u64).to_be_bytes());
        field(p.value.as_bytes());
    }
    h.finalize().into()
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Form-style decoding of a query value: `+` is a space, a `%` not followed by two hex digits
/// stays as it is, and bytes that are not UTF-8 are replaced.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
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

    fn first(s: &[Source], query: &str, headers: &[proto::v1::AuthzHeader]) -> Option<String> {
        presented(s, query, headers)
            .into_iter()
            .find(|p| !p.value.is_empty())
            .map(|p| p.value)
    }

    #[test]
    fn finds_credentials_in_order() {
        let s = default_sources();
        assert_eq!(first(&s, "a=1&apikey=k%201", &[]), Some("k 1".into()));
        let headers = [h("X-API-KEY", "hk"), h("Authorization", "Bearer t")];
        assert_eq!(first(&s, "", &headers), Some("hk".into()));
        assert_eq!(first(&s, "apikey=", &headers[1..]), Some("Bearer t".into()));
        assert!(first(&s, "x=1", &[]).is_none());
    }

    #[test]
    fn every_presented_credential_is_listed_and_hashed() {
        let s = default_sources();
        let headers = [h("X-Api-Key", "good"), h("x-api-key", "third")];
        // An encoded parameter name is the same parameter to the gateway.
        let p = presented(&s, "api%6Bey=alias&x=1&apikey=", &headers);
        let values: Vec<(usize, &str)> = p.iter().map(|p| (p.source, p.value.as_str())).collect();
        assert_eq!(values, [(0, "alias"), (0, ""), (1, "good"), (1, "third")]);
        assert_eq!(hashes(&p), vec![hash("alias"), hash("good"), hash("third")]);
    }

    fn req(method: &str, path: &str, query: &str) -> proto::v1::CheckRequest {
        proto::v1::CheckRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            route_id: "r".into(),
            ..Default::default()
        }
    }

    #[test]
    fn decision_key_covers_what_the_gateway_decided_on() {
        let s = default_sources();
        let key = |r: &proto::v1::CheckRequest, headers: &[proto::v1::AuthzHeader]| {
            decision_key(&s, r, &presented(&s, &r.query, headers))
        };
        let base = key(&req("GET", "/a", "apikey=k&x=1"), &[]);
        assert_eq!(base, key(&req("GET", "/a", "apikey=k&x=1"), &[]));
        // The credential parameter's position does not matter, the rest of the query does.
        assert_eq!(base, key(&req("GET", "/a", "x=1&apikey=k"), &[]));
        assert_ne!(base, key(&req("GET", "/a", "apikey=k&x=2"), &[]));
        assert_ne!(base, key(&req("GET", "/b", "apikey=k&x=1"), &[]));
        assert_ne!(base, key(&req("POST", "/a", "apikey=k&x=1"), &[]));
        assert_ne!(base, key(&req("GET", "/a", "apikey=j&x=1"), &[]));
        // A second credential in another source is a different request.
        assert_ne!(
            base,
            key(&req("GET", "/a", "apikey=k&x=1"), &[h("X-Api-Key", "good")])
        );
        // The same value in another source is too.
        assert_ne!(key(&req("GET", "/a", "x=1"), &[h("X-Api-Key", "k")]), base);
        // Field boundaries cannot be shifted.
        assert_ne!(
            key(&req("GET", "/ax", "y"), &[]),
            key(&req("GET", "/a", "xy"), &[])
        );
        assert_eq!(query_without_credentials(&s, "a=1&apikey=k&b"), "a=1&b");
        assert_eq!(query_without_credentials(&s, "api%6bey=k"), "");
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
