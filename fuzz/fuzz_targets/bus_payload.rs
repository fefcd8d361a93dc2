//! `bus::payload::decode` and `decode_routes` (what an edge reads off NATS) over arbitrary
//! bytes; every accepted payload must round-trip through `encode`/`encode_routes`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok((item, at)) = bus::payload::decode(payload.clone()) {
        let again =
            bus::payload::decode(bus::payload::encode(&item, at)).expect("own encoding decodes");
        assert_eq!(again, (item, at));
    }
    if let Ok((version, text)) = bus::payload::decode_routes(payload) {
        let again = bus::payload::decode_routes(bus::payload::encode_routes(version, &text))
            .expect("own encoding decodes");
        assert_eq!(again, (version, text));
    }
});
