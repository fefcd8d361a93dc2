//! Request path normalisation before routing (docs/protocol.md, "Limits and bad input").
//!
//! Routes must match the path the origin will act on, or a route's conditions (`authz`,
//! `path_beg`) can be stepped around by another spelling of the same path: `/%70rivate/x`,
//! `/./private/x` and `/public/../private/x` all mean `/private/x` to a typical origin. So the
//! edge routes on, and sends the origin, one canonical spelling:
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded and the hex of
//!   every other escape is upper-cased (RFC 3986 §6.2.2.1–2);
//! - runs of `/` are merged (Envoy's `merge_slashes`): many origins treat `//private` as
//!   `/private`;
//! - dot segments are removed (RFC 3986 §5.2.4), including ones spelt `%2e`.
//!
//! Refused (the edge answers 400), as Envoy's `path_with_escaped_slashes_action:
//! REJECT_REQUEST` and nginx do: an encoded `/` or `\` (`%2F`, `%5C`, which origins disagree
//! about), a raw `\` (some origins take it for `/`), a malformed escape, and a path that climbs
//! above the root (RFC 3986 would silently drop the extra `..`; an origin serving files might
//! not).
//!
//! The percent-encoding crate decodes every escape or none; this needs to decode only some
//! (decoding `%3B` into `;` would change the path's meaning), hence the small decoder here.

/// Why a path is refused (the client gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` or `%5C`: an encoded path separator.
    #[error("encoded '/' or '\\' in path")]
    EncodedSeparator,
    /// A raw `\`.
    #[error("'\\' in path")]
    Backslash,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in path")]
    BadEscape,
    /// More `..` segments than there are segments above them.
    #[error("path climbs above the root")]
    AboveRoot,
    /// Not an absolute path (and not `*`).
    #[error("path does not start with '/'")]
    NotAbsolute,
}

/// The canonical spelling of a request path (no query), or why it is refused.
///
/// `*` (the `OPTIONS *` form) is returned as is. The result always starts with `/`, keeps a
/// trailing `/` (a final `.` or `..` segment leaves one, as in RFC 3986), and normalising it
/// again changes nothing.
pub fn normalize(path: &str) -> Result<String, PathError> {
    if path == "*" {
        return Ok(path.to_owned());
    }
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Pass 1: decode unreserved escapes; refuse separators in disguise.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    v if is_unreserved(v) => decoded.push(char::from(v)),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.push('%');
                        decoded.push(char::from(HEX[usize::from(v >> 4)]));
                        decoded.push(char::from(HEX[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy the run up to the next byte of interest whole, so multi-byte UTF-8
                // (which hyper does not let through, but a caller might) stays intact.
                let end = bytes[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\')
                    .map_or(bytes.len(), |p| i + p);
                decoded.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    // Pass 2: segments, with empty ones (from `//`) merged away and dot segments resolved.
    let mut out: Vec<&str> = Vec::new();
    let mut segments = decoded[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        result.push('/');
    }
    Ok(result)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(p: &str) -> String {
        normalize(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn spellings_of_the_same_path_agree() {
        for p in [
            "/private/x",
            "/%70rivate/x",
            "/%70%72%69%76%61%74%65/x",
            "/%2e/private/x",
            "/%2E/private/x",
            "/./private/x",
            "/public/../private/x",
            "/public/%2e%2e/private/x",
            "/public/.%2e/private/x",
            "//private/x",
            "/private//x",
            "/private/./x",
            "/a/b/../../private/x",
        ] {
            assert_eq!(ok(p), "/private/x", "{p}");
        }
    }

    #[test]
    fn separators_in_disguise_and_bad_escapes_are_refused() {
        assert_eq!(normalize("/private%2Fx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/private%2fx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/private%5Cx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/private%5cx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/private\\x"), Err(PathError::Backslash));
        assert_eq!(normalize("/a%"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize("private"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn other_escapes_are_kept_and_upper_cased() {
        assert_eq!(ok("/a%3bb"), "/a%3Bb");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/%25"), "/%25", "no double decoding");
        assert_eq!(ok("/%2570rivate"), "/%2570rivate");
        assert_eq!(ok("/a%7e"), "/a~");
        assert_eq!(ok("/a;b=c/d"), "/a;b=c/d");
    }

    #[test]
    fn trailing_slashes_and_root() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/"), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a"), "/a");
        assert_eq!(ok("/a..b/.c"), "/a..b/.c");
        assert_eq!(ok("*"), "*");
    }

    proptest! {
        #[test]
        fn idempotent_and_canonical(segs in proptest::collection::vec(
            prop_oneof![
                Just("".to_owned()), Just(".".to_owned()), Just("..".to_owned()),
                Just("%2e".to_owned()), Just("%2E%2e".to_owned()), Just("%70".to_owned()),
                Just("%3b".to_owned()), "[a-z;=~%.-]{0,6}",
            ], 0..8), slash in any::<bool>()) {
            let mut p = format!("/{}", segs.join("/"));
            if slash { p.push('/'); }
            if let Ok(n) = normalize(&p) {
                prop_assert_eq!(normalize(&n), Ok(n.clone()), "not idempotent");
                prop_assert!(n.starts_with('/'));
                prop_assert!(!n.contains("//"));
                for seg in n.split('/') {
                    prop_assert!(seg != "." && seg != "..", "dot segment left in {}", n);
                }
                // No escape of an unreserved byte survives, and every escape is upper-case.
                let b = n.as_bytes();
                for (i, &c) in b.iter().enumerate() {
                    if c == b'%' {
                        let hi = hex_value(b[i + 1]).expect("hex");
                        let lo = hex_value(b[i + 2]).expect("hex");
                        prop_assert!(!is_unreserved(hi << 4 | lo));
                        prop_assert!(!b[i + 1].is_ascii_lowercase() && !b[i + 2].is_ascii_lowercase());
                    }
                }
            }
        }

        /// Any printable input: no panic, and what comes out is itself canonical.
        #[test]
        fn any_printable_path(p in "/[ -~]{0,40}") {
            if let Ok(n) = normalize(&p) {
                prop_assert_eq!(normalize(&n), Ok(n.clone()));
            }
        }
    }
}
