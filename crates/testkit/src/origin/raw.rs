//! Origins on raw TCP, below HTTP parsing: [`RawOrigin`] writes canned bytes (garbage, early
//! close) and [`ScriptedOrigin`] scripts each request's connection handling (answer, answer then
//! close, close without answering).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A broken origin on raw TCP: for each connection it reads the request head, writes `reply`
/// verbatim (possibly nothing, possibly garbage) and closes.
pub struct RawOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RawOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOrigin")
            .field("addr", &self.addr)
            .finish()
    }
}

impl RawOrigin {
    /// Starts the origin.
    pub async fn start(reply: impl Into<Bytes>) -> RawOrigin {
        let reply: Bytes = reply.into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding raw origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("raw origin local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut stream, _)) = accepted else { continue };
                        counter.fetch_add(1, Ordering::SeqCst);
                        let reply = reply.clone();
                        conns.spawn(async move {
                            let mut head = Vec::new();
                            let mut buf = [0u8; 4096];
                            let read_head = async {
                                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                    match stream.read(&mut buf).await {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => head.extend_from_slice(&buf[..n]),
                                    }
                                }
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
                            let _ = stream.write_all(&reply).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        RawOrigin {
            addr,
            connections,
            task,
        }
    }

    /// The origin's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` as used in a routes file target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request as a [`ScriptedOrigin`] read it.
#[derive(Debug, Clone)]
pub struct ScriptedRequest {
    /// Index of the TCP connection it came on (0 for the first accepted connection).
    pub conn: usize,
    /// Position of the request on its connection (1 for the first).
    pub nth: usize,
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The whole body (`Content-Length` bodies only).
    pub body: Bytes,
}

/// What a [`ScriptedOrigin`] does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes (a whole response) and keeps the connection for the next request.
    Answer(Bytes),
    /// Writes these bytes, then closes the connection — without `Connection: close`, as an
    /// origin whose keep-alive timeout fires right after answering.
    AnswerAndClose(Bytes),
    /// Closes the connection without answering (the request was received whole).
    Close,
}

impl Step {
    /// A `200 OK` keep-alive response with `headers` (`name: value` lines) and `body`.
    pub fn ok(headers: &[(&str, &str)], body: &str) -> Bytes {
        let mut out = String::from("HTTP/1.1 200 OK\r\n");
        for (name, value) in headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        Bytes::from(out)
    }
}

type Script = dyn Fn(&ScriptedRequest) -> Step + Send + Sync;

/// A keep-alive HTTP/1.1 origin on raw TCP whose connection handling is scripted per request
/// (answer, answer then close, close without answering): for connection reuse and its
/// failure modes. Records every request with the connection it came on.
pub struct ScriptedOrigin {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ScriptedRequest>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ScriptedOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedOrigin")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ScriptedOrigin {
    /// Starts the origin; `script` decides what happens to each request.
    pub async fn start(
        script: impl Fn(&ScriptedRequest) -> Step + Send + Sync + 'static,
    ) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding scripted origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("scripted origin local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (reqs, counter) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let conn = counter.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(serve_scripted(stream, conn, script.clone(), reqs.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        ScriptedOrigin {
            addr,
            requests,
            connections,
            task,
        }
    }

    /// `127.0.0.1:PORT` as used in a routes file target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<ScriptedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_scripted(
    mut stream: tokio::net::TcpStream,
    conn: usize,
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<ScriptedRequest>>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    for nth in 1.. {
        // The head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let uri = request_line.next().unwrap_or_default().to_owned();
        let length = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = Bytes::copy_from_slice(&buf[head_end..head_end + length]);
        buf.drain(..head_end + length);
        let request = ScriptedRequest {
            conn,
            nth,
            method,
            uri,
            body,
        };
        requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        match script(&request) {
            Step::Answer(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Step::AnswerAndClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Step::Close => return,
        }
    }
}
