//! Channel name ⇒ bus subject encoding.
//!
//! Channel names are arbitrary UTF-8; NATS subjects may not contain `.`, `*`, `>` or whitespace
//! inside a token. Bytes outside `[A-Za-z0-9-]` become `_XX` (upper-case hex), so the encoding is
//! injective (`_` itself is escaped) and every result is one subject-safe token.

/// Prefix of every channel subject.
pub const CHANNEL_PREFIX: &str = "gripmesh.ch.";

/// Longest subject the bus is asked to carry. NATS refuses a protocol line longer than its
/// `max_control_line` (4096 bytes by default) and drops the whole connection; a `SUB` or
/// `HPUB` line is the subject plus a few dozen bytes (verb, reply inbox, sizes, sid).
pub const MAX_SUBJECT_LEN: usize = 3584;

/// Largest channel-name limit (`--max-channel-length`) a tier accepts: a channel of this many
/// bytes, every one escaped (3 bytes each), still makes a subject under [`MAX_SUBJECT_LEN`]
/// with room for a longer prefix.
pub const MAX_CHANNEL_LENGTH: usize = 1024;

/// The bus subject for a channel.
pub fn channel_subject(channel: &str) -> String {
    let mut out = String::with_capacity(CHANNEL_PREFIX.len() + channel.len());
    out.push_str(CHANNEL_PREFIX);
    for b in channel.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('_');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// The channel a subject was made from, or `None` if it is not a channel subject.
pub fn subject_channel(subject: &str) -> Option<String> {
    let enc = subject.strip_prefix(CHANNEL_PREFIX)?.as_bytes();
    let mut out = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        if enc[i] == b'_' {
            let hex = enc.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(enc[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_and_reversible() {
        for ch in [
            "trades",
            "a.b",
            "*",
            ">",
            "with space",
            "ünï",
            "_x",
            "_5F",
            "a-b",
            "x\ty",
        ] {
            let s = channel_subject(ch);
            let token = &s[CHANNEL_PREFIX.len()..];
            assert!(
                !token.contains(['.', '*', '>', ' ', '\t']),
                "{s} is not subject-safe"
            );
            assert_eq!(subject_channel(&s).as_deref(), Some(ch));
        }
        assert_ne!(channel_subject("_"), channel_subject("_5F"));
        assert_eq!(channel_subject("a.b"), "gripmesh.ch.a_2Eb");
    }

    #[test]
    fn the_longest_allowed_channel_fits_a_nats_control_line() {
        let worst = ".".repeat(MAX_CHANNEL_LENGTH);
        let subject = channel_subject(&worst);
        assert!(subject.len() <= MAX_SUBJECT_LEN, "{}", subject.len());
        // `SUB <subject> <sid>\r\n` and `HPUB <subject> <inbox> <hdr> <total>\r\n`.
        assert!(subject.len() + 128 <= 4096);
        assert!(crate::check_subject(&subject).is_ok());
        assert!(crate::check_subject(&"x".repeat(MAX_SUBJECT_LEN + 1)).is_err());
    }
}
