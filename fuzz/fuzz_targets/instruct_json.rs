//! `grip::instruct::parse_json` (the `application/grip-instruct` body) over arbitrary bytes.
#![no_main]

use grip::instruct::{self, MAX_FILTERS_PER_CHANNEL, MIN_HOLD_TIMEOUT_SECS, MIN_KEEP_ALIVE_SECS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ins) = instruct::parse_json(data) {
        assert!(ins.timeout_secs >= MIN_HOLD_TIMEOUT_SECS);
        if ins.hold.is_some() {
            assert!(!ins.channels.is_empty(), "a hold needs channels");
        }
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
        if let Some(resp) = &ins.response {
            assert!(resp.code <= 999);
        }
    }
});
