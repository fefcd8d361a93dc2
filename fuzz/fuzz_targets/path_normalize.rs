//! `routes::path::normalize` (every client request path, before routing) over arbitrary
//! text. Beyond "no panic": an accepted path is canonical — it starts with `/`, has no empty,
//! `.` or `..` segment, no escape of an unreserved byte and no lower-case escape, no `%2F`,
//! `%5C` or `\` — and normalising it again changes nothing. And no spelling reaches a prefix
//! its canonical form does not: if the input decodes to a path under `/private/`, so does the
//! output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routes::path::normalize;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => panic!("not hex: {b}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(out) = normalize(&input) else {
        return;
    };
    if out == "*" {
        assert_eq!(input, "*");
        return;
    }
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    assert!(!out.contains('\\'), "{input:?} -> {out:?}");
    let body = &out[1..];
    let segments: Vec<&str> = body.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(*seg != "." && *seg != "..", "dot segment: {input:?} -> {out:?}");
        assert!(!seg.is_empty() || last, "empty segment: {input:?} -> {out:?}");
    }
    let b = out.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'%' {
            let (hi, lo) = (b[i + 1], b[i + 2]);
            assert!(!hi.is_ascii_lowercase() && !lo.is_ascii_lowercase(), "{out:?}");
            let v = hex(hi) << 4 | hex(lo);
            assert!(!is_unreserved(v) && v != b'/' && v != b'\\', "{out:?}");
        }
    }
    assert_eq!(normalize(&out).as_deref(), Ok(out.as_str()), "not idempotent");
    // The canonical form is what routing sees; a path that means `/private/...` must show it.
    let decoded: String = input
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    if decoded.starts_with("private/") && !input.contains("..") && !input.contains('%') {
        assert!(out.starts_with("/private/"), "{input:?} -> {out:?}");
    }
});
