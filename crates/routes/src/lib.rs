//! Pushpin `routes` files: parsing, validation and request matching.
//!
//! One route per line: `CONDITION TARGET [TARGET...]`, `#` comments, blank lines ignored. Each
//! section is `value[,prop[=val]]...`; values may be double-quoted with `\"` and `\\` escapes.
//! A file with any error is rejected whole; the error names the line and the reason.
//!
//! See [`RouteTable::parse`] for what is accepted, [`RouteTable::resolve`] for matching and
//! [`Route::rewrite_path`] for path rewriting.

mod lex;
pub mod path;

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;

/// A parse error: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RoutesError {
    /// 1-based line number.
    pub line: usize,
    /// Human-readable reason, naming the offending section or property.
    pub reason: String,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    /// `host:port` or `[v6]:port`.
    Host {
        /// Host name or IP address (no brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// Pushpin's built-in `test` origin.
    Test,
}

/// One target of a route, tried in order (failover on connect errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address.
    pub addr: TargetAddr,
    /// `ssl`: TLS to the origin.
    pub ssl: bool,
    /// `insecure`: do not verify the origin's certificate.
    pub insecure: bool,
    /// `host=`: Host header (and TLS server name) sent to the origin.
    pub host: Option<String>,
    /// `over_http`: WebSocket-over-HTTP to this target.
    pub over_http: bool,
    /// `one_event`: at most one WebSocket event per WebSocket-over-HTTP request.
    pub one_event: bool,
    /// `sub=` (repeatable): implicit channel subscriptions.
    pub sub: Vec<String>,
}

/// Condition protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain HTTP requests only.
    Http,
    /// WebSocket upgrades only.
    Ws,
}

/// One route line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// 1-based line in the file it came from.
    pub line: usize,
    /// `id=`, or the default `<host>,<proto>,<ssl>,<path_beg>`-style id.
    pub id: String,
    /// Host the condition matches (lower-case, no port); `None` for `*` (any host) or empty.
    pub host: Option<String>,
    /// `proto=`.
    pub proto: Option<Proto>,
    /// `ssl=yes|no`.
    pub ssl: Option<bool>,
    /// `path_beg=`.
    pub path_beg: Option<String>,
    /// `replace_beg=`: replaces the `path_beg` prefix.
    pub replace_beg: Option<String>,
    /// `path_rem=N`: strip N leading characters of the path.
    pub path_rem: Option<usize>,
    /// `as_host=host[:port]`: rewrite the Host header.
    pub as_host: Option<String>,
    /// `header=Name:Value` (repeatable); an empty value removes the header.
    pub headers: Vec<(String, String)>,
    /// `prefix=`: channel name prefix.
    pub prefix: Option<String>,
    /// `sig_key=` (raw text, parsed by the edge).
    pub sig_key: Option<String>,
    /// `sig_iss=`.
    pub sig_iss: Option<String>,
    /// `aco`: automatic CORS.
    pub aco: bool,
    /// `no_grip`: pass GRIP through untouched.
    pub no_grip: bool,
    /// `authz`: gripmesh's own: check the connection with the auth sidecar first.
    pub authz: bool,
    /// `authz_fail=open|closed` (default closed): what to do when the sidecar cannot decide
    /// (gateway down): closed ⇒ 503, open ⇒ let the client through.
    pub authz_fail_open: bool,
    /// `debug`: detailed error bodies.
    pub debug: bool,
    /// JSON-P options (`jsonp_mode`, `jsonp_cb`, `jsonp_body`, `jsonp_defcb`,
    /// `jsonp_defmethod`); JSON-P applies on routes with `aco`.
    pub jsonp: JsonpConfig,
    /// Targets in failover order (at least one).
    pub targets: Vec<Target>,
}

/// Pushpin's JSON-P options of a route (`domainmap.cpp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonpConfig {
    /// `jsonp_mode=extended` (default: the response is wrapped as
    /// `{"code","reason","headers","body"}`) or `basic` (the body itself).
    pub extended: bool,
    /// `jsonp_cb=`: the callback query parameter (default `callback`).
    pub callback_param: String,
    /// `jsonp_body=`: a query parameter that carries the request body (JSON).
    pub body_param: Option<String>,
    /// `jsonp_defcb=`: callback used when only the body parameter is given.
    pub default_callback: Option<String>,
    /// `jsonp_defmethod=`: method when the request has no `_method` (default GET in extended
    /// mode, POST in basic).
    pub default_method: String,
}

impl Default for JsonpConfig {
    fn default() -> Self {
        JsonpConfig {
            extended: true,
            callback_param: "callback".to_owned(),
            body_param: None,
            default_callback: None,
            default_method: "GET".to_owned(),
        }
    }
}

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Request host without port (any case).
    pub host: &'a str,
    /// Request path (without query).
    pub path: &'a str,
    /// WebSocket upgrade.
    pub ws: bool,
    /// Client connection is TLS.
    pub tls: bool,
}

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

impl Route {
    /// The path (and query) to send to the origin after `path_rem` / `replace_beg`.
    ///
    /// `path_rem=N` drops the first N characters of the path (never of the query); then, if the
    /// path still starts with `path_beg`, `replace_beg` replaces that prefix. The query string is
    /// kept as is and the result always starts with `/`.
    pub fn rewrite_path(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.find('?') {
            Some(i) => path_and_query.split_at(i),
            None => (path_and_query, ""),
        };
        let mut path = path.to_string();
        if let Some(n) = self.path_rem {
            path = path.chars().skip(n).collect();
        }
        if let (Some(beg), Some(replace)) = (&self.path_beg, &self.replace_beg)
            && let Some(rest) = path.strip_prefix(beg.as_str())
        {
            path = format!("{replace}{rest}");
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        path.push_str(query);
        path
    }

    /// Whether the condition's `proto`, `ssl` and `path_beg` accept the request (host aside).
    fn matches(&self, req: &RouteRequest<'_>) -> bool {
        let proto_ok = match self.proto {
            None => true,
            Some(Proto::Http) => !req.ws,
            Some(Proto::Ws) => req.ws,
        };
        let ssl_ok = self.ssl.is_none_or(|ssl| ssl == req.tls);
        let path_ok = self
            .path_beg
            .as_deref()
            .is_none_or(|beg| req.path.starts_with(beg));
        proto_ok && ssl_ok && path_ok
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

/// A parsed line before table-level checks.
struct ParsedRoute {
    route: Route,
    id_only: bool,
    ignored: Vec<String>,
}

/// Condition props Pushpin knows that gripmesh accepts and ignores.
const IGNORED_CONDITION_PROPS: &[&str] = &[
    "orig_headers",
    "session",
    "sockjs",
    "sockjs_as_path",
    "log_level",
    "untrusted",
];

/// Target props Pushpin knows that gripmesh accepts and ignores.
const IGNORED_TARGET_PROPS: &[&str] = &["trust_connect_host", "untrusted"];

/// Tracks props that may appear once per section.
#[derive(Default)]
struct Seen(HashSet<String>);

impl Seen {
    fn once(&mut self, name: &str) -> Result<(), String> {
        if self.0.insert(name.to_string()) {
            Ok(())
        } else {
            Err(format!("duplicate property '{name}'"))
        }
    }
}

/// The value of a prop that requires one.
fn valued(p: &lex::RawProp) -> Result<&str, String> {
    p.value
        .as_deref()
        .ok_or_else(|| format!("property '{}' requires a value", p.name))
}

/// Checks that a boolean flag was written without a value.
fn flag(p: &lex::RawProp) -> Result<bool, String> {
    match &p.value {
        None => Ok(true),
        Some(_) => Err(format!(
            "property '{}' takes no value (got '{}')",
            p.name,
            p.display()
        )),
    }
}

/// The value of a prop that must not be empty.
fn non_empty(p: &lex::RawProp) -> Result<String, String> {
    let v = valued(p)?;
    if v.is_empty() {
        return Err(format!("property '{}' must not be empty", p.name));
    }
    Ok(v.to_string())
}

fn bad_value(p: &lex::RawProp, expected: &str) -> String {
    format!(
        "invalid value '{}' for '{}' (expected {expected})",
        p.value.as_deref().unwrap_or_default(),
        p.name
    )
}

fn parse_route(line: usize, sections: &[lex::RawSection]) -> Result<ParsedRoute, String> {
    let (cond, targets) = match sections.split_first() {
        Some((cond, targets)) if !targets.is_empty() => (cond, targets),
        _ => return Err("route has no target".to_string()),
    };

    let id_only = cond.value.is_empty();
    let host = match cond.value.as_str() {
        "" | "*" => None,
        v => Some(parse_condition_host(v)?),
    };

    let mut route = Route {
        line,
        id: String::new(),
        host,
        proto: None,
        ssl: None,
        path_beg: None,
        replace_beg: None,
        path_rem: None,
        as_host: None,
        headers: Vec::new(),
        prefix: None,
        sig_key: None,
        sig_iss: None,
        aco: false,
        no_grip: false,
        authz: false,
        authz_fail_open: false,
        debug: false,
        jsonp: JsonpConfig::default(),
        targets: Vec::new(),
    };
    let mut jsonp_defmethod: Option<String> = None;
    let mut ignored = Vec::new();
    let mut seen = Seen::default();

    for p in &cond.props {
        let name = p.name.as_str();
        if IGNORED_CONDITION_PROPS.contains(&name) {
            ignored.push(p.name.clone());
            continue;
        }
        if name != "header" {
            seen.once(name)?;
        }
        match name {
            "proto" => {
                let v = valued(p)?;
                route.proto = Some(if v.eq_ignore_ascii_case("http") {
                    Proto::Http
                } else if v.eq_ignore_ascii_case("ws") {
                    Proto::Ws
                } else {
                    return Err(bad_value(p, "http or ws"));
                });
            }
            "ssl" => route.ssl = Some(parse_yes_no(p)?),
            "path_beg" => {
                let v = non_empty(p)?;
                if !v.starts_with('/') {
                    return Err(bad_value(p, "a path starting with '/'"));
                }
                // Request paths are matched in canonical form (see `path`), so the prefix is
                // too: `path_beg=/%70rivate/` means `/private/`.
                let canonical = path::normalize(&v).map_err(|_| {
                    bad_value(p, "a path without %2F, %5C, '\\' or '..' above the root")
                })?;
                route.path_beg = Some(canonical);
            }
            "id" => route.id = non_empty(p)?,
            "replace_beg" => route.replace_beg = Some(valued(p)?.to_string()),
            "path_rem" => {
                let v = valued(p)?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad_value(p, "a non-negative integer"));
                }
                route.path_rem = Some(v.parse().map_err(|_| bad_value(p, "a smaller number"))?);
            }
            "as_host" => {
                let v = valued(p)?;
                check_host_port(v).map_err(|_| bad_value(p, "host[:port]"))?;
                route.as_host = Some(v.to_string());
            }
            "header" => route.headers.push(parse_header(p)?),
            "prefix" => route.prefix = Some(valued(p)?.to_string()),
            "sig_key" => route.sig_key = Some(non_empty(p)?),
            "sig_iss" => route.sig_iss = Some(non_empty(p)?),
            "aco" => route.aco = flag(p)?,
            "no_grip" => route.no_grip = flag(p)?,
            "authz" => route.authz = flag(p)?,
            "authz_fail" => {
                route.authz_fail_open = match valued(p)? {
                    "open" => true,
                    "closed" => false,
                    _ => return Err(bad_value(p, "open or closed")),
                }
            }
            "debug" => route.debug = flag(p)?,
            "jsonp_mode" => {
                route.jsonp.extended = match valued(p)? {
                    "extended" => true,
                    "basic" => false,
                    _ => return Err(bad_value(p, "basic or extended")),
                }
            }
            "jsonp_cb" => route.jsonp.callback_param = non_empty(p)?,
            "jsonp_body" => route.jsonp.body_param = Some(non_empty(p)?),
            "jsonp_defcb" => route.jsonp.default_callback = Some(non_empty(p)?),
            "jsonp_defmethod" => {
                let v = non_empty(p)?;
                if !v.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(bad_value(p, "an HTTP method"));
                }
                jsonp_defmethod = Some(v.to_ascii_uppercase());
            }
            _ => return Err(format!("unknown condition property '{name}'")),
        }
    }
    // Pushpin: basic mode defaults to POST (its body parameter is the request body).
    route.jsonp.default_method = jsonp_defmethod
        .unwrap_or_else(|| if route.jsonp.extended { "GET" } else { "POST" }.to_owned());

    if route.replace_beg.is_some() {
        if route.path_beg.is_none() {
            return Err("property 'replace_beg' requires 'path_beg'".to_string());
        }
        if route.path_rem.is_some() {
            // Pushpin silently lets replace_beg override path_rem; make the conflict explicit.
            return Err("properties 'path_rem' and 'replace_beg' cannot be combined".to_string());
        }
    }

    if route.id.is_empty() {
        if id_only {
            return Err("route with an empty condition needs an 'id' (or use '*')".to_string());
        }
        route.id = default_id(&route);
    }

    for section in targets {
        route.targets.push(parse_target(section, &mut ignored)?);
    }

    Ok(ParsedRoute {
        route,
        id_only,
        ignored,
    })
}

fn parse_yes_no(p: &lex::RawProp) -> Result<bool, String> {
    let v = valued(p)?;
    if v.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(bad_value(p, "yes or no"))
    }
}

/// `header=Name:Value`: split at the first `:`, value trimmed (empty removes the header).
fn parse_header(p: &lex::RawProp) -> Result<(String, String), String> {
    let v = valued(p)?;
    let Some((name, value)) = v.split_once(':') else {
        return Err(bad_value(p, "Name:Value"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("empty header name in '{}'", p.display()));
    }
    if !name.bytes().all(is_tchar) {
        return Err(format!("invalid header name '{name}' in '{}'", p.display()));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Default id: `host,proto,ssl,path_beg`, `*` for anything unspecified (Pushpin's layout;
/// Pushpin spells ssl as `ssl`/`no-ssl` but swapped, here `ssl=yes` gives `ssl`).
fn default_id(r: &Route) -> String {
    let host = r.host.as_deref().unwrap_or("*");
    let proto = match r.proto {
        Some(Proto::Http) => "http",
        Some(Proto::Ws) => "ws",
        None => "*",
    };
    let ssl = match r.ssl {
        Some(true) => "ssl",
        Some(false) => "no-ssl",
        None => "*",
    };
    let path = r.path_beg.as_deref().unwrap_or("*");
    format!("{host},{proto},{ssl},{path}")
}

/// A DNS name or IPv4 address: ASCII letters, digits, `-`, `.`, `_`.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Parses a port: decimal digits only, 1..=65535.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

/// Why a `host[:port]` string is bad.
enum HostPortError {
    Host,
    Port,
}

/// Splits and validates `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address;
/// returns the host (no brackets) and the port if any.
fn check_host_port(v: &str) -> Result<(&str, Option<u16>), HostPortError> {
    let port = |s: &str| parse_port(s).ok_or(HostPortError::Port);
    if let Some(rest) = v.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(HostPortError::Host)?;
        host.parse::<Ipv6Addr>().map_err(|_| HostPortError::Host)?;
        let p = match after {
            "" => None,
            a => Some(port(a.strip_prefix(':').ok_or(HostPortError::Port)?)?),
        };
        return Ok((host, p));
    }
    if v.matches(':').count() > 1 {
        v.parse::<Ipv6Addr>().map_err(|_| HostPortError::Host)?;
        return Ok((v, None));
    }
    let (host, p) = match v.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (v, None),
    };
    if !is_host_name(host) {
        return Err(HostPortError::Host);
    }
    Ok((host, p))
}

/// Condition host: lower-cased, port and v6 brackets stripped.
fn parse_condition_host(v: &str) -> Result<String, String> {
    match check_host_port(v) {
        Ok((host, _)) => Ok(host.to_ascii_lowercase()),
        Err(HostPortError::Host) => Err(format!("invalid host in condition '{v}'")),
        Err(HostPortError::Port) => Err(format!("invalid port in condition '{v}'")),
    }
}

fn parse_target_addr(section: &lex::RawSection) -> Result<TargetAddr, String> {
    let v = section.value.as_str();
    if v.is_empty() {
        return Err(format!("target has no address ('{}')", section.display()));
    }
    if v == "test" {
        return Ok(TargetAddr::Test);
    }
    if v.starts_with("zhttp/") || v.starts_with("zhttpreq/") {
        return Err(format!("zhttp targets are not supported ('{v}')"));
    }
    if !v.starts_with('[') && v.matches(':').count() > 1 {
        return Err(format!(
            "IPv6 target must be bracketed as '[addr]:port' (got '{v}')"
        ));
    }
    match check_host_port(v) {
        Ok((host, Some(port))) => Ok(TargetAddr::Host {
            host: host.to_string(),
            port,
        }),
        Ok((_, None)) => Err(format!("missing port in target '{v}'")),
        Err(HostPortError::Host) => Err(format!("invalid host in target '{v}'")),
        Err(HostPortError::Port) => Err(format!("invalid port in target '{v}'")),
    }
}

fn parse_target(section: &lex::RawSection, ignored: &mut Vec<String>) -> Result<Target, String> {
    let mut target = Target {
        addr: parse_target_addr(section)?,
        ssl: false,
        insecure: false,
        host: None,
        over_http: false,
        one_event: false,
        sub: Vec::new(),
    };
    let mut seen = Seen::default();
    for p in &section.props {
        let name = p.name.as_str();
        if IGNORED_TARGET_PROPS.contains(&name) {
            ignored.push(p.name.clone());
            continue;
        }
        if name != "sub" {
            seen.once(name)?;
        }
        match name {
            "ssl" => target.ssl = flag(p)?,
            "insecure" => target.insecure = flag(p)?,
            "host" => {
                let v = valued(p)?;
                check_host_port(v).map_err(|_| bad_value(p, "host[:port]"))?;
                target.host = Some(v.to_string());
            }
            "over_http" => target.over_http = flag(p)?,
            "one_event" => target.one_event = flag(p)?,
            "sub" => target.sub.push(non_empty(p)?),
            "client_cert" | "client_key" | "ipc_file_mode" => {
                return Err(format!("target property '{name}' is not supported"));
            }
            _ => return Err(format!("unknown target property '{name}'")),
        }
    }
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RouteTable {
        match RouteTable::parse(text) {
            Ok(t) => t,
            Err(e) => panic!("parse failed: {e}\n{text}"),
        }
    }

    fn parse_err(text: &str) -> RoutesError {
        match RouteTable::parse(text) {
            Ok(t) => panic!("expected an error for {text:?}, got {t:?}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn assert_err(text: &str, line: usize, needles: &[&str]) {
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

    fn req<'a>(host: &'a str, path: &'a str, ws: bool, tls: bool) -> RouteRequest<'a> {
        RouteRequest {
            host,
            path,
            ws,
            tls,
        }
    }

    /// Resolves a plain-HTTP, non-TLS request and returns the route's line.
    fn line_for(t: &RouteTable, host: &str, path: &str) -> Option<usize> {
        t.resolve(&req(host, path, false, false)).map(|r| r.line)
    }

    fn hp(host: &str, port: u16) -> TargetAddr {
        TargetAddr::Host {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn minimal_route() {
        let t = parse("* 127.0.0.1:8080\n");
        assert_eq!(t.routes().len(), 1);
        let r = &t.routes()[0];
        assert_eq!(r.line, 1);
        assert_eq!(r.host, None);
        assert_eq!(r.id, "*,*,*,*");
        assert_eq!(r.proto, None);
        assert_eq!(r.ssl, None);
        assert_eq!(
            r.targets,
            vec![Target {
                addr: hp("127.0.0.1", 8080),
                ssl: false,
                insecure: false,
                host: None,
                over_http: false,
                one_event: false,
                sub: vec![],
            }]
        );
        assert!(!r.aco && !r.no_grip && !r.authz && !r.debug);
        assert_eq!(line_for(&t, "anything.example", "/x"), Some(1));
        assert_eq!(t.by_id("*,*,*,*").map(|r| r.line), Some(1));
    }

    #[test]
    fn empty_file_and_comments_only() {
        let t = parse("");
        assert!(t.routes().is_empty());
        assert_eq!(line_for(&t, "a", "/"), None);
        let t = parse("# nothing\n\n   \n\t# still nothing\n");
        assert!(t.routes().is_empty());
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let text = "# routes\n\n* 1.1.1.1:80 # default\n   \n# api\n*,path_beg=/api 2.2.2.2:80\n";
        let t = parse(text);
        let lines: Vec<usize> = t.routes().iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 6]);
        assert_eq!(t.routes()[0].targets.len(), 1);
        // errors count lines the same way
        assert_err("# c\n\n* 1.1.1.1:80\n*,bogus 1.1.1.1:80\n", 4, &["'bogus'"]);
    }

    #[test]
    fn crlf_line_endings() {
        let t = parse("* 1.1.1.1:80\r\n*,path_beg=/a 2.2.2.2:80\r\n");
        assert_eq!(t.routes().len(), 2);
        assert_eq!(t.routes()[1].path_beg.as_deref(), Some("/a"));
        assert_eq!(t.routes()[1].targets[0].addr, hp("2.2.2.2", 80));
    }

    #[test]
    fn quoting_and_escapes() {
        let t = parse(concat!(
            r#"*,header="X-Note: a, b # c",id="my \"id\" \\ x" 127.0.0.1:80,sub="chan one""#,
            "\n"
        ));
        let r = &t.routes()[0];
        assert_eq!(
            r.headers,
            vec![("X-Note".to_string(), "a, b # c".to_string())]
        );
        assert_eq!(r.id, r#"my "id" \ x"#);
        assert_eq!(r.targets[0].sub, vec!["chan one".to_string()]);
        assert!(t.by_id(r#"my "id" \ x"#).is_some());
    }

    #[test]
    fn every_condition_prop() {
        let t = parse(concat!(
            "api.example.com,proto=ws,ssl=no,path_beg=/p/,id=r1,replace_beg=/,",
            "as_host=example.org:8443,header=\"X-A:  1 \",header=\"X-B:\",prefix=pre-,",
            "sig_key=base64:c2VjcmV0,sig_iss=iss,aco,no_grip,authz,debug 127.0.0.1:80\n",
            "*,path_rem=4 127.0.0.1:81\n",
        ));
        let r = &t.routes()[0];
        assert_eq!(r.id, "r1");
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
        assert_eq!(r.proto, Some(Proto::Ws));
        assert_eq!(r.ssl, Some(false));
        assert_eq!(r.path_beg.as_deref(), Some("/p/"));
        assert_eq!(r.replace_beg.as_deref(), Some("/"));
        assert_eq!(r.path_rem, None);
        assert_eq!(r.as_host.as_deref(), Some("example.org:8443"));
        assert_eq!(
            r.headers,
            vec![
                ("X-A".to_string(), "1".to_string()),
                ("X-B".to_string(), String::new()),
            ]
        );
        assert_eq!(r.prefix.as_deref(), Some("pre-"));
        assert_eq!(r.sig_key.as_deref(), Some("base64:c2VjcmV0"));
        assert_eq!(r.sig_iss.as_deref(), Some("iss"));
        assert!(r.aco && r.no_grip && r.authz && r.debug);
        assert!(!r.authz_fail_open);
        let fail_open = RouteTable::parse("*,authz,authz_fail=open a:1\n").expect("valid");
        assert!(fail_open.routes()[0].authz_fail_open);
        let err = RouteTable::parse("*,authz_fail=maybe a:1\n").expect_err("invalid");
        assert!(err.reason.contains("authz_fail"), "{}", err.reason);
        assert!(t.ignored_props().is_empty());

        let r = &t.routes()[1];
        assert_eq!(r.path_rem, Some(4));
        assert!(!r.aco && !r.no_grip && !r.authz && !r.debug);
    }

    #[test]
    fn proto_and_ssl_values() {
        let t = parse(
            "*,proto=http,ssl=yes a:1\n*,proto=ws,ssl=no b:1\n*,proto=HTTP,path_beg=/x c:1\n",
        );
        assert_eq!(t.routes()[0].proto, Some(Proto::Http));
        assert_eq!(t.routes()[0].ssl, Some(true));
        assert_eq!(t.routes()[1].proto, Some(Proto::Ws));
        assert_eq!(t.routes()[1].ssl, Some(false));
        assert_eq!(t.routes()[2].proto, Some(Proto::Http));
    }

    #[test]
    fn every_target_prop() {
        let t = parse(concat!(
            "* [::1]:8080,ssl,insecure,host=origin.example:443,over_http,one_event,",
            "sub=a,sub=b,trust_connect_host,untrusted 10.0.0.2:9000 test\n",
        ));
        let r = &t.routes()[0];
        assert_eq!(r.targets.len(), 3);
        assert_eq!(
            r.targets[0],
            Target {
                addr: hp("::1", 8080),
                ssl: true,
                insecure: true,
                host: Some("origin.example:443".to_string()),
                over_http: true,
                one_event: true,
                sub: vec!["a".to_string(), "b".to_string()],
            }
        );
        assert_eq!(r.targets[1].addr, hp("10.0.0.2", 9000));
        assert!(!r.targets[1].ssl && !r.targets[1].over_http);
        assert_eq!(r.targets[2].addr, TargetAddr::Test);
        assert_eq!(
            t.ignored_props(),
            &[
                (1, "trust_connect_host".to_string()),
                (1, "untrusted".to_string())
            ]
        );
    }

    #[test]
    fn ipv6_and_host_targets() {
        let t =
            parse("* [2001:db8::1]:443,ssl example.com:80 localhost:65535 [::ffff:1.2.3.4]:1\n");
        let addrs: Vec<&TargetAddr> = t.routes()[0].targets.iter().map(|t| &t.addr).collect();
        assert_eq!(
            addrs,
            vec![
                &hp("2001:db8::1", 443),
                &hp("example.com", 80),
                &hp("localhost", 65535),
                &hp("::ffff:1.2.3.4", 1),
            ]
        );
        assert!(t.routes()[0].targets[0].ssl);
    }

    #[test]
    fn ignored_pushpin_condition_props() {
        let t = parse(concat!(
            "# line 1\n",
            "*,jsonp_mode=basic,jsonp_cb=cb,jsonp_body=b,jsonp_defcb=d,jsonp_defmethod=POST,",
            "orig_headers,session,sockjs=/sockjs,sockjs_as_path=/ws,log_level=3,untrusted,aco ",
            "127.0.0.1:80\n",
        ));
        let names: Vec<&str> = t.ignored_props().iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "orig_headers",
                "session",
                "sockjs",
                "sockjs_as_path",
                "log_level",
                "untrusted",
            ]
        );
        assert!(t.ignored_props().iter().all(|(line, _)| *line == 2));
        assert!(t.routes()[0].aco);
        assert_eq!(
            t.routes()[0].jsonp,
            JsonpConfig {
                extended: false,
                callback_param: "cb".into(),
                body_param: Some("b".into()),
                default_callback: Some("d".into()),
                default_method: "POST".into(),
            }
        );
    }

    #[test]
    fn jsonp_options() {
        let t = parse(
            "*,aco 127.0.0.1:80
*,path_beg=/b,jsonp_mode=basic 127.0.0.1:80
",
        );
        assert_eq!(t.routes()[0].jsonp, JsonpConfig::default());
        assert_eq!(t.routes()[1].jsonp.default_method, "POST");
        for bad in [
            "*,jsonp_mode=x 1.1.1.1:1
",
            "*,jsonp_defmethod=G-T 1.1.1.1:1
",
        ] {
            assert!(RouteTable::parse(bad).is_err(), "{bad}");
        }
    }

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
    fn default_ids() {
        let t = parse(concat!(
            "Example.com:8080 a:1\n",
            "example.com,proto=ws,ssl=yes,path_beg=/ws a:1\n",
            "*,proto=http,ssl=no a:1\n",
            "*,id=custom,path_beg=/c a:1\n",
        ));
        let ids: Vec<&str> = t.routes().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "example.com,*,*,*",
                "example.com,ws,ssl,/ws",
                "*,http,no-ssl,*",
                "custom",
            ]
        );
        assert_eq!(t.by_id("example.com,ws,ssl,/ws").map(|r| r.line), Some(2));
        assert!(t.by_id("nope").is_none());
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
    fn rewrite_replace_beg() {
        let t = parse("*,path_beg=/aco/,replace_beg=/ 127.0.0.1:80\n");
        let r = &t.routes()[0];
        assert_eq!(r.rewrite_path("/aco/response?x=1"), "/response?x=1");
        assert_eq!(r.rewrite_path("/aco/response"), "/response");
        assert_eq!(r.rewrite_path("/aco/"), "/");
        // not under path_beg: untouched
        assert_eq!(r.rewrite_path("/other?aco/=1"), "/other?aco/=1");

        let t = parse(
            "*,path_beg=/v1/,replace_beg=/api/v2/ a:1\n*,path_beg=/strip/,replace_beg= a:1\n",
        );
        assert_eq!(
            t.routes()[0].rewrite_path("/v1/items?q=1"),
            "/api/v2/items?q=1"
        );
        assert_eq!(t.routes()[1].rewrite_path("/strip/x"), "/x");
    }

    #[test]
    fn rewrite_path_rem() {
        let t = parse("*,path_rem=4 127.0.0.1:80\n");
        let r = &t.routes()[0];
        assert_eq!(r.rewrite_path("/api/items?q=/a"), "/items?q=/a");
        assert_eq!(r.rewrite_path("/api?a=1"), "/?a=1");
        assert_eq!(r.rewrite_path("/a?a=1"), "/?a=1");
        let t = parse("*,path_rem=5 127.0.0.1:80\n");
        assert_eq!(t.routes()[0].rewrite_path("/api/x"), "/x");
        assert_eq!(t.routes()[0].rewrite_path("/apixyz"), "/yz");
        let t = parse("*,path_rem=0 127.0.0.1:80\n");
        assert_eq!(t.routes()[0].rewrite_path("/same?x"), "/same?x");
    }

    #[test]
    fn rewrite_without_rules() {
        let t = parse("* 127.0.0.1:80\n");
        let r = &t.routes()[0];
        assert_eq!(r.rewrite_path("/a/b?c=d"), "/a/b?c=d");
        assert_eq!(r.rewrite_path(""), "/");
        assert_eq!(r.rewrite_path("?x=1"), "/?x=1");
    }

    #[test]
    fn rewrite_both_rules_applies_path_rem_first() {
        // The parser rejects this combination, but a hand-built Route still behaves predictably.
        let mut r = parse("*,path_beg=/a/ 127.0.0.1:80\n").routes()[0].clone();
        r.path_rem = Some(2);
        r.replace_beg = Some("/z/".to_string());
        assert_eq!(r.rewrite_path("/x/a/b?q"), "/z/b?q");
    }

    #[test]
    fn condition_errors() {
        let cases: &[(&str, &[&str])] = &[
            ("*\n", &["route has no target"]),
            ("example.com,aco # no target\n", &["route has no target"]),
            ("*,foo=1 a:1\n", &["unknown condition property 'foo'"]),
            (
                "*,over_http a:1\n",
                &["unknown condition property 'over_http'"],
            ),
            ("*,aco=1 a:1\n", &["'aco'", "aco=1"]),
            ("*,no_grip=yes a:1\n", &["'no_grip'", "no_grip=yes"]),
            ("*,authz=true a:1\n", &["'authz'", "authz=true"]),
            ("*,debug= a:1\n", &["'debug'", "takes no value"]),
            ("*,proto=tcp a:1\n", &["'tcp'", "'proto'"]),
            ("*,proto a:1\n", &["'proto'", "requires a value"]),
            ("*,ssl=maybe a:1\n", &["'maybe'", "'ssl'"]),
            ("*,path_beg= a:1\n", &["'path_beg'", "empty"]),
            ("*,path_beg=api a:1\n", &["'api'", "'path_beg'"]),
            ("*,replace_beg=/ a:1\n", &["'replace_beg'", "'path_beg'"]),
            (
                "*,path_beg=/a,replace_beg=/,path_rem=2 a:1\n",
                &["'path_rem'", "'replace_beg'"],
            ),
            ("*,path_rem=-1 a:1\n", &["'-1'", "'path_rem'"]),
            ("*,path_rem=x a:1\n", &["'x'", "'path_rem'"]),
            ("*,path_rem=99999999999999999999999 a:1\n", &["'path_rem'"]),
            ("*,as_host=\"a b\" a:1\n", &["'a b'", "'as_host'"]),
            ("*,as_host=h:99999 a:1\n", &["'h:99999'", "'as_host'"]),
            ("*,as_host= a:1\n", &["'as_host'"]),
            ("*,header=NoColon a:1\n", &["'NoColon'", "Name:Value"]),
            ("*,header=:v a:1\n", &["empty header name", "header=:v"]),
            ("*,header=\"Bad Name:v\" a:1\n", &["'Bad Name'"]),
            ("*,header a:1\n", &["'header'", "requires a value"]),
            ("*,id= a:1\n", &["'id'", "empty"]),
            ("*,sig_key= a:1\n", &["'sig_key'", "empty"]),
            ("*,sig_iss= a:1\n", &["'sig_iss'", "empty"]),
            (
                "*,path_beg=/a,path_beg=/b a:1\n",
                &["duplicate property 'path_beg'"],
            ),
            ("*,aco,aco a:1\n", &["duplicate property 'aco'"]),
            (
                "*.example.com a:1\n",
                &["invalid host in condition '*.example.com'"],
            ),
            ("exa$mple.com a:1\n", &["'exa$mple.com'"]),
            (
                "example.com:abc a:1\n",
                &["invalid port in condition 'example.com:abc'"],
            ),
            ("[zz]:80 a:1\n", &["invalid host in condition '[zz]:80'"]),
            ("*,,aco a:1\n", &["empty property name"]),
            ("*, a:1\n", &["empty property name"]),
            ("*,id=\"abc 1.2.3.4:80\n", &["unterminated quote"]),
            ("*,id=\"a\\tb\" 1.2.3.4:80\n", &["invalid escape", "\\t"]),
            ("*\u{7} 1.2.3.4:80\n", &["control character"]),
        ];
        for (text, needles) in cases {
            assert_err(text, 1, needles);
        }
    }

    #[test]
    fn target_errors() {
        let cases: &[(&str, &[&str])] = &[
            (
                "* 1.2.3.4:99999\n",
                &["invalid port in target '1.2.3.4:99999'"],
            ),
            ("* 1.2.3.4:0\n", &["invalid port in target '1.2.3.4:0'"]),
            ("* 1.2.3.4:+80\n", &["invalid port in target '1.2.3.4:+80'"]),
            ("* 1.2.3.4:\n", &["invalid port in target '1.2.3.4:'"]),
            ("* 1.2.3.4\n", &["missing port in target '1.2.3.4'"]),
            ("* origin\n", &["missing port in target 'origin'"]),
            ("* ::1:80\n", &["bracketed", "'::1:80'"]),
            ("* [zz]:80\n", &["invalid host in target '[zz]:80'"]),
            ("* [::1\n", &["invalid host in target '[::1'"]),
            ("* [::1]\n", &["missing port in target '[::1]'"]),
            ("* [::1]80\n", &["invalid port in target '[::1]80'"]),
            ("* :80\n", &["invalid host in target ':80'"]),
            (
                "* zhttp/tcp://1.2.3.4:5000\n",
                &["zhttp targets are not supported"],
            ),
            (
                "* zhttpreq/tcp://1.2.3.4:5000\n",
                &["zhttp targets are not supported"],
            ),
            (
                "* a:1,client_cert=/c.pem\n",
                &["'client_cert'", "not supported"],
            ),
            (
                "* a:1,client_key=/k.pem\n",
                &["'client_key'", "not supported"],
            ),
            (
                "* a:1,ipc_file_mode=777\n",
                &["'ipc_file_mode'", "not supported"],
            ),
            ("* a:1,foo\n", &["unknown target property 'foo'"]),
            (
                "* a:1,path_beg=/x\n",
                &["unknown target property 'path_beg'"],
            ),
            ("* a:1,ssl=yes\n", &["'ssl'", "ssl=yes"]),
            ("* a:1,over_http=1\n", &["'over_http'", "over_http=1"]),
            ("* a:1,insecure=1\n", &["'insecure'"]),
            ("* a:1,one_event=1\n", &["'one_event'"]),
            ("* a:1,sub=\n", &["'sub'", "empty"]),
            ("* a:1,sub\n", &["'sub'", "requires a value"]),
            ("* a:1,host=\n", &["'host'"]),
            ("* a:1,host=\"x y\"\n", &["'x y'", "'host'"]),
            ("* a:1,ssl,ssl\n", &["duplicate property 'ssl'"]),
            ("* host=foo\n", &["target has no address", "host=foo"]),
            ("* a:1,\n", &["empty property name"]),
        ];
        for (text, needles) in cases {
            assert_err(text, 1, needles);
        }
    }

    #[test]
    fn first_error_wins_and_whole_file_is_rejected() {
        let e = parse_err("* 1.1.1.1:80\n*,path_beg=/a 1.1.1.1:99999\n*,nope 1.1.1.1:80\n");
        assert_eq!(e.line, 2);
        assert_eq!(
            e.to_string(),
            "line 2: invalid port in target '1.1.1.1:99999'"
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
