//! Publishing through the Pushpin-compatible HTTP API (`POST /publish/`, batched) or
//! gripmesh's gRPC `Publisher.PublishStream`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proto::v1::{
    HttpResponseFormat, HttpStreamFormat, Item, PublishReply, PublishRequest, WsMessageFormat,
    publisher_client::PublisherClient, ws_message_format::Payload,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clients::Transport;
use crate::msg;

/// Which publish API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Api {
    /// `POST /publish/` with `{"items":[...]}`.
    Http,
    /// `gripmesh.v1.Publisher/PublishStream`.
    Grpc,
    /// Nchan's publisher location: `POST /pub?id=CHANNEL` with the payload as the raw body,
    /// one item per call.
    Nchan,
}

/// Which formats every item carries (only those the run's clients use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Formats {
    /// `ws-message`.
    pub ws: bool,
    /// `http-stream`.
    pub stream: bool,
    /// `http-stream` content framed as SSE (`data: …\n\n`); stream clients accept it too.
    pub sse: bool,
    /// `http-response`.
    pub response: bool,
}

impl Formats {
    /// The formats `transports` need.
    pub(crate) fn for_transports(transports: &[Transport]) -> Formats {
        let mut f = Formats::default();
        for t in transports {
            match t {
                Transport::Ws => f.ws = true,
                Transport::Stream => f.stream = true,
                Transport::Sse => f.sse = true,
                Transport::Poll => f.response = true,
            }
        }
        f
    }

    fn stream_content(&self, payload: &str, id: Option<&str>) -> Option<String> {
        if self.sse {
            Some(match id {
                Some(id) => format!("id: {id}\ndata: {payload}\n\n"),
                None => format!("data: {payload}\n\n"),
            })
        } else if self.stream {
            Some(format!("{payload}\n"))
        } else {
            None
        }
    }
}

/// What an item carries besides its payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extra<'a> {
    /// The item's `id` (SSE events carry it as their `id:` line too, for `Last-Event-ID`).
    pub id: Option<&'a str>,
    /// Publish meta `sender` (what the `skip-self` filter compares with sub meta `user`).
    pub sender: Option<&'a str>,
}

/// How a run's items are labelled: ids `PREFIX-<seq hex>` and a publish meta `sender`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Labels {
    /// Give every item an id with this prefix.
    pub id_prefix: Option<String>,
    /// Publish meta `sender` on every item.
    pub sender: Option<String>,
}

impl Labels {
    /// The id of the item with sequence number `seq`.
    pub(crate) fn id(&self, seq: u64) -> Option<String> {
        self.id_prefix.as_ref().map(|p| format!("{p}-{seq:x}"))
    }
}

/// Appends one JSON item to `out`. `channel_json` is the JSON-quoted channel name; payloads are
/// printable ASCII without quotes or backslashes ([`msg::encode`]), so only `\n` is escaped.
pub(crate) fn push_json_item(
    out: &mut String,
    channel_json: &str,
    payload: &str,
    f: Formats,
    extra: Extra<'_>,
) {
    let quoted = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".to_owned());
    out.push_str("{\"channel\":");
    out.push_str(channel_json);
    if let Some(id) = extra.id {
        out.push_str(",\"id\":");
        out.push_str(&quoted(id));
    }
    if let Some(sender) = extra.sender {
        out.push_str(",\"meta\":{\"sender\":");
        out.push_str(&quoted(sender));
        out.push('}');
    }
    out.push_str(",\"formats\":{");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    if f.ws {
        sep(out);
        out.push_str("\"ws-message\":{\"content\":\"");
        out.push_str(payload);
        out.push_str("\"}");
    }
    if let Some(c) = f.stream_content(payload, extra.id) {
        sep(out);
        out.push_str("\"http-stream\":{\"content\":");
        out.push_str(&quoted(&c));
        out.push('}');
    }
    if f.response {
        sep(out);
        out.push_str("\"http-response\":{\"body\":\"");
        out.push_str(payload);
        out.push_str("\"}");
    }
    out.push_str("}}");
}

/// One gRPC item.
pub(crate) fn grpc_item(channel: &str, payload: &str, f: Formats, extra: Extra<'_>) -> Item {
    Item {
        channel: channel.to_owned(),
        id: extra.id.unwrap_or_default().to_owned(),
        meta: extra
            .sender
            .map(|s| [("sender".to_owned(), s.to_owned())].into_iter().collect())
            .unwrap_or_default(),
        ws_message: f.ws.then(|| WsMessageFormat {
            payload: Some(Payload::Text(payload.to_owned())),
            ..Default::default()
        }),
        http_stream: f
            .stream_content(payload, extra.id)
            .map(|c| HttpStreamFormat {
                content: c.into_bytes().into(),
                close: false,
            }),
        http_response: f.response.then(|| HttpResponseFormat {
            body: Bytes::copy_from_slice(payload.as_bytes()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One publish call's items: `(channel index, messages)` runs, channel-major, with sequence
/// numbers `seq_base..seq_base+messages` on each channel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch {
    /// `(channel index, first message number, count)`.
    pub runs: Vec<(usize, u64, u64)>,
}

impl Batch {
    /// Items in the batch.
    pub(crate) fn items(&self) -> u64 {
        self.runs.iter().map(|r| r.2).sum()
    }
}

/// Splits one tick's `(channel, first message number, count)` runs into batches of at most
/// `max_items`, in order.
pub(crate) fn plan_tick(runs: &[(usize, u64, u64)], max_items: u64) -> Vec<Batch> {
    let max_items = max_items.max(1);
    let mut out = Vec::new();
    let mut cur = Batch::default();
    let mut room = max_items;
    for &(ch, first, count) in runs {
        let mut n = first;
        let mut left = count;
        while left > 0 {
            let take = left.min(room);
            cur.runs.push((ch, n, take));
            n += take;
            left -= take;
            room -= take;
            if room == 0 {
                out.push(std::mem::take(&mut cur));
                room = max_items;
            }
        }
    }
    if !cur.runs.is_empty() {
        out.push(cur);
    }
    out
}

/// The outcome of one publish call.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Items the server accepted.
    pub accepted: u64,
    /// Error text when it refused or failed.
    pub error: Option<String>,
    /// Call duration.
    pub elapsed: Duration,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type GrpcHttp = Client<HttpConnector, tonic::body::Body>;

/// A publisher for a run.
pub(crate) enum Publisher {
    /// HTTP API.
    Http {
        /// Connection pool.
        client: HttpClient,
        /// `http://host:port/publish/`.
        url: http::Uri,
    },
    /// One gRPC `PublishStream` call.
    Grpc {
        /// Requests go here.
        tx: mpsc::Sender<PublishRequest>,
        /// Replies, one per request, in order.
        replies: tonic::Streaming<PublishReply>,
    },
    /// Nchan: one `POST {base}/pub?id=CHANNEL` per item.
    Nchan {
        /// Connection pool.
        client: HttpClient,
        /// `http://host:port`.
        base: String,
    },
}

/// Nchan's publish URL for `channel` (`base` is `http://host:port`).
pub(crate) fn nchan_url(base: &str, channel: &str) -> Result<http::Uri> {
    let mut path = String::from("/pub?id=");
    for b in channel.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    base_uri(base, &path)
}

/// A pooled HTTP/1.1 client for the publish API.
pub(crate) fn http_client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(c)
}

/// `http://host:port` or `host:port` ⇒ an `http` URI with `path`.
pub(crate) fn base_uri(base: &str, path: &str) -> Result<http::Uri> {
    let b = if base.contains("://") {
        base.trim_end_matches('/').to_owned()
    } else {
        format!("http://{base}")
    };
    format!("{b}{path}")
        .parse()
        .with_context(|| format!("bad URL {base}"))
}

/// Opens a `PublishStream` call to `base` (`http://host:port`).
pub(crate) async fn grpc_stream(
    base: &str,
) -> Result<(mpsc::Sender<PublishRequest>, tonic::Streaming<PublishReply>)> {
    let uri = base_uri(base, "")?;
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    let http: GrpcHttp = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(c);
    let mut client = PublisherClient::with_origin(http, uri);
    let (tx, rx) = mpsc::channel::<PublishRequest>(4096);
    // An empty request first, so the call is established whatever the server does with headers.
    tx.send(PublishRequest { items: vec![] })
        .await
        .map_err(|_| anyhow!("channel closed"))?;
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut replies = client
        .publish_stream(stream)
        .await
        .map_err(|s| anyhow!("PublishStream: {}", s.message()))?
        .into_inner();
    match replies.message().await {
        Ok(Some(r)) if r.error.is_empty() => {}
        Ok(Some(r)) => bail!("PublishStream: {}", r.error),
        Ok(None) => bail!("PublishStream ended at once"),
        Err(s) => bail!("PublishStream: {}", s.message()),
    }
    Ok((tx, replies))
}

/// POSTs one JSON body; `items` accepted on 200.
pub(crate) async fn post(client: &HttpClient, url: &http::Uri, body: Bytes, items: u64) -> Outcome {
    post_as(client, url, "application/json", body, items).await
}

/// POSTs one body of `content_type`; `items` accepted on a 2xx.
pub(crate) async fn post_as(
    client: &HttpClient,
    url: &http::Uri,
    content_type: &'static str,
    body: Bytes,
    items: u64,
) -> Outcome {
    let started = Instant::now();
    let req = http::Request::post(url.clone())
        .header("content-type", content_type)
        .body(Full::new(body));
    let res = match req {
        Ok(req) => client.request(req).await.map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.to_string()),
    };
    let (accepted, error) = match res {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            if status.is_success() {
                (items, None)
            } else {
                let text = body.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
                (
                    0,
                    Some(format!("HTTP {status}: {}", text.unwrap_or_default())),
                )
            }
        }
        Err(e) => (0, Some(e)),
    };
    Outcome {
        accepted,
        error,
        elapsed: started.elapsed(),
    }
}

impl Publisher {
    /// A publisher on `api`: HTTP (and Nchan) at `publish` or gRPC at `grpc`.
    pub(crate) async fn new(api: Api, publish: &str, grpc: Option<&str>) -> Result<Publisher> {
        Ok(match api {
            Api::Nchan => Publisher::Nchan {
                client: http_client(),
                base: publish.to_owned(),
            },
            Api::Http => Publisher::Http {
                client: http_client(),
                url: base_uri(publish, "/publish/")?,
            },
            Api::Grpc => {
                let g = grpc.ok_or_else(|| anyhow!("--api grpc needs --grpc URL"))?;
                let (tx, replies) = grpc_stream(g).await?;
                Publisher::Grpc { tx, replies }
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    /// Publishes the batches of one tick, stamping each with the current time right before it
    /// is built; returns one outcome per batch.
    pub(crate) async fn publish_tick(
        &mut self,
        batches: &[Batch],
        channels: &[String],
        channels_json: &[String],
        step: usize,
        size: usize,
        formats: Formats,
        labels: &Labels,
    ) -> Vec<Outcome> {
        let tick = Tick {
            channels,
            channels_json,
            step,
            size,
            formats,
            labels,
        };
        match self {
            Publisher::Http { client, url } => tick.http(client, url, batches).await,
            Publisher::Nchan { client, base } => tick.nchan(client, base, batches).await,
            Publisher::Grpc { tx, replies } => tick.grpc(tx, replies, batches).await,
        }
    }
}

/// What one tick's items are made of: channel names, step, payload size, formats and labels.
struct Tick<'a> {
    channels: &'a [String],
    channels_json: &'a [String],
    step: usize,
    size: usize,
    formats: Formats,
    labels: &'a Labels,
}

impl Tick<'_> {
    /// Each batch as one JSON body POSTed to the HTTP API.
    async fn http(&self, client: &HttpClient, url: &http::Uri, batches: &[Batch]) -> Vec<Outcome> {
        let (step, size, formats, labels) = (self.step, self.size, self.formats, self.labels);
        // One call after the other: concurrent calls could overtake each other and
        // break the per-channel order the clients check.
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let ts = msg::now_us();
            let mut body = String::with_capacity(64 + b.items() as usize * (size + 80));
            body.push_str("{\"items\":[");
            let mut first = true;
            for &(ch, n0, cnt) in &b.runs {
                for n in n0..n0 + cnt {
                    if !std::mem::take(&mut first) {
                        body.push(',');
                    }
                    let seq = msg::make_seq(step, n);
                    let p = msg::encode(seq, ts, size);
                    let id = labels.id(seq);
                    let extra = Extra {
                        id: id.as_deref(),
                        sender: labels.sender.as_deref(),
                    };
                    push_json_item(&mut body, &self.channels_json[ch], &p, formats, extra);
                }
            }
            body.push_str("]}");
            out.push(post(client, url, Bytes::from(body), b.items()).await);
        }
        out
    }

    /// Each item as its own POST to Nchan; a batch's outcome sums its items'.
    async fn nchan(&self, client: &HttpClient, base: &str, batches: &[Batch]) -> Vec<Outcome> {
        let (step, size) = (self.step, self.size);
        // One call per item, one after the other (order per channel).
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let started = Instant::now();
            let mut accepted = 0;
            let mut error = None;
            for &(ch, n0, cnt) in &b.runs {
                let url = match nchan_url(base, &self.channels[ch]) {
                    Ok(u) => u,
                    Err(e) => {
                        error.get_or_insert(format!("{e:#}"));
                        continue;
                    }
                };
                for n in n0..n0 + cnt {
                    let p = msg::encode(msg::make_seq(step, n), msg::now_us(), size);
                    let o = post_as(client, &url, "text/plain", Bytes::from(p), 1).await;
                    accepted += o.accepted;
                    if let Some(e) = o.error {
                        error.get_or_insert(e);
                    }
                }
            }
            out.push(Outcome {
                accepted,
                error,
                elapsed: started.elapsed(),
            });
        }
        out
    }

    /// Every batch sent on the gRPC stream as one request, then their replies read in order.
    async fn grpc(
        &self,
        tx: &mpsc::Sender<PublishRequest>,
        replies: &mut tonic::Streaming<PublishReply>,
        batches: &[Batch],
    ) -> Vec<Outcome> {
        let (step, size, formats, labels) = (self.step, self.size, self.formats, self.labels);
        let mut sent = Vec::new();
        for b in batches {
            let ts = msg::now_us();
            let mut items = Vec::with_capacity(b.items() as usize);
            for &(ch, n0, cnt) in &b.runs {
                for n in n0..n0 + cnt {
                    let seq = msg::make_seq(step, n);
                    let p = msg::encode(seq, ts, size);
                    let id = labels.id(seq);
                    let extra = Extra {
                        id: id.as_deref(),
                        sender: labels.sender.as_deref(),
                    };
                    items.push(grpc_item(&self.channels[ch], &p, formats, extra));
                }
            }
            let started = Instant::now();
            let ok = tx.send(PublishRequest { items }).await.is_ok();
            sent.push((started, b.items(), ok));
        }
        let mut out = Vec::new();
        for (started, items, ok) in sent {
            let (accepted, error) = if !ok {
                (0, Some("gRPC stream closed".to_owned()))
            } else {
                match tokio::time::timeout(Duration::from_secs(30), replies.message()).await {
                    Ok(Ok(Some(r))) if r.error.is_empty() => (u64::from(r.accepted), None),
                    Ok(Ok(Some(r))) => (0, Some(r.error)),
                    Ok(Ok(None)) => (0, Some("gRPC stream ended".to_owned())),
                    Ok(Err(s)) => (0, Some(format!("gRPC: {}", s.message()))),
                    Err(_) => (0, Some("gRPC reply timed out".to_owned())),
                }
            };
            let _ = items;
            out.push(Outcome {
                accepted,
                error,
                elapsed: started.elapsed(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_items_are_valid_json() {
        let f = Formats {
            ws: true,
            stream: true,
            sse: true,
            response: true,
        };
        let mut s = String::from("{\"items\":[");
        let p = msg::encode(1, 2, 50);
        push_json_item(&mut s, "\"ch\\\"1\"", &p, f, Extra::default());
        s.push_str("]}");
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        let item = &v["items"][0];
        assert_eq!(item["channel"], "ch\"1");
        assert_eq!(item["formats"]["ws-message"]["content"], p.as_str());
        assert_eq!(
            item["formats"]["http-stream"]["content"],
            format!("data: {p}\n\n")
        );
        assert_eq!(item["formats"]["http-response"]["body"], p.as_str());
        let only_ws = Formats {
            ws: true,
            ..Formats::default()
        };
        let mut s = String::new();
        push_json_item(&mut s, "\"c\"", &p, only_ws, Extra::default());
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert!(v["formats"].get("http-stream").is_none());
        assert!(v.get("id").is_none() && v.get("meta").is_none());
    }

    #[test]
    fn ids_and_sender_in_json_and_grpc_items() {
        let f = Formats {
            ws: true,
            sse: true,
            ..Formats::default()
        };
        let labels = Labels {
            id_prefix: Some("r1".into()),
            sender: Some("pub\"x".into()),
        };
        let id = labels.id(msg::make_seq(1, 10));
        assert_eq!(id.as_deref(), Some("r1-1000000000a"));
        assert_eq!(Labels::default().id(5), None);
        let extra = Extra {
            id: id.as_deref(),
            sender: labels.sender.as_deref(),
        };
        let p = msg::encode(3, 4, 50);
        let mut s = String::new();
        push_json_item(&mut s, "\"c\"", &p, f, extra);
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["id"], "r1-1000000000a");
        assert_eq!(v["meta"]["sender"], "pub\"x");
        assert_eq!(
            v["formats"]["http-stream"]["content"],
            format!("id: r1-1000000000a\ndata: {p}\n\n")
        );
        let g = grpc_item("c", &p, f, extra);
        assert_eq!(g.id, "r1-1000000000a");
        assert_eq!(g.meta.get("sender").map(String::as_str), Some("pub\"x"));
        assert_eq!(
            g.http_stream.map(|h| h.content),
            Some(Bytes::from(format!("id: r1-1000000000a\ndata: {p}\n\n")))
        );
    }

    #[test]
    fn nchan_urls_escape_the_channel() {
        assert_eq!(
            nchan_url("http://127.0.0.1:80", "lt0")
                .expect("url")
                .to_string(),
            "http://127.0.0.1:80/pub?id=lt0"
        );
        assert_eq!(
            nchan_url("127.0.0.1:80", "a b&c").expect("url").to_string(),
            "http://127.0.0.1:80/pub?id=a%20b%26c"
        );
    }

    #[test]
    fn ticks_split_into_batches() {
        let b = plan_tick(&[(0, 10, 2), (1, 10, 2), (2, 10, 2)], 4);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].runs, vec![(0, 10, 2), (1, 10, 2)]);
        assert_eq!(b[1].runs, vec![(2, 10, 2)]);
        let b = plan_tick(&[(0, 0, 5)], 2);
        assert_eq!(
            b.iter().map(|b| b.runs.clone()).collect::<Vec<_>>(),
            vec![vec![(0, 0, 2)], vec![(0, 2, 2)], vec![(0, 4, 1)]]
        );
        assert!(plan_tick(&[], 10).is_empty());
        let many: Vec<_> = (0..1000).map(|c| (c, 0, 1)).collect();
        assert_eq!(plan_tick(&many, 1000).len(), 1);
    }
}
