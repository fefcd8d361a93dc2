//! A minimal HTTP/1.1 response reader for the stream, SSE and long-poll clients.
//!
//! hyper's client would cost a second task and a body channel per connection; tens of
//! thousands of held streams only need the status line, the framing headers and an
//! incremental chunked decoder.

use anyhow::{Result, bail};
use tokio::io::AsyncReadExt;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What the client needs from a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `Connection: close` (or HTTP/1.0).
    pub close: bool,
}

/// Parses a complete head (without the final blank line).
pub(crate) fn parse_head(head: &[u8]) -> Result<Head> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("bad status line: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {status_line:?}"))?;
    let mut h = Head {
        status,
        chunked: false,
        content_length: None,
        close: version == "HTTP/1.0",
    };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("content-length") {
            h.content_length = v.parse().ok();
        } else if k.eq_ignore_ascii_case("connection") {
            h.close = v.eq_ignore_ascii_case("close");
        }
    }
    Ok(h)
}

/// Reads a response head from `r`; bytes after it stay at the start of `buf`.
pub(crate) async fn read_head<R: AsyncReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Head> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_head(&buf[..pos])?;
            buf.drain(..pos + 4);
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            bail!("response head too large");
        }
        let mut tmp = [0u8; 4096];
        let n = r.read(&mut tmp).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, ext: bool },
    Data(u64),
    DataEnd,
    Trailer { len: usize },
    Done,
}

/// Incremental decoder of a response body's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkState),
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Ends when the connection closes.
    UntilClose,
}

/// State of a chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkState(Chunk);

impl Body {
    /// The framing of a response with this head.
    pub(crate) fn for_head(h: &Head) -> Body {
        if h.chunked {
            Body::Chunked(ChunkState(Chunk::Size {
                value: 0,
                ext: false,
            }))
        } else if let Some(n) = h.content_length {
            Body::Length(n)
        } else {
            Body::UntilClose
        }
    }

    /// Whether the body is complete.
    pub(crate) fn done(&self) -> bool {
        matches!(
            self,
            Body::Chunked(ChunkState(Chunk::Done)) | Body::Length(0)
        )
    }

    /// Decodes `input`, passing body bytes to `f`; returns how many input bytes were used
    /// (less than `input.len()` only once the body is complete).
    pub(crate) fn feed(&mut self, input: &[u8], mut f: impl FnMut(&[u8])) -> Result<usize> {
        match self {
            Body::UntilClose => {
                f(input);
                Ok(input.len())
            }
            Body::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                f(&input[..n]);
                *left -= n as u64;
                Ok(n)
            }
            Body::Chunked(ChunkState(st)) => {
                let mut i = 0;
                while i < input.len() {
                    match st {
                        Chunk::Size { value, ext } => {
                            let b = input[i];
                            i += 1;
                            match b {
                                b'\n' => {
                                    *st = if *value == 0 {
                                        Chunk::Trailer { len: 0 }
                                    } else {
                                        Chunk::Data(*value)
                                    };
                                }
                                b'\r' => {}
                                b';' => *ext = true,
                                _ if *ext => {}
                                _ => {
                                    let d = (b as char)
                                        .to_digit(16)
                                        .ok_or_else(|| anyhow::anyhow!("bad chunk size"))?;
                                    if *value > (u64::MAX >> 8) {
                                        bail!("chunk size too large");
                                    }
                                    *value = (*value << 4) | u64::from(d);
                                }
                            }
                        }
                        Chunk::Data(left) => {
                            let n = (*left).min((input.len() - i) as u64) as usize;
                            f(&input[i..i + n]);
                            i += n;
                            *left -= n as u64;
                            if *left == 0 {
                                *st = Chunk::DataEnd;
                            }
                        }
                        Chunk::DataEnd => {
                            let b = input[i];
                            i += 1;
                            if b == b'\n' {
                                *st = Chunk::Size {
                                    value: 0,
                                    ext: false,
                                };
                            } else if b != b'\r' {
                                bail!("missing CRLF after chunk data");
                            }
                        }
                        Chunk::Trailer { len } => {
                            let b = input[i];
                            i += 1;
                            if b == b'\n' {
                                if *len == 0 {
                                    *st = Chunk::Done;
                                } else {
                                    *len = 0;
                                }
                            } else if b != b'\r' {
                                *len += 1;
                            }
                        }
                        Chunk::Done => return Ok(i),
                    }
                }
                Ok(i)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                chunked: true,
                content_length: None,
                close: false
            }
        );
        let h =
            parse_head(b"HTTP/1.1 503 Busy\r\ncontent-length: 12\r\nConnection: close").unwrap();
        assert_eq!((h.status, h.content_length, h.close), (503, Some(12), true));
        assert!(parse_head(b"garbage").is_err());
    }

    #[test]
    fn decodes_chunks_split_anywhere() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n world\n\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut body = Body::for_head(&Head {
                status: 200,
                chunked: true,
                content_length: None,
                close: false,
            });
            let mut out = Vec::new();
            let end = wire.len() - 4;
            let a = body
                .feed(&wire[..split], |b| out.extend_from_slice(b))
                .unwrap();
            assert_eq!(a, split.min(end));
            let b = body.feed(&wire[a..], |b| out.extend_from_slice(b)).unwrap();
            assert_eq!(out, b"hello world\n", "split at {split}");
            assert!(body.done());
            assert_eq!(&wire[a + b..], b"NEXT");
        }
    }

    #[test]
    fn length_and_bad_chunks() {
        let mut body = Body::Length(3);
        let mut out = Vec::new();
        assert_eq!(
            body.feed(b"abcdef", |b| out.extend_from_slice(b)).unwrap(),
            3
        );
        assert!(body.done());
        assert_eq!(out, b"abc");
        let mut bad = Body::Chunked(ChunkState(Chunk::Size {
            value: 0,
            ext: false,
        }));
        assert!(bad.feed(b"zz\r\n", |_| {}).is_err());
    }
}
