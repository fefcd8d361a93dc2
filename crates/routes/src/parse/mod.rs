//! One line of a routes file: the condition section (host and condition properties) and the
//! target sections, into a [`Route`] before the table-level checks.

mod hostport;
mod props;
mod target;

use crate::lex;
use crate::path;
use crate::route::{JsonpConfig, Proto, Route};
use hostport::{HostPortError, check_host_port};
use props::{Seen, bad_value, flag, non_empty, parse_header, parse_yes_no, valued};
use target::parse_target;

/// A parsed line before table-level checks.
pub(crate) struct ParsedRoute {
    /// The route, with its default id filled in.
    pub(crate) route: Route,
    /// An empty condition: the route is selectable only by id.
    pub(crate) id_only: bool,
    /// Names of accepted-but-ignored Pushpin properties, in line order.
    pub(crate) ignored: Vec<String>,
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

/// Parses one non-empty line's sections: the condition, then at least one target.
pub(crate) fn parse_route(
    line: usize,
    sections: &[lex::RawSection],
) -> Result<ParsedRoute, String> {
    let (cond, targets) = match sections.split_first() {
        Some((cond, targets)) if !targets.is_empty() => (cond, targets),
        _ => return Err("route has no target".to_string()),
    };

    let id_only = cond.value.is_empty();
    let host = match cond.value.as_str() {
        "" | "*" => None,
        v => Some(parse_condition_host(v)?),
    };
    let mut route = blank_route(line, host);
    let mut ignored = Vec::new();
    apply_condition_props(&mut route, cond, &mut ignored)?;
    check_rewrite(&route)?;

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

/// A route with the given condition host and every option at its default.
fn blank_route(line: usize, host: Option<String>) -> Route {
    Route {
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
    }
}

/// Applies the condition section's properties to `route`; ignored Pushpin properties are added
/// to `ignored`.
fn apply_condition_props(
    route: &mut Route,
    cond: &lex::RawSection,
    ignored: &mut Vec<String>,
) -> Result<(), String> {
    let mut jsonp_defmethod: Option<String> = None;
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
        if name.starts_with("jsonp_") {
            apply_jsonp_prop(route, p, &mut jsonp_defmethod)?;
        } else {
            apply_condition_prop(route, p)?;
        }
    }
    // Pushpin: basic mode defaults to POST (its body parameter is the request body).
    route.jsonp.default_method = jsonp_defmethod
        .unwrap_or_else(|| if route.jsonp.extended { "GET" } else { "POST" }.to_owned());
    Ok(())
}

/// One condition property other than the JSON-P ones.
fn apply_condition_prop(route: &mut Route, p: &lex::RawProp) -> Result<(), String> {
    let name = p.name.as_str();
    match name {
        "proto" => route.proto = Some(parse_proto(p)?),
        "ssl" => route.ssl = Some(parse_yes_no(p)?),
        "path_beg" => route.path_beg = Some(parse_path_beg(p)?),
        "id" => route.id = non_empty(p)?,
        "replace_beg" => route.replace_beg = Some(valued(p)?.to_string()),
        "path_rem" => route.path_rem = Some(parse_path_rem(p)?),
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
        _ => return Err(format!("unknown condition property '{name}'")),
    }
    Ok(())
}

/// One `jsonp_*` condition property; `jsonp_defmethod` is kept aside because its default
/// depends on `jsonp_mode`, which may come later on the line.
fn apply_jsonp_prop(
    route: &mut Route,
    p: &lex::RawProp,
    jsonp_defmethod: &mut Option<String>,
) -> Result<(), String> {
    let name = p.name.as_str();
    match name {
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
            *jsonp_defmethod = Some(v.to_ascii_uppercase());
        }
        _ => return Err(format!("unknown condition property '{name}'")),
    }
    Ok(())
}

/// `proto=http|ws` (any case).
fn parse_proto(p: &lex::RawProp) -> Result<Proto, String> {
    let v = valued(p)?;
    if v.eq_ignore_ascii_case("http") {
        Ok(Proto::Http)
    } else if v.eq_ignore_ascii_case("ws") {
        Ok(Proto::Ws)
    } else {
        Err(bad_value(p, "http or ws"))
    }
}

/// `path_beg=`: a non-empty absolute path, kept in canonical form.
fn parse_path_beg(p: &lex::RawProp) -> Result<String, String> {
    let v = non_empty(p)?;
    if !v.starts_with('/') {
        return Err(bad_value(p, "a path starting with '/'"));
    }
    // Request paths are matched in canonical form (see `path`), so the prefix is
    // too: `path_beg=/%70rivate/` means `/private/`.
    path::normalize(&v)
        .map_err(|_| bad_value(p, "a path without %2F, %5C, '\\' or '..' above the root"))
}

/// `path_rem=N`: decimal digits only.
fn parse_path_rem(p: &lex::RawProp) -> Result<usize, String> {
    let v = valued(p)?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_value(p, "a non-negative integer"));
    }
    v.parse().map_err(|_| bad_value(p, "a smaller number"))
}

/// `replace_beg` needs `path_beg` and excludes `path_rem`.
fn check_rewrite(route: &Route) -> Result<(), String> {
    if route.replace_beg.is_some() {
        if route.path_beg.is_none() {
            return Err("property 'replace_beg' requires 'path_beg'".to_string());
        }
        if route.path_rem.is_some() {
            // Pushpin silently lets replace_beg override path_rem; make the conflict explicit.
            return Err("properties 'path_rem' and 'replace_beg' cannot be combined".to_string());
        }
    }
    Ok(())
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

/// Condition host: lower-cased, port and v6 brackets stripped.
fn parse_condition_host(v: &str) -> Result<String, String> {
    match check_host_port(v) {
        Ok((host, _)) => Ok(host.to_ascii_lowercase()),
        Err(HostPortError::Host) => Err(format!("invalid host in condition '{v}'")),
        Err(HostPortError::Port) => Err(format!("invalid port in condition '{v}'")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::test_util::*;
    use crate::*;

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
}
