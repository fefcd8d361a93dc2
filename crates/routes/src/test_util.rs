//! Helpers shared by the crate's unit tests: parsing a table that must (or must not) parse, and
//! building requests and target addresses.

use crate::*;

pub(crate) fn parse(text: &str) -> RouteTable {
    match RouteTable::parse(text) {
        Ok(t) => t,
        Err(e) => panic!("parse failed: {e}\n{text}"),
    }
}

pub(crate) fn parse_err(text: &str) -> RoutesError {
    match RouteTable::parse(text) {
        Ok(t) => panic!("expected an error for {text:?}, got {t:?}"),
        Err(e) => e,
    }
}

#[track_caller]
pub(crate) fn assert_err(text: &str, line: usize, needles: &[&str]) {
    let e = parse_err(text);
    assert_eq!(e.line, line, "line of {text:?}: {e}");
    for n in needles {
        assert!(
            e.reason.contains(n),
            "{text:?}: reason {:?} lacks {n:?}",
            e.reason
        );
    }
}

pub(crate) fn req<'a>(host: &'a str, path: &'a str, ws: bool, tls: bool) -> RouteRequest<'a> {
    RouteRequest {
        host,
        path,
        ws,
        tls,
    }
}

/// Resolves a plain-HTTP, non-TLS request and returns the route's line.
pub(crate) fn line_for(t: &RouteTable, host: &str, path: &str) -> Option<usize> {
    t.resolve(&req(host, path, false, false)).map(|r| r.line)
}

pub(crate) fn hp(host: &str, port: u16) -> TargetAddr {
    TargetAddr::Host {
        host: host.to_string(),
        port,
    }
}
