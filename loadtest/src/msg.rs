//! Message payloads: a marker, a sequence number and the send timestamp, padded to a size.
//!
//! A payload is `gm1 <seq:16 hex> <send time in µs since the Unix epoch:16 hex> xxxx…`, exactly
//! `size` bytes of printable ASCII (no JSON escaping needed, no newline), so the same text
//! works as a WebSocket text message, an HTTP-stream line (`payload\n`), an SSE event
//! (`data: payload\n\n`) and a long-poll body. The sequence number carries the benchmark step
//! in its high bits ([`make_seq`]) so a late message is still counted in the step that sent it.

use std::time::{SystemTime, UNIX_EPOCH};

/// First bytes of every payload.
pub(crate) const MARKER: &[u8] = b"gm1 ";
/// Bytes before the padding: marker, 16 hex digits, space, 16 hex digits.
pub(crate) const HEADER_LEN: usize = 4 + 16 + 1 + 16;
/// Smallest payload [`encode`] produces.
pub(crate) const MIN_SIZE: usize = HEADER_LEN;
/// Bits of a sequence number that count messages within a step.
const STEP_SHIFT: u32 = 40;

/// Microseconds since the Unix epoch (wall clock, so another process on the host can compare).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The sequence number of message `n` of benchmark step `step`.
pub(crate) fn make_seq(step: usize, n: u64) -> u64 {
    ((step as u64) << STEP_SHIFT) | (n & ((1 << STEP_SHIFT) - 1))
}

/// The step a sequence number belongs to.
pub(crate) fn seq_step(seq: u64) -> usize {
    (seq >> STEP_SHIFT) as usize
}

/// A payload of `size` bytes (at least [`MIN_SIZE`]) carrying `seq` and `ts_us`.
pub(crate) fn encode(seq: u64, ts_us: u64, size: usize) -> String {
    let mut s = format!("gm1 {seq:016x} {ts_us:016x}");
    let size = size.max(MIN_SIZE);
    s.extend(std::iter::repeat_n('x', size - s.len()));
    s
}

fn hex16(b: &[u8]) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// `(seq, ts_us)` of a payload, a stream line or an SSE `data:` line; `None` for anything else
/// (stream preambles, SSE comments and keep-alives).
pub(crate) fn decode(line: &[u8]) -> Option<(u64, u64)> {
    let line = line
        .strip_prefix(b"data: ")
        .or_else(|| line.strip_prefix(b"data:"))
        .unwrap_or(line);
    if line.len() < HEADER_LEN || !line.starts_with(MARKER) || line[20] != b' ' {
        return None;
    }
    Some((hex16(&line[4..20])?, hex16(&line[21..37])?))
}

/// Splits a byte stream into `\n`-terminated lines across reads. Keeps the unterminated tail.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

/// Longest partial line kept; longer garbage is dropped so a bad server can't grow memory.
const MAX_LINE: usize = 1 << 20;

impl LineSplitter {
    /// Feeds `data`, calling `f` with every complete line (without the `\n`, `\r` trimmed).
    pub(crate) fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(&[u8])) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let (head, rest) = data.split_at(pos);
            if self.buf.is_empty() {
                f(trim_cr(head));
            } else {
                self.buf.extend_from_slice(head);
                f(trim_cr(&self.buf));
                self.buf.clear();
            }
            data = &rest[1..];
        }
        if !data.is_empty() {
            if self.buf.len() + data.len() > MAX_LINE {
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(data);
            }
        }
    }
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let seq = make_seq(3, 12345);
        let p = encode(seq, 1_700_000_000_123_456, 100);
        assert_eq!(p.len(), 100);
        assert!(p.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
        assert_eq!(decode(p.as_bytes()), Some((seq, 1_700_000_000_123_456)));
        assert_eq!(seq_step(seq), 3);
        assert_eq!(seq & 0xffff_ffff, 12345);
    }

    #[test]
    fn small_sizes_are_raised_to_the_header() {
        let p = encode(1, 2, 5);
        assert_eq!(p.len(), MIN_SIZE);
        assert_eq!(decode(p.as_bytes()), Some((1, 2)));
    }

    #[test]
    fn decodes_sse_and_rejects_other_lines() {
        let p = encode(7, 9, 60);
        assert_eq!(decode(format!("data: {p}").as_bytes()), Some((7, 9)));
        assert_eq!(decode(format!("data:{p}").as_bytes()), Some((7, 9)));
        assert_eq!(decode(b"[stream open on channel x]"), None);
        assert_eq!(decode(b": keep-alive"), None);
        assert_eq!(decode(b""), None);
        assert_eq!(
            decode(b"gm1 zzzzzzzzzzzzzzzz 0000000000000000xxxx"),
            None,
            "bad hex"
        );
    }

    #[test]
    fn line_splitter_joins_across_reads() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"ab", |l| out.push(l.to_vec()));
        s.feed(b"c\r\nde\nf", |l| out.push(l.to_vec()));
        s.feed(b"\n", |l| out.push(l.to_vec()));
        assert_eq!(out, vec![b"abc".to_vec(), b"de".to_vec(), b"f".to_vec()]);
    }
}
