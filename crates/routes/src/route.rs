//! One route: what a route line holds (condition, options, targets) and the rules that apply
//! to a single route, matching a request's protocol, TLS and path, and rewriting its path.

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
    pub(crate) fn matches(&self, req: &RouteRequest<'_>) -> bool {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::test_util::*;

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
}
