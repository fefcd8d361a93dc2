//! The route table: a whole file's routes, the file-level checks (duplicate conditions and
//! ids) and the choice of the route for a request.

use std::collections::HashMap;

use crate::RoutesError;
use crate::lex;
use crate::parse::parse_route;
use crate::route::{Route, RouteRequest};

/// A validated route table.
///
/// Besides the routes it remembers which Pushpin-only properties were accepted but ignored and
/// which duplicate conditions were skipped, so the caller can log them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Parallel to `routes`: `true` for an empty condition (selectable only by id).
    id_only: Vec<bool>,
    /// `(line, prop name)` of accepted-but-ignored Pushpin properties.
    ignored: Vec<(usize, String)>,
    /// `(skipped line, line of the route kept instead)`.
    skipped: Vec<(usize, usize)>,
}

impl RouteTable {
    /// Parses a whole routes file.
    ///
    /// Any error rejects the whole file. Beyond the syntax in the crate docs:
    ///
    /// - An empty condition (the first section starts with a prop, e.g. `id=foo 127.0.0.1:80`)
    ///   makes an id-only route: [`RouteTable::resolve`] never picks it, only
    ///   [`RouteTable::by_id`] does. Such a route must have an `id=` (Pushpin silently drops it
    ///   otherwise; we report it).
    /// - A route whose condition (host, `proto`, `ssl`, `path_beg`) repeats an earlier one is
    ///   skipped, as in Pushpin; see [`RouteTable::skipped_duplicates`].
    /// - Two routes with the same id (explicit or default) are an error.
    /// - Pushpin properties we do not implement (`orig_headers`, `session`,
    ///   `sockjs`, `sockjs_as_path`, `log_level`, `untrusted`, `trust_connect_host`) are
    ///   accepted and listed in [`RouteTable::ignored_props`]; any other unknown property is an
    ///   error.
    pub fn parse(text: &str) -> Result<RouteTable, RoutesError> {
        let mut table = RouteTable::default();
        let mut ids: HashMap<String, usize> = HashMap::new();

        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let err = |reason: String| RoutesError { line, reason };
            let sections = lex::split_line(raw).map_err(err)?;
            if sections.is_empty() {
                continue;
            }
            let parsed = parse_route(line, &sections).map_err(err)?;
            table
                .ignored
                .extend(parsed.ignored.into_iter().map(|name| (line, name)));
            let route = parsed.route;

            if !parsed.id_only {
                let earlier = table
                    .routes
                    .iter()
                    .zip(&table.id_only)
                    .find(|(r, id_only)| !**id_only && same_condition(r, &route));
                if let Some((first, _)) = earlier {
                    table.skipped.push((line, first.line));
                    continue;
                }
            }

            if let Some(first) = ids.get(&route.id) {
                return Err(err(format!(
                    "duplicate route id '{}' (also on line {first})",
                    route.id
                )));
            }
            ids.insert(route.id.clone(), line);
            table.routes.push(route);
            table.id_only.push(parsed.id_only);
        }
        Ok(table)
    }

    /// Parses a table meant to serve traffic: like [`RouteTable::parse`], but a table without
    /// any route is an error, so an emptied or truncated file cannot take every route away.
    pub fn parse_serving(text: &str) -> Result<RouteTable, RoutesError> {
        let table = RouteTable::parse(text)?;
        if table.routes.is_empty() {
            return Err(RoutesError {
                line: 0,
                reason: "the table has no routes".into(),
            });
        }
        Ok(table)
    }

    /// All routes in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Picks the route for a request, or `None` (the edge answers 502 `No route for host`).
    ///
    /// Rules for the request's host are consulted first; `*` rules only when no rule at all
    /// names that host (a host whose rules all fail to match gets `None`). Among matching rules
    /// the most specific wins: a `proto` beats none, then the longer `path_beg`, then an `ssl`
    /// beats none; ties go to the earlier line. Id-only routes never match here.
    pub fn resolve(&self, req: &RouteRequest<'_>) -> Option<&Route> {
        let host = normalize_request_host(req.host);
        let candidates = || {
            self.routes
                .iter()
                .zip(&self.id_only)
                .filter(|(_, id_only)| !**id_only)
                .map(|(r, _)| r)
        };
        let has_host_rules = candidates().any(|r| r.host.as_deref() == Some(host.as_str()));
        let wanted = has_host_rules.then_some(host.as_str());

        let mut best: Option<(&Route, (bool, usize, bool))> = None;
        for r in candidates().filter(|r| r.host.as_deref() == wanted) {
            if !r.matches(req) {
                continue;
            }
            let rank = (
                r.proto.is_some(),
                r.path_beg.as_deref().map_or(0, str::len),
                r.ssl.is_some(),
            );
            if best.is_none_or(|(_, best_rank)| rank > best_rank) {
                best = Some((r, rank));
            }
        }
        best.map(|(r, _)| r)
    }

    /// Finds a route by id.
    pub fn by_id(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }

    /// Pushpin properties that were accepted but have no effect in gripmesh, as
    /// `(line, property name)` in file order (for a warning log).
    pub fn ignored_props(&self) -> &[(usize, String)] {
        &self.ignored
    }

    /// Routes skipped because their condition repeats an earlier route's, as
    /// `(skipped line, line of the route that was kept)` (for a warning log).
    pub fn skipped_duplicates(&self) -> &[(usize, usize)] {
        &self.skipped
    }
}

/// Pushpin's duplicate-condition test (same host key, `proto`, `ssl` and `path_beg`).
fn same_condition(a: &Route, b: &Route) -> bool {
    a.host == b.host && a.proto == b.proto && a.ssl == b.ssl && a.path_beg == b.path_beg
}

/// Lower-cases a request host and strips a port (`host:port`, `[v6]:port`) and v6 brackets.
fn normalize_request_host(host: &str) -> String {
    let host = host.trim();
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inner, _)| inner)
    } else if host.matches(':').count() == 1 {
        host.split_once(':').map_or(host, |(h, _)| h)
    } else {
        host
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::test_util::*;
    use crate::*;

    #[test]
    fn id_only_route_is_selectable_only_by_id() {
        let t = parse("id=foo 127.0.0.1:80\n");
        let r = t.by_id("foo").unwrap();
        assert_eq!(r.host, None);
        assert_eq!(r.targets[0].addr, hp("127.0.0.1", 80));
        assert_eq!(line_for(&t, "example.com", "/"), None);

        let t = parse("id=foo,path_beg=/x 127.0.0.1:80\n* 127.0.0.1:81\n");
        assert_eq!(t.by_id("foo").unwrap().path_beg.as_deref(), Some("/x"));
        assert_eq!(line_for(&t, "example.com", "/x"), Some(2));

        // id-only routes are not duplicates of each other nor of `*` routes
        let t = parse("id=a 1.1.1.1:1\nid=b 1.1.1.1:2\n* 1.1.1.1:3\n");
        assert_eq!(t.routes().len(), 3);
        assert!(t.skipped_duplicates().is_empty());

        assert_err(
            "\npath_beg=/x 127.0.0.1:80\n",
            2,
            &["empty condition", "'id'"],
        );
    }

    #[test]
    fn duplicate_conditions_keep_the_first() {
        let t = parse("* 1.1.1.1:1\n* 2.2.2.2:2\n");
        assert_eq!(t.routes().len(), 1);
        assert_eq!(t.routes()[0].targets[0].addr, hp("1.1.1.1", 1));
        assert_eq!(t.skipped_duplicates(), &[(2, 1)]);

        // host compared lower-cased without port; props other than the condition don't matter
        let t =
            parse("Example.com,path_beg=/a 1.1.1.1:1\nexample.com:80,path_beg=/a,aco 2.2.2.2:2\n");
        assert_eq!(t.routes().len(), 1);
        assert!(!t.routes()[0].aco);
        assert_eq!(t.skipped_duplicates(), &[(2, 1)]);

        // a skipped duplicate's explicit id does not clash
        let t = parse("*,id=x 1.1.1.1:1\n*,id=x 2.2.2.2:2\n");
        assert_eq!(t.routes().len(), 1);

        // different conditions are not duplicates
        let t = parse("* a:1\n*,ssl=yes a:1\n*,proto=ws a:1\n*,path_beg=/ a:1\nh a:1\n");
        assert_eq!(t.routes().len(), 5);
    }

    #[test]
    fn duplicate_ids_are_errors() {
        assert_err(
            "*,id=x 1.1.1.1:1\n\n*,path_beg=/p,id=x 1.1.1.1:1\n",
            3,
            &["duplicate route id 'x'", "line 1"],
        );
        // explicit id equal to another route's default id
        assert_err(
            "*,path_beg=/a 1.1.1.1:1\n*,id=\"*,*,*,/a\" 1.1.1.1:1\n",
            2,
            &["duplicate route id '*,*,*,/a'", "line 1"],
        );
        assert_err(
            "*,id=\"*,*,*,/a\" 1.1.1.1:1\n*,path_beg=/a 1.1.1.1:1\n",
            2,
            &["'*,*,*,/a'"],
        );
    }

    #[test]
    fn pushpin_verified_no_fallback_to_star() {
        let t = parse(concat!(
            "example.com 127.0.0.1:8080\n",
            "*,path_beg=/ws 127.0.0.1:8080,over_http\n",
            "*,path_beg=/testh/ test\n",
        ));
        // 127.0.0.1 has no host rule, and no `*` rule matches /plain
        assert_eq!(line_for(&t, "127.0.0.1", "/plain"), None);
        assert_eq!(line_for(&t, "127.0.0.1", "/testh/stream"), Some(3));
        assert_eq!(line_for(&t, "127.0.0.1", "/ws"), Some(2));
        // example.com has a rule: `*` rules are never used for it
        assert_eq!(line_for(&t, "example.com", "/ws"), Some(1));
        assert_eq!(line_for(&t, "example.com", "/testh/x"), Some(1));
    }

    #[test]
    fn host_with_rules_but_no_match_does_not_fall_back() {
        let t = parse("example.com,path_beg=/api 1.1.1.1:80\n* 2.2.2.2:80\n");
        assert_eq!(line_for(&t, "example.com", "/api/x"), Some(1));
        assert_eq!(line_for(&t, "example.com", "/other"), None);
        assert_eq!(line_for(&t, "other.com", "/other"), Some(2));
        assert_eq!(line_for(&t, "other.com", "/api/x"), Some(2));
    }

    #[test]
    fn pushpin_run_example_routes() {
        // a working Pushpin routes file
        let t = parse("*,path_beg=/ws 127.0.0.1:8080,over_http\n* 127.0.0.1:8080\n");
        let ws = t.resolve(&req("127.0.0.1", "/ws", true, false)).unwrap();
        assert_eq!(ws.line, 1);
        assert!(ws.targets[0].over_http);
        let stream = t
            .resolve(&req("127.0.0.1", "/stream", false, false))
            .unwrap();
        assert_eq!(stream.line, 2);
        assert!(!stream.targets[0].over_http);
    }

    #[test]
    fn host_matching_is_case_insensitive_and_ignores_port() {
        let t = parse("Example.COM:8080 1.1.1.1:1\n[::1]:7999 1.1.1.1:2\n* 1.1.1.1:3\n");
        assert_eq!(t.routes()[0].host.as_deref(), Some("example.com"));
        assert_eq!(t.routes()[1].host.as_deref(), Some("::1"));
        assert_eq!(line_for(&t, "example.com", "/"), Some(1));
        assert_eq!(line_for(&t, "EXAMPLE.com:443", "/"), Some(1));
        assert_eq!(line_for(&t, " example.com ", "/"), Some(1));
        assert_eq!(line_for(&t, "[::1]:8080", "/"), Some(2));
        assert_eq!(line_for(&t, "[::1]", "/"), Some(2));
        assert_eq!(line_for(&t, "::1", "/"), Some(2));
        assert_eq!(line_for(&t, "example.net", "/"), Some(3));
        assert_eq!(line_for(&t, "sub.example.com", "/"), Some(3));
    }

    #[test]
    fn proto_matching() {
        let t = parse("*,proto=http 1.1.1.1:1\n*,proto=ws,path_beg=/w 1.1.1.1:2\n");
        assert_eq!(
            t.resolve(&req("h", "/w", false, false)).map(|r| r.line),
            Some(1)
        );
        assert_eq!(
            t.resolve(&req("h", "/w", true, false)).map(|r| r.line),
            Some(2)
        );
        assert_eq!(
            t.resolve(&req("h", "/x", true, false)).map(|r| r.line),
            None
        );
    }

    #[test]
    fn ssl_matching() {
        let t = parse("*,ssl=yes 1.1.1.1:1\n*,ssl=no,path_beg=/plain 1.1.1.1:2\n");
        assert_eq!(
            t.resolve(&req("h", "/", false, true)).map(|r| r.line),
            Some(1)
        );
        assert_eq!(
            t.resolve(&req("h", "/", false, false)).map(|r| r.line),
            None
        );
        assert_eq!(
            t.resolve(&req("h", "/plain", false, false)).map(|r| r.line),
            Some(2)
        );
        assert_eq!(
            t.resolve(&req("h", "/plain", false, true)).map(|r| r.line),
            Some(1)
        );
    }

    #[test]
    fn proto_specific_beats_longer_path() {
        let t = parse("*,path_beg=/long/path 1.1.1.1:1\n*,proto=ws 1.1.1.1:2\n");
        assert_eq!(
            t.resolve(&req("h", "/long/path", true, false))
                .map(|r| r.line),
            Some(2)
        );
        assert_eq!(
            t.resolve(&req("h", "/long/path", false, false))
                .map(|r| r.line),
            Some(1)
        );
        // also when the proto rule comes first
        let t = parse("*,proto=http 1.1.1.1:1\n*,path_beg=/long 1.1.1.1:2\n");
        assert_eq!(
            t.resolve(&req("h", "/long", false, false)).map(|r| r.line),
            Some(1)
        );
        assert_eq!(
            t.resolve(&req("h", "/long", true, false)).map(|r| r.line),
            Some(2)
        );
    }

    #[test]
    fn path_beg_is_canonical() {
        let t = RouteTable::parse("*,path_beg=/%70rivate/./x/ test\n").expect("parses");
        assert_eq!(t.routes()[0].path_beg.as_deref(), Some("/private/x/"));
        assert!(RouteTable::parse("*,path_beg=/a%2Fb test\n").is_err());
        assert!(RouteTable::parse("*,path_beg=/.. test\n").is_err());
    }

    #[test]
    fn longest_path_beg_wins() {
        let t = parse(
            "*,path_beg=/a 1.1.1.1:1\n*,path_beg=/a/b/c 1.1.1.1:3\n*,path_beg=/a/b 1.1.1.1:2\n* 1.1.1.1:4\n",
        );
        assert_eq!(line_for(&t, "h", "/a/b/c/d"), Some(2));
        assert_eq!(line_for(&t, "h", "/a/b/x"), Some(3));
        assert_eq!(line_for(&t, "h", "/a/x"), Some(1));
        assert_eq!(line_for(&t, "h", "/z"), Some(4));
        // prefix match is on the raw string, not on segments
        assert_eq!(line_for(&t, "h", "/abc"), Some(1));
    }

    #[test]
    fn ssl_specific_breaks_path_ties_but_not_longer_paths() {
        let t = parse("*,path_beg=/x 1.1.1.1:1\n*,path_beg=/x,ssl=yes 1.1.1.1:2\n");
        assert_eq!(
            t.resolve(&req("h", "/x", false, true)).map(|r| r.line),
            Some(2)
        );
        assert_eq!(
            t.resolve(&req("h", "/x", false, false)).map(|r| r.line),
            Some(1)
        );

        let t = parse("*,ssl=yes 1.1.1.1:1\n*,path_beg=/p 1.1.1.1:2\n");
        assert_eq!(
            t.resolve(&req("h", "/p", false, true)).map(|r| r.line),
            Some(2)
        );
        assert_eq!(
            t.resolve(&req("h", "/q", false, true)).map(|r| r.line),
            Some(1)
        );
    }

    #[test]
    fn realistic_pushpin_file() {
        let text = r#"
# Pushpin routes for the chat service
# (copied from production, with jsonp and legacy options)

# WebSocket traffic, WS-over-HTTP to two backends with failover
chat.example.com,proto=ws,path_beg=/ws/,id=chat-ws,prefix=chat-,sig_iss=pushpin,sig_key=changeme 10.0.0.11:8080,over_http,sub=presence 10.0.0.12:8080,over_http
chat.example.com,path_beg=/api/,replace_beg=/,aco,jsonp_mode=basic,jsonp_cb=cb,header="X-Forwarded-Service: chat",header=Cookie: chat.internal:443,ssl,host=chat.internal,insecure
chat.example.com,ssl=yes backend.internal:8443,ssl,trust_connect_host
CHAT.example.com,ssl=yes backend2.internal:8443   # duplicate, skipped
legacy.example.com,path_rem=7,sockjs=/sockjs,session,orig_headers,log_level=3 [fd00::7]:8000,untrusted
id=metrics 127.0.0.1:9100
*,path_beg=/testh/ test
*,debug,no_grip,authz 127.0.0.1:8080
"#;
        let t = parse(text);
        assert_eq!(t.routes().len(), 7);
        assert_eq!(t.skipped_duplicates(), &[(9, 8)]);
        let ignored: Vec<(usize, &str)> = t
            .ignored_props()
            .iter()
            .map(|(l, n)| (*l, n.as_str()))
            .collect();
        assert_eq!(
            ignored,
            vec![
                (8, "trust_connect_host"),
                (10, "sockjs"),
                (10, "session"),
                (10, "orig_headers"),
                (10, "log_level"),
                (10, "untrusted"),
            ]
        );

        let ws = t
            .resolve(&req("chat.example.com", "/ws/room1", true, false))
            .unwrap();
        assert_eq!(ws.id, "chat-ws");
        assert_eq!(ws.prefix.as_deref(), Some("chat-"));
        assert_eq!(ws.targets.len(), 2);
        assert_eq!(ws.targets[0].sub, vec!["presence".to_string()]);
        assert!(ws.targets.iter().all(|t| t.over_http));

        let api = t
            .resolve(&req("Chat.Example.com:443", "/api/send", false, true))
            .unwrap();
        assert_eq!(api.line, 7);
        assert!(api.aco);
        assert_eq!(api.rewrite_path("/api/send?x=1"), "/send?x=1");
        assert_eq!(
            api.headers,
            vec![
                ("X-Forwarded-Service".to_string(), "chat".to_string()),
                ("Cookie".to_string(), String::new()),
            ]
        );
        assert_eq!(api.targets[0].host.as_deref(), Some("chat.internal"));
        assert!(api.targets[0].ssl && api.targets[0].insecure);

        // plain TLS traffic on the host: the ssl=yes rule (first of the duplicates)
        let tls = t
            .resolve(&req("chat.example.com", "/", false, true))
            .unwrap();
        assert_eq!(tls.targets[0].addr, hp("backend.internal", 8443));
        // plain HTTP on the host matches nothing, and does not fall back to `*`
        assert!(
            t.resolve(&req("chat.example.com", "/", false, false))
                .is_none()
        );

        let legacy = t
            .resolve(&req("legacy.example.com", "/legacy/x", false, false))
            .unwrap();
        assert_eq!(legacy.rewrite_path("/legacy/x"), "/x");
        assert_eq!(legacy.targets[0].addr, hp("fd00::7", 8000));

        assert_eq!(t.by_id("metrics").map(|r| r.line), Some(11));
        assert_eq!(line_for(&t, "other.example", "/testh/stream"), Some(12));
        let fallback = t.resolve(&req("other.example", "/", true, false)).unwrap();
        assert_eq!(fallback.line, 13);
        assert!(fallback.debug && fallback.no_grip && fallback.authz);
    }
}
