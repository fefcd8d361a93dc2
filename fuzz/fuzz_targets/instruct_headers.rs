//! `grip::instruct::parse_headers` over header maps built from fuzz bytes.
//!
//! Input: lines separated by `\n`, each `name:value`. A one-letter name stands for a GRIP
//! header (`h` Grip-Hold, `c` Grip-Channel, `t` Grip-Timeout, `k` Grip-Keep-Alive, `s`
//! Grip-Status, `l` Grip-Link, `m` Grip-Set-Meta, `e` Grip-Expose-Headers, `y` Content-Type) so
//! the fuzzer reaches the parsers without having to guess the names; other names are used as
//! given. Names or values `http` refuses are skipped (hyper would refuse them too).
#![no_main]

use grip::instruct::{self, MAX_FILTERS_PER_CHANNEL, MIN_HOLD_TIMEOUT_SECS, MIN_KEEP_ALIVE_SECS};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn name_for(raw: &[u8]) -> Option<HeaderName> {
    let known = match raw {
        b"h" => "grip-hold",
        b"c" => "grip-channel",
        b"t" => "grip-timeout",
        b"k" => "grip-keep-alive",
        b"s" => "grip-status",
        b"l" => "grip-link",
        b"m" => "grip-set-meta",
        b"e" => "grip-expose-headers",
        b"y" => "content-type",
        other => return HeaderName::from_bytes(other).ok(),
    };
    Some(HeaderName::from_static(known))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Some(name), Ok(value)) = (name_for(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        headers.append(name, value);
    }
    let _ = instruct::is_grip_response(&headers);
    let _ = instruct::is_instruct_body(&headers);
    if let Ok(ins) = instruct::parse_headers(&headers) {
        // Documented invariants of a successful parse.
        assert!(ins.timeout_secs >= MIN_HOLD_TIMEOUT_SECS);
        assert!(ins.response.is_none());
        for (i, ch) in ins.channels.iter().enumerate() {
            assert!(!ch.name.is_empty());
            assert!(ch.filters.len() <= MAX_FILTERS_PER_CHANNEL);
            assert!(
                ins.channels[..i].iter().all(|c| c.name != ch.name),
                "duplicate channel"
            );
        }
        if let Some(ka) = &ins.keep_alive {
            assert!(!ka.content.is_empty());
            assert!(ka.timeout_secs >= MIN_KEEP_ALIVE_SECS);
        }
        if let Some(st) = &ins.status {
            assert!(st.code <= 999);
        }
        if let Some(expose) = &ins.expose_headers {
            assert!(!expose.is_empty());
        }
    }
});
