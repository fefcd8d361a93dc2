//! `routes::RouteTable::parse` (routes files, `PUT /routes` bodies and route broadcasts) over
//! arbitrary text; every accepted table is then exercised: `resolve` for a few hosts and paths
//! (including each route's own host and `path_beg`), `by_id` for each id, and `rewrite_path`,
//! which must keep the query string and always produce a path starting with `/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routes::{RouteRequest, RouteTable};

const HOSTS: &[&str] = &[
    "example.com",
    "",
    "EXAMPLE.com:8080",
    "[::1]:80",
    "::1",
    "a:b:c",
];
const PATHS: &[&str] = &["/", "", "/a/b", "/ü/x", "no-slash", "//"];
const QUERIES: &[&str] = &["", "?", "?a=1&b=/x?y"];

fn check_rewrite(route: &routes::Route, path: &str) {
    for query in QUERIES {
        let input = format!("{path}{query}");
        let out = route.rewrite_path(&input);
        assert!(out.starts_with('/'), "{input:?} -> {out:?}");
        // The query starts at the first `?` of the input; it is kept byte for byte.
        if let Some(i) = input.find('?') {
            assert!(
                out.ends_with(&input[i..]),
                "query lost: {input:?} -> {out:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(table) = RouteTable::parse(&text) else {
        return;
    };
    let _ = table.ignored_props();
    let _ = table.skipped_duplicates();
    let mut hosts: Vec<String> = HOSTS.iter().map(|h| (*h).to_owned()).collect();
    let mut paths: Vec<String> = PATHS.iter().map(|p| (*p).to_owned()).collect();
    for route in table.routes() {
        assert!(!route.targets.is_empty(), "a route without targets");
        let found = table
            .by_id(&route.id)
            .expect("every route is found by its id");
        assert_eq!(found.id, route.id);
        if let Some(h) = &route.host {
            hosts.push(h.clone());
            hosts.push(format!("{}:1", h.to_uppercase()));
        }
        if let Some(p) = &route.path_beg {
            paths.push(p.clone());
            paths.push(format!("{p}x/y"));
        }
    }
    for host in &hosts {
        for path in &paths {
            for (ws, tls) in [(false, false), (true, true)] {
                let req = RouteRequest {
                    host: host.as_str(),
                    path: path.as_str(),
                    ws,
                    tls,
                };
                if let Some(route) = table.resolve(&req) {
                    if let Some(beg) = &route.path_beg {
                        assert!(path.starts_with(beg.as_str()), "path_beg not honoured");
                    }
                    check_rewrite(route, path);
                }
            }
        }
    }
    for route in table.routes() {
        for path in &paths {
            check_rewrite(route, path);
        }
    }
});
