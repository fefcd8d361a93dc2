//! `grip::wscontrol::parse` (GRIP WebSocket `c:` control messages from origins) over arbitrary
//! bytes, with and without the `c:` prefix stripped first.
#![no_main]

use grip::instruct::{MAX_FILTERS_PER_CHANNEL, MIN_KEEP_ALIVE_SECS};
use grip::wscontrol::{self, ControlMessage};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    match wscontrol::parse(data) {
        Ok(ControlMessage::Subscribe { channel, filters }) => {
            assert!(!channel.is_empty());
            assert!(filters.len() <= MAX_FILTERS_PER_CHANNEL);
        }
        Ok(ControlMessage::Unsubscribe { channel }) => assert!(!channel.is_empty()),
        Ok(ControlMessage::SetMeta { name, .. }) => assert!(!name.is_empty()),
        Ok(ControlMessage::KeepAlive { timeout_secs, .. }) => {
            assert!(timeout_secs >= MIN_KEEP_ALIVE_SECS);
        }
        Ok(_) | Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(json) = wscontrol::strip_control_prefix(data) {
        check(json);
    }
});
