//! `grip::publish::parse_publish_body` (the `POST /publish/` body) over arbitrary bytes.
//!
//! Every accepted batch must also survive the trip control makes next: each item encoded as a
//! bus payload and decoded again on the edge comes back equal.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(items) = grip::publish::parse_publish_body(data) else {
        return;
    };
    for item in &items {
        assert!(!item.channel.is_empty());
        let f = &item.formats;
        assert!(
            f.http_response.is_some() || f.http_stream.is_some() || f.ws_message.is_some(),
            "an item without formats was returned"
        );
        if let Some(r) = &f.http_response {
            assert!(r.code <= 999);
        }
        let wire: Bytes = bus::payload::encode(item, 7);
        let (back, at) = bus::payload::decode(wire).expect("own bus payload decodes");
        assert_eq!(&back, item);
        assert_eq!(at, 7);
    }
});
