//! `grip::wsevents::decode` (WebSocket-over-HTTP bodies from origins and clients) over
//! arbitrary bytes; every decoded list must round-trip: `decode(encode(events)) == events`, and
//! `encoded_len` must match what `encode` writes.
#![no_main]

use bytes::Bytes;
use grip::wsevents;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(events) = wsevents::decode(body) else {
        return;
    };
    let encoded = wsevents::encode_to_bytes(&events);
    let expected_len: usize = events.iter().map(wsevents::WsEvent::encoded_len).sum();
    assert_eq!(
        encoded.len(),
        expected_len,
        "encoded_len disagrees with encode"
    );
    let again = wsevents::decode(encoded.clone()).expect("own encoding decodes");
    assert_eq!(
        again, events,
        "decode(encode(events)) != events; encoded {encoded:?}"
    );
    for ev in &events {
        if let wsevents::WsEvent::Close(payload) = ev {
            let _ = wsevents::close_code_reason(payload);
        }
    }
});
