//! The client subcommands: `gripmesh publish` (Pushpin's `pushpin-publish`), `gripmesh routes
//! get|put|watch` and `gripmesh status`. They talk to a running control (HTTP publish API, gRPC
//! `RouteService.Watch`) or a tier's admin listener, local or remote, with the same
//! credentials and `GRIPMESH_*` variables as the servers.

use crate::cli::{
    ControlClientFlags, PublishCmdArgs, PublishFormat, RoutesAction, RoutesCmdArgs, StatusCmdArgs,
};
use crate::common::{Fatal, config_err};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest answer read from a server (route tables and status pages are small).
const MAX_ANSWER: usize = 8 << 20;
/// Largest content read from standard input (control's default --publish-max-body).
const MAX_STDIN: u64 = 1_000_000;

/// A parsed `http[s]://host[:port][/base]` URL.
struct Url {
    endpoint: runtime::client::Endpoint,
    authority: String,
    base: String,
}

fn parse_url(flag: &str, url: &str) -> Result<Url, Fatal> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| config_err(format!("{flag} {url}: {e}")))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(config_err(format!(
                "{flag} {url}: expected http:// or https://"
            )));
        }
    };
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(config_err(format!("{flag} {url}: no host")));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Url {
        endpoint: runtime::client::Endpoint {
            host,
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            insecure: false,
            server_name: None,
        },
        authority: authority.as_str().to_owned(),
        base: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// One HTTP request; returns the status and the whole (bounded) answer.
async fn call(
    url: &Url,
    method: http::Method,
    path: &str,
    headers: &[(http::HeaderName, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), Fatal> {
    let client = runtime::client::HttpClient::new(timeout, timeout)
        .map_err(|e| Fatal::Runtime(format!("TLS setup: {e}")))?;
    let where_ = format!("{}{}{path}", url.authority, url.base);
    let sender = client
        .connect(&url.endpoint)
        .await
        .map_err(|e| Fatal::Runtime(format!("{where_}: {e}")))?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", url.base))
        .header(http::header::HOST, &url.authority)
        .header(
            http::header::USER_AGENT,
            concat!("gripmesh/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req
        .body(runtime::server::full(body))
        .map_err(|e| Fatal::Runtime(format!("request: {e}")))?;
    let resp = client
        .send(sender, req)
        .await
        .map_err(|e| Fatal::Runtime(format!("{where_}: {e}")))?;
    let status = resp.status();
    let collected = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(resp.into_body(), MAX_ANSWER).collect(),
    )
    .await
    .map_err(|_| Fatal::Runtime(format!("{where_}: answer timed out")))?
    .map_err(|e| Fatal::Runtime(format!("{where_}: {e}")))?;
    Ok((status, collected.to_bytes()))
}

/// The `Authorization` header for control, if any.
fn authorization(flags: &ControlClientFlags) -> Result<Option<String>, Fatal> {
    match (&flags.publish_token, &flags.publish_key) {
        (Some(_), Some(_)) => Err(config_err(
            "--publish-token and --publish-key: give only one",
        )),
        (Some(t), None) => Ok(Some(format!("Bearer {t}"))),
        (None, Some(k)) => {
            let key = grip::sig::SigKey::parse(k)
                .map_err(|e| config_err(format!("--publish-key: {e}")))?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Short-lived: one command, one request.
            let jwt = grip::sig::sign(&flags.publish_iss, &key, now, 600);
            Ok(Some(format!("Bearer {jwt}")))
        }
        (None, None) => Ok(None),
    }
}

fn auth_headers(flags: &ControlClientFlags) -> Result<Vec<(http::HeaderName, String)>, Fatal> {
    Ok(authorization(flags)?
        .map(|v| (http::header::AUTHORIZATION, v))
        .into_iter()
        .collect())
}

/// Prints a server's answer on stdout (success) or stderr (failure, exit 1).
fn finish(status: http::StatusCode, body: &[u8], what: &str) -> Result<(), Fatal> {
    let text = String::from_utf8_lossy(body);
    if status.is_success() {
        print!("{text}");
        if !text.ends_with('\n') && !text.is_empty() {
            println!();
        }
        let _ = std::io::stdout().flush();
        Ok(())
    } else {
        Err(Fatal::Runtime(format!(
            "{what}: {} {}",
            status.as_u16(),
            text.trim_end()
        )))
    }
}

/// The item `gripmesh publish` sends (`{"items":[ITEM]}`), as JSON.
pub(crate) fn publish_item(args: &PublishCmdArgs, content: &[u8]) -> Result<Value, Fatal> {
    let mut formats: Vec<PublishFormat> = args.format.clone();
    if formats.is_empty() {
        formats = if args.http_response {
            vec![PublishFormat::HttpResponse]
        } else if args.sse {
            vec![PublishFormat::HttpStream]
        } else if args.close {
            vec![PublishFormat::HttpStream, PublishFormat::WsMessage]
        } else {
            vec![
                PublishFormat::HttpResponse,
                PublishFormat::HttpStream,
                PublishFormat::WsMessage,
            ]
        };
    }
    let eol = |c: &[u8]| {
        let mut v = c.to_vec();
        if !args.no_eol {
            v.push(b'\n');
        }
        v
    };
    let stream_content = if args.sse {
        sse_event(args.event.as_deref(), args.id.as_deref(), content)?
    } else {
        eol(content)
    };
    let mut out = Map::new();
    for f in formats {
        let (name, value) = match f {
            PublishFormat::HttpStream if args.close => ("http-stream", json!({"action": "close"})),
            PublishFormat::HttpStream => ("http-stream", body_field("content", &stream_content)),
            PublishFormat::WsMessage if args.close => {
                let mut v = json!({"action": "close"});
                if let Some(code) = args.code {
                    v["code"] = json!(code);
                }
                ("ws-message", v)
            }
            PublishFormat::WsMessage => ("ws-message", body_field("content", content)),
            PublishFormat::HttpResponse if args.close => {
                return Err(config_err("--close: not for http-response"));
            }
            PublishFormat::HttpResponse => {
                let mut v = body_field("body", &eol(content));
                if let Some(code) = args.code {
                    v["code"] = json!(code);
                }
                if !args.headers.is_empty() {
                    let mut h = Map::new();
                    for line in &args.headers {
                        let Some((name, value)) = line.split_once(':') else {
                            return Err(config_err(format!(
                                "--header {line}: expected 'Name: value'"
                            )));
                        };
                        h.insert(name.trim().to_owned(), json!(value.trim()));
                    }
                    v["headers"] = Value::Object(h);
                }
                ("http-response", v)
            }
        };
        out.insert(name.to_owned(), value);
    }
    let mut item = json!({"channel": args.channel, "formats": out});
    if let Some(id) = &args.id {
        item["id"] = json!(id);
    }
    if let Some(prev) = &args.prev_id {
        item["prev-id"] = json!(prev);
    }
    if !args.meta.is_empty() {
        let mut meta = Map::new();
        for kv in &args.meta {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(config_err(format!("--meta {kv}: expected KEY=VALUE")));
            };
            meta.insert(k.to_owned(), json!(v));
        }
        item["meta"] = Value::Object(meta);
    }
    Ok(item)
}

/// `field` as text, or `field-bin` (base64) when the bytes are not UTF-8.
fn body_field(field: &str, bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ field: text }),
        Err(_) => json!({
            format!("{field}-bin"): base64::engine::general_purpose::STANDARD.encode(bytes)
        }),
    }
}

/// One Server-Sent Event: optional `event:` and `id:` lines, a `data:` line per content line,
/// and the blank line that dispatches it (without it a browser shows nothing and glues the
/// next event onto this one).
pub(crate) fn sse_event(
    event: Option<&str>,
    id: Option<&str>,
    content: &[u8],
) -> Result<Vec<u8>, Fatal> {
    let text = std::str::from_utf8(content)
        .map_err(|_| config_err("--sse: the content must be UTF-8 text"))?;
    let single_line = |flag: &str, v: &str| {
        if v.contains(['\n', '\r']) {
            Err(config_err(format!("{flag}: must be one line")))
        } else {
            Ok(())
        }
    };
    let mut out = String::new();
    if let Some(e) = event {
        single_line("--event", e)?;
        out.push_str(&format!("event: {e}\n"));
    }
    if let Some(i) = id {
        single_line("--id", i)?;
        out.push_str(&format!("id: {i}\n"));
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    for line in text.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Ok(out.into_bytes())
}

fn read_stdin() -> Result<Vec<u8>, Fatal> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Fatal::Runtime(format!("reading standard input: {e}")))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(config_err(format!(
            "standard input: more than {MAX_STDIN} bytes"
        )));
    }
    Ok(buf)
}

/// `gripmesh publish`.
pub(crate) async fn publish(args: PublishCmdArgs) -> Result<(), Fatal> {
    let url = parse_url("--control-url", &args.client.control_url)?;
    let content = match args.content.as_deref() {
        _ if args.close => Vec::new(),
        None | Some("-") => read_stdin()?,
        Some(text) => text.as_bytes().to_vec(),
    };
    let item = publish_item(&args, &content)?;
    let body = json!({ "items": [item] }).to_string();
    let mut headers = auth_headers(&args.client)?;
    headers.push((http::header::CONTENT_TYPE, "application/json".into()));
    let (status, answer) = call(
        &url,
        http::Method::POST,
        "/publish/",
        &headers,
        Bytes::from(body),
        Duration::from_secs(args.client.timeout.max(1)),
    )
    .await?;
    finish(status, &answer, "publish")
}

/// `gripmesh routes get|put|watch`.
pub(crate) async fn routes(args: RoutesCmdArgs) -> Result<(), Fatal> {
    let timeout = Duration::from_secs(args.client.timeout.max(1));
    let headers = auth_headers(&args.client)?;
    match args.action {
        RoutesAction::Get { json } => {
            let url = parse_url("--control-url", &args.client.control_url)?;
            let (status, answer) = call(
                &url,
                http::Method::GET,
                "/routes",
                &headers,
                Bytes::new(),
                timeout,
            )
            .await?;
            if json || !status.is_success() {
                return finish(status, &answer, "routes get");
            }
            let doc: Value = serde_json::from_slice(&answer)
                .map_err(|e| Fatal::Runtime(format!("routes get: not JSON: {e}")))?;
            let text = doc["text"].as_str().unwrap_or_default();
            finish(status, text.as_bytes(), "routes get")
        }
        RoutesAction::Put { file } => {
            let url = parse_url("--control-url", &args.client.control_url)?;
            let text = if file.as_os_str() == "-" {
                read_stdin()?
            } else {
                std::fs::read(&file).map_err(|e| config_err(format!("{}: {e}", file.display())))?
            };
            let (status, answer) = call(
                &url,
                http::Method::PUT,
                "/routes",
                &headers,
                Bytes::from(text),
                timeout,
            )
            .await?;
            finish(status, &answer, "routes put")
        }
        RoutesAction::Watch { grpc_url, count } => {
            watch_routes(&grpc_url, authorization(&args.client)?, count).await
        }
    }
}

/// Follows `RouteService.Watch`, printing `# version N` and the table for each snapshot.
async fn watch_routes(
    grpc_url: &str,
    authorization: Option<String>,
    count: Option<u64>,
) -> Result<(), Fatal> {
    let uri: http::Uri = grpc_url
        .parse()
        .map_err(|e| config_err(format!("--grpc-url {grpc_url}: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(config_err(format!(
            "--grpc-url {grpc_url}: expected http://host:port"
        )));
    }
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let mut client =
        proto::v1::route_service_client::RouteServiceClient::<_>::with_origin(http, uri);
    let mut req = tonic::Request::new(proto::v1::WatchRoutesRequest {});
    if let Some(auth) = authorization {
        let value = auth
            .parse()
            .map_err(|_| config_err("credentials: not a valid header value"))?;
        req.metadata_mut().insert("authorization", value);
    }
    let mut stream = client
        .watch(req)
        .await
        .map_err(|s| Fatal::Runtime(format!("routes watch: {}: {}", s.code(), s.message())))?
        .into_inner();
    let mut seen = 0u64;
    let stop = runtime::signal::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            _ = &mut stop => return Ok(()),
            next = stream.message() => next,
        };
        match next {
            Ok(Some(table)) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "# version {}", table.version);
                let _ = out.write_all(table.text.as_bytes());
                if !table.text.ends_with('\n') {
                    let _ = writeln!(out);
                }
                let _ = out.flush();
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
            }
            Ok(None) => {
                return Err(Fatal::Runtime(
                    "routes watch: control ended the stream".into(),
                ));
            }
            Err(s) => {
                return Err(Fatal::Runtime(format!(
                    "routes watch: {}: {}",
                    s.code(),
                    s.message()
                )));
            }
        }
    }
}

/// `gripmesh status`: readiness and key figures from the admin listener's `/status.json`.
/// Exits 0 when the tier is ready, 1 otherwise.
pub(crate) async fn status(args: StatusCmdArgs) -> Result<(), Fatal> {
    let url = parse_url("--admin-url", &args.admin_url)?;
    let (code, answer) = call(
        &url,
        http::Method::GET,
        "/status.json",
        &[],
        Bytes::new(),
        Duration::from_secs(args.timeout.max(1)),
    )
    .await?;
    if !code.is_success() {
        return finish(code, &answer, "status");
    }
    let doc: Value = serde_json::from_slice(&answer)
        .map_err(|e| Fatal::Runtime(format!("status: not JSON: {e}")))?;
    if args.json {
        println!("{doc}");
    } else {
        print!("{}", status_text(&doc));
    }
    let _ = std::io::stdout().flush();
    if doc["ready"].as_bool() == Some(true) {
        Ok(())
    } else {
        Err(Fatal::Runtime("not ready".into()))
    }
}

/// Sum of the samples of `name` whose labels contain every `label="value"` in `with`.
fn metric(doc: &Value, name: &str, with: &[&str]) -> Option<f64> {
    let metrics = doc["metrics"].as_object()?;
    let mut sum = None;
    for (series, value) in metrics {
        let base = series.split('{').next().unwrap_or_default();
        if base != name || !with.iter().all(|w| series.contains(w)) {
            continue;
        }
        if let Some(v) = value.as_f64() {
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    sum
}

fn status_text(doc: &Value) -> String {
    let mut out = String::new();
    let ready = doc["ready"].as_bool() == Some(true);
    let reasons: Vec<&str> = doc["not_ready"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "{} {} — {}\n",
        doc["tier"].as_str().unwrap_or("?"),
        doc["version"].as_str().unwrap_or("?"),
        if ready {
            "ready".to_owned()
        } else {
            format!("NOT READY: {}", reasons.join("; "))
        }
    ));
    let mut line = |label: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.push_str(&format!("  {label:<28}{v}\n"));
        }
    };
    line("uptime seconds", doc["uptime_seconds"].as_f64());
    line("bus connected", metric(doc, "gripmesh_bus_connected", &[]));
    for t in ["ws", "http-stream", "http-response"] {
        let label = format!("connections {t}");
        let with = format!("transport=\"{t}\"");
        line(&label, metric(doc, "gripmesh_edge_connections", &[&with]));
    }
    line("channels", metric(doc, "gripmesh_edge_channels", &[]));
    line(
        "subscriptions",
        metric(doc, "gripmesh_edge_subscriptions", &[]),
    );
    line(
        "messages sent",
        metric(doc, "gripmesh_edge_messages_sent_total", &[]),
    );
    line(
        "messages dropped",
        metric(doc, "gripmesh_edge_messages_dropped_total", &[]),
    );
    line(
        "items published",
        metric(doc, "gripmesh_control_publish_items_total", &[]),
    );
    line(
        "authz checks",
        metric(doc, "gripmesh_authz_checks_total", &[]),
    );
    let version = doc["routes"]["version"]
        .as_f64()
        .or_else(|| metric(doc, "gripmesh_control_routes_version", &[]))
        .or_else(|| metric(doc, "gripmesh_edge_routes_version", &[]));
    line("routes version", version);
    if let Some(revs) = doc["revocations"].as_array() {
        line("recent revocations", Some(revs.len() as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_framing() {
        let e = sse_event(Some("trade"), Some("7"), b"a\nb\n").expect("sse");
        assert_eq!(e, b"event: trade\nid: 7\ndata: a\ndata: b\n\n");
        let e = sse_event(None, None, b"hello").expect("sse");
        assert_eq!(e, b"data: hello\n\n");
        assert!(sse_event(None, Some("a\nb"), b"x").is_err());
    }
}
