//! A client on raw TCP ([`RawWs`]) that completes the handshake and then writes hand-crafted
//! (possibly invalid) frames, for bad-input tests; frame encoding and parsing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::handshake_headers;
use super::{HANDSHAKE_TIMEOUT, lossy};

/// WebSocket opcodes for hand-crafted frames.
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// A reserved (undefined) data opcode.
    pub const RESERVED_DATA: u8 = 0x3;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// Encodes one frame. `mask` `None` writes an unmasked frame (invalid from a client).
pub fn encode_frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// What [`RawWs::read_frame`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRead {
    /// A frame from the server.
    Frame {
        /// FIN bit.
        fin: bool,
        /// Opcode.
        opcode: u8,
        /// Unmasked payload.
        payload: Vec<u8>,
    },
    /// EOF or a read error.
    Closed(String),
    /// Nothing within the timeout.
    Timeout,
}

/// A client on raw TCP: completes a WebSocket handshake, then writes whatever bytes the test
/// wants and parses the server's frames.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server's response head (status line and headers).
    pub head: String,
}

impl RawWs {
    /// Connects and sends a handshake for `path` with `headers` added; panics unless the
    /// answer is `101`.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawWs {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut request = format!("GET {path} HTTP/1.1\r\n");
        for (name, value) in handshake_headers(addr, headers) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("writing handshake to {addr}: {e}"));
        let mut buf = Vec::new();
        let read_head = async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return Ok(end + 4);
                }
                match stream.read(&mut chunk).await {
                    Ok(0) => return Err("EOF before the end of the response head".to_string()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let end = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head).await {
            Ok(Ok(end)) => end,
            Ok(Err(e)) => panic!("raw handshake to {addr}{path}: {e}; got {:?}", lossy(&buf)),
            Err(_) => panic!("raw handshake to {addr}{path}: no answer"),
        };
        let head = lossy(&buf[..end]);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "raw handshake to {addr}{path} not accepted: {head:?}"
        );
        buf.drain(..end);
        RawWs { stream, buf, head }
    }

    /// Writes raw bytes; returns the error (the server may already have closed).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes one frame ([`encode_frame`]), masked with a fixed key when `masked`.
    pub async fn send_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        masked: bool,
        payload: &[u8],
    ) -> Result<(), String> {
        let mask = masked.then_some([0x12, 0x34, 0x56, 0x78]);
        self.send_raw(&encode_frame(fin, opcode, mask, payload))
            .await
    }

    /// Reads one frame from the server.
    pub async fn read_frame(&mut self, timeout: Duration) -> RawRead {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return RawRead::Timeout,
                Ok(Ok(0)) => return RawRead::Closed("EOF".into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return RawRead::Closed(e.to_string()),
            }
        }
    }

    /// Reads until the server ends the connection: returns the close frame's code (`1005`
    /// without a code) or `None` on EOF/reset without a close frame. Data frames are skipped.
    /// Panics if the connection is still open after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                RawRead::Frame {
                    opcode: opcode::CLOSE,
                    payload,
                    ..
                } => {
                    return Some(if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    });
                }
                RawRead::Frame { .. } => continue,
                RawRead::Closed(_) => return None,
                RawRead::Timeout => panic!("raw connection still open after {timeout:?}"),
            }
        }
    }
}

/// Parses one unmasked or masked frame at the start of `buf`; `None` if incomplete.
fn parse_frame(buf: &[u8]) -> Option<(RawRead, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let key = if masked {
        if buf.len() < at + 4 {
            return None;
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < at + len {
        return None;
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((
        RawRead::Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_encode_and_parse() {
        let frame = encode_frame(true, opcode::TEXT, Some([1, 2, 3, 4]), b"hello");
        assert_eq!(
            parse_frame(&frame),
            Some((
                RawRead::Frame {
                    fin: true,
                    opcode: opcode::TEXT,
                    payload: b"hello".to_vec()
                },
                frame.len()
            ))
        );
        let long = vec![7u8; 70_000];
        let frame = encode_frame(false, opcode::BINARY, None, &long);
        assert_eq!(frame[1], 127);
        assert_eq!(parse_frame(&frame[..100]), None);
        let Some((RawRead::Frame { payload, fin, .. }, used)) = parse_frame(&frame) else {
            panic!("long frame did not parse");
        };
        assert_eq!((payload.len(), fin, used), (70_000, false, frame.len()));
    }
}
