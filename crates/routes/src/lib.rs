//! Pushpin `routes` files: parsing, validation and request matching.
//!
//! One route per line: `CONDITION TARGET [TARGET...]`, `#` comments, blank lines ignored. Each
//! section is `value[,prop[=val]]...`; values may be double-quoted with `\"` and `\\` escapes.
//! A file with any error is rejected whole; the error names the line and the reason.

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
    /// `debug`: detailed error bodies.
    pub debug: bool,
    /// Targets in failover order (at least one).
    pub targets: Vec<Target>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Parses a whole routes file.
    pub fn parse(text: &str) -> Result<RouteTable, RoutesError> {
        let _ = text;
        todo!()
    }

    /// All routes in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Picks the route for a request, or `None` (the edge answers 502 `No route for host`).
    pub fn resolve(&self, req: &RouteRequest<'_>) -> Option<&Route> {
        let _ = req;
        todo!()
    }

    /// Finds a route by id.
    pub fn by_id(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }
}

impl Route {
    /// The path (and query) to send to the origin after `path_rem` / `replace_beg`.
    pub fn rewrite_path(&self, path_and_query: &str) -> String {
        let _ = path_and_query;
        todo!()
    }
}
