//! Property tests for the routes parser (docs/architecture.md, "Testing ladder", step 2): generated valid
//! route lines parse to what they say, resolve for their own requests, and rewrite paths
//! keeping the query; arbitrary text never panics the parser, the matcher or the rewriter.

use proptest::prelude::*;
use routes::{Proto, RouteRequest, RouteTable, TargetAddr};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One generated route line and what it should parse to.
#[derive(Debug, Clone)]
struct Line {
    host: Option<String>,
    proto: Option<Proto>,
    ssl: Option<bool>,
    path_beg: Option<String>,
    replace_beg: Option<String>,
    path_rem: Option<usize>,
    id: Option<String>,
    prefix: Option<String>,
    targets: Vec<(String, u16, bool, bool, Vec<String>)>,
}

impl Line {
    fn render(&self) -> String {
        let mut cond = self.host.clone().unwrap_or_else(|| "*".into());
        if let Some(p) = self.proto {
            cond.push_str(match p {
                Proto::Http => ",proto=http",
                Proto::Ws => ",proto=ws",
            });
        }
        if let Some(ssl) = self.ssl {
            cond.push_str(if ssl { ",ssl=yes" } else { ",ssl=no" });
        }
        if let Some(p) = &self.path_beg {
            cond.push_str(&format!(",path_beg={p}"));
        }
        if let Some(r) = &self.replace_beg {
            cond.push_str(&format!(",replace_beg={r}"));
        }
        if let Some(n) = self.path_rem {
            cond.push_str(&format!(",path_rem={n}"));
        }
        if let Some(id) = &self.id {
            cond.push_str(&format!(",id={id}"));
        }
        if let Some(prefix) = &self.prefix {
            // Quoted: a prefix may hold characters the lexer treats specially.
            let quoted = prefix.replace('\\', "\\\\").replace('"', "\\\"");
            cond.push_str(&format!(",prefix=\"{quoted}\""));
        }
        let mut out = cond;
        for (host, port, ssl, over_http, subs) in &self.targets {
            out.push(' ');
            out.push_str(&format!("{host}:{port}"));
            if *ssl {
                out.push_str(",ssl");
            }
            if *over_http {
                out.push_str(",over_http");
            }
            for s in subs {
                out.push_str(&format!(",sub={s}"));
            }
        }
        out
    }
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}(\\.[a-z]{1,5}){0,2}"
}

/// A `path_beg` as the parser keeps it: in canonical form (`routes::path::normalize`).
fn path() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9_./~-]{0,12}"
        .prop_filter_map("not a canonical path", |p| routes::path::normalize(&p).ok())
}

fn line() -> impl Strategy<Value = Line> {
    let target = (
        prop_oneof![host_name(), Just("127.0.0.1".to_owned())],
        1u16..=65535,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec("[a-z0-9-]{1,8}", 0..2),
    );
    (
        proptest::option::of(host_name()),
        proptest::option::of(prop_oneof![Just(Proto::Http), Just(Proto::Ws)]),
        proptest::option::of(any::<bool>()),
        proptest::option::of(path()),
        // 0: nothing, 1: replace_beg (needs path_beg), 2: path_rem
        (0u8..3, path(), 0usize..6),
        proptest::option::of("[a-z][a-z0-9_-]{0,8}"),
        proptest::option::of("(?s).{0,10}"),
        prop::collection::vec(target, 1..4),
    )
        .prop_map(
            |(host, proto, ssl, path_beg, (rewrite, replace, rem), id, prefix, targets)| {
                let (replace_beg, path_rem) = match (rewrite, &path_beg) {
                    (1, Some(_)) => (Some(replace), None),
                    (2, _) => (None, Some(rem)),
                    _ => (None, None),
                };
                Line {
                    host,
                    proto,
                    ssl,
                    path_beg,
                    replace_beg,
                    path_rem,
                    id,
                    prefix,
                    targets,
                }
            },
        )
        // Control characters are refused by the lexer even when quoted.
        .prop_filter("no control characters in the prefix", |l| {
            l.prefix
                .as_deref()
                .is_none_or(|p| !p.chars().any(|c| c.is_control() && c != '\t'))
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_route_line_parses_to_what_it_says(l in line()) {
        let text = l.render();
        let table = RouteTable::parse(&format!("# generated\n\n{text}\n"))
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        let routes = table.routes();
        prop_assert_eq!(routes.len(), 1);
        let r = &routes[0];
        prop_assert_eq!(r.line, 3);
        prop_assert_eq!(&r.host, &l.host);
        prop_assert_eq!(r.proto, l.proto);
        prop_assert_eq!(r.ssl, l.ssl);
        prop_assert_eq!(&r.path_beg, &l.path_beg);
        prop_assert_eq!(&r.replace_beg, &l.replace_beg);
        prop_assert_eq!(r.path_rem, l.path_rem);
        prop_assert_eq!(&r.prefix, &l.prefix);
        if let Some(id) = &l.id {
            prop_assert_eq!(&r.id, id);
        }
        prop_assert!(table.by_id(&r.id).is_some());
        prop_assert_eq!(r.targets.len(), l.targets.len());
        for (t, (host, port, ssl, over_http, subs)) in r.targets.iter().zip(&l.targets) {
            prop_assert_eq!(
                &t.addr,
                &TargetAddr::Host { host: host.clone(), port: *port }
            );
            prop_assert_eq!(t.ssl, *ssl);
            prop_assert_eq!(t.over_http, *over_http);
            prop_assert_eq!(&t.sub, subs);
        }
    }

    #[test]
    fn generated_route_resolves_its_own_requests_and_keeps_the_query(
        l in line(),
        suffix in "[a-z0-9/]{0,8}",
        query in "[a-zA-Z0-9=&/?%._~-]{0,20}",
        port in proptest::option::of(1u16..=65535),
    ) {
        let table = RouteTable::parse(&l.render())
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", l.render())))?;
        let host = l.host.clone().unwrap_or_else(|| "anything.example".into());
        // Request hosts are matched without case and without port.
        let req_host = match port {
            Some(p) => format!("{}:{p}", host.to_uppercase()),
            None => host.clone(),
        };
        let path = format!("{}{suffix}", l.path_beg.as_deref().unwrap_or("/"));
        let req = RouteRequest {
            host: &req_host,
            path: &path,
            ws: l.proto == Some(Proto::Ws),
            tls: l.ssl == Some(true),
        };
        let Some(r) = table.resolve(&req) else {
            return Err(TestCaseError::fail(format!("{:?} does not resolve {req:?}", l.render())));
        };

        let out = r.rewrite_path(&format!("{path}?{query}"));
        prop_assert!(out.starts_with('/'), "{:?}", out);
        prop_assert!(out.ends_with(&format!("?{query}")), "query lost: {:?}", out);
        let no_query = r.rewrite_path(&path);
        prop_assert_eq!(&out[..out.len() - query.len() - 1], no_query.as_str());
        if let (Some(beg), Some(replace)) = (&l.path_beg, &l.replace_beg) {
            let rest = &path[beg.len()..];
            let mut want = format!("{replace}{rest}");
            if !want.starts_with('/') {
                want.insert(0, '/');
            }
            prop_assert_eq!(no_query, want);
        }
    }

    #[test]
    fn rewrite_path_keeps_any_query(
        l in line(),
        path in "(?s)[^?]{0,20}",
        query in "(?s).{0,20}",
    ) {
        let table = RouteTable::parse(&l.render())
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", l.render())))?;
        let r = &table.routes()[0];
        let out = r.rewrite_path(&format!("{path}?{query}"));
        prop_assert!(out.starts_with('/'));
        prop_assert!(out.ends_with(&format!("?{query}")), "{:?} -> {:?}", query, out);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "(?s).{0,200}") {
        if let Ok(table) = RouteTable::parse(&text) {
            for r in table.routes() {
                prop_assert!(!r.targets.is_empty());
                let _ = r.rewrite_path(&text);
            }
            let _ = table.resolve(&RouteRequest { host: &text, path: &text, ws: false, tls: false });
        }
    }

    #[test]
    fn parse_never_panics_on_near_valid_lines(
        pieces in prop::collection::vec(prop_oneof![
            prop::sample::select(PIECES).prop_map(str::to_owned),
            "(?s).{0,3}",
        ], 0..24),
    ) {
        let text = pieces.concat();
        if let Ok(table) = RouteTable::parse(&text) {
            for r in table.routes() {
                prop_assert!(table.by_id(&r.id).is_some());
                let _ = r.rewrite_path("/a/b?c=d");
            }
            for host in ["", "x", "[::1]:80", "a:b:c", "EXAMPLE.com:1"] {
                for p in ["", "/", "/api/x"] {
                    let _ = table.resolve(&RouteRequest { host, path: p, ws: true, tls: false });
                }
            }
        }
    }

    #[test]
    fn resolve_never_panics_on_arbitrary_requests(
        host in "(?s).{0,30}",
        path in "(?s).{0,30}",
        ws in any::<bool>(),
        tls in any::<bool>(),
    ) {
        let table = RouteTable::parse(
            "example.com,path_beg=/a test\n*,proto=ws 127.0.0.1:1\n[::1] 127.0.0.1:2\n* test\n",
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = table.resolve(&RouteRequest { host: &host, path: &path, ws, tls });
    }
}

/// Vocabulary for near-valid lines.
const PIECES: &[&str] = &[
    "*",
    " ",
    "\t",
    "\n",
    ",",
    "=",
    "#",
    "\"",
    "\\",
    "test",
    "example.com",
    "127.0.0.1:8080",
    "[::1]:80",
    "::1",
    ":0",
    ":65536",
    "path_beg=/",
    "replace_beg=",
    "path_rem=",
    "99999999999999999999999",
    "proto=ws",
    "ssl=yes",
    "id=",
    "as_host=",
    "header=",
    "X-A:b",
    "prefix=",
    "sig_key=",
    "aco",
    "no_grip",
    "authz",
    "authz_fail=open",
    "ssl",
    "insecure",
    "host=",
    "over_http",
    "sub=",
    "jsonp_mode",
    "zhttp/",
    "ü",
];
