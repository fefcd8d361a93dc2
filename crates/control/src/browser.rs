//! Browser defences of the HTTP control API (docs/protocol.md, "Publishing").
//!
//! A browser on any web page can send requests to a loopback control API (a cross-site form
//! POST needs no CORS permission), and DNS rebinding lets a page read its answers. So:
//! - a request a browser marks as cross-site — an `Origin` that is not the request's own host,
//!   or `Sec-Fetch-Site: cross-site` — is refused, authenticated or not;
//! - while the API is unauthenticated on a loopback address, only requests whose `Host` is a
//!   loopback name or address are answered: a rebinding page's `Host` is its own domain.
//!
//! Non-browser publishers (the GRIP libraries, curl, gRPC) send neither header, or a loopback
//! `Host`, and are not affected.

use http::{HeaderMap, Uri, header};
use std::net::IpAddr;

/// Why a request is refused (answered 403 through [`crate::error::ApiError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A browser's cross-site request.
    CrossSite,
    /// A non-loopback `Host` on an unauthenticated loopback API (DNS rebinding).
    Host,
}

/// Checks one request. `loopback_only` is true while the API is unauthenticated on a loopback
/// listener.
pub(crate) fn check(headers: &HeaderMap, uri: &Uri, loopback_only: bool) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(Refusal::CrossSite);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| same_origin_host(o, host.as_deref()?));
        if same != Some(true) {
            return Err(Refusal::CrossSite);
        }
    }
    if loopback_only && let Some(host) = &host {
        let (name, _) = split_host_port(host);
        if !is_loopback_name(name) {
            return Err(Refusal::Host);
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as the request's
/// `Host` (the scheme is not compared: behind a TLS-terminating proxy the API cannot tell).
/// A port-less `Host` has the origin scheme's default port. `None` when the origin is
/// unusable (`null`, garbage).
fn same_origin_host(origin: &str, host: &str) -> Option<bool> {
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Some(false),
    };
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (o_name, o_port) = split_host_port(authority);
    let (h_name, h_port) = split_host_port(host);
    let port = |p: Option<&str>| -> Option<u16> {
        match p {
            None => Some(default_port),
            Some(p) => p.parse().ok(),
        }
    };
    Some(o_name.eq_ignore_ascii_case(h_name) && port(o_port)? == port(h_port)?)
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, port).
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (s, None),
    }
}

/// `localhost`, a name under `.localhost` (RFC 6761), or a loopback IP.
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    fn run(pairs: &[(&'static str, &'static str)], loopback_only: bool) -> Result<(), Refusal> {
        check(&req(pairs), &Uri::from_static("/publish"), loopback_only)
    }

    #[test]
    fn publishers_without_browser_headers_pass() {
        assert_eq!(run(&[("host", "127.0.0.1:5561")], true), Ok(()));
        assert_eq!(run(&[("host", "localhost:5561")], true), Ok(()));
        assert_eq!(run(&[("host", "[::1]:5561")], true), Ok(()));
        assert_eq!(run(&[("host", "api.localhost")], true), Ok(()));
        assert_eq!(run(&[], true), Ok(()));
        // Authenticated or deliberately insecure: any Host.
        assert_eq!(run(&[("host", "control.internal:5561")], false), Ok(()));
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let host = ("host", "127.0.0.1:5561");
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8080",
            "null",
            "https://127.0.0.1",
            "file://",
        ] {
            let mut h = req(&[host]);
            h.insert("origin", origin.parse().expect("value"));
            assert_eq!(
                check(&h, &Uri::from_static("/"), false),
                Err(Refusal::CrossSite),
                "{origin}"
            );
        }
        assert_eq!(
            run(&[host, ("sec-fetch-site", "cross-site")], false),
            Err(Refusal::CrossSite)
        );
        // The API's own pages (same origin) are fine.
        assert_eq!(
            run(&[host, ("origin", "http://127.0.0.1:5561")], true),
            Ok(())
        );
        assert_eq!(
            run(
                &[("host", "localhost"), ("origin", "http://LOCALHOST:80")],
                true
            ),
            Ok(())
        );
        assert_eq!(
            run(&[host, ("sec-fetch-site", "same-origin")], true),
            Ok(())
        );
    }

    #[test]
    fn dns_rebinding_is_refused_while_unauthenticated_on_loopback() {
        let rebound = [("host", "rebind.evil.example:5561")];
        assert_eq!(run(&rebound, true), Err(Refusal::Host));
        assert_eq!(
            run(&[("host", "127.0.0.1.nip.io")], true),
            Err(Refusal::Host)
        );
        assert_eq!(run(&[("host", "10.0.0.1:5561")], true), Err(Refusal::Host));
        assert_eq!(run(&rebound, false), Ok(()));
    }
}
