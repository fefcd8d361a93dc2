//! `bus::payload::decode` (what an edge reads off NATS) and `RecordCodec::open` (what edges
//! and sidecars read from the state buckets) over arbitrary bytes; every accepted payload must
//! round-trip through `encode`/`seal`.
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
    let codec = bus::records::RecordCodec::default();
    if let Ok(rec) = codec.open::<bus::records::RoutesRecord>("b", "k", payload) {
        let again: bus::records::RoutesRecord = codec
            .open("b", "k", codec.seal("b", "k", &rec))
            .expect("own encoding decodes");
        assert_eq!(again, rec);
    }
});
