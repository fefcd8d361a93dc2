//! `grip::sig::verify` (Grip-Sig and `--publish-key` bearer tokens) over arbitrary tokens, and
//! `sign` followed by `verify` for arbitrary issuers and keys.
//!
//! Input: `key \0 iss \0 token` (missing parts are empty).
#![no_main]

use grip::sig::{self, SigKey};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let key = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let iss = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let token = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let Ok(key) = SigKey::parse(&key) else {
        return;
    };
    let _ = sig::verify(&token, &key, None, NOW);
    let _ = sig::verify(&token, &key, Some(&iss), NOW);

    let signed = sig::sign(&iss, &key, NOW, 60);
    assert_eq!(
        sig::verify(&signed, &key, Some(&iss), NOW).as_deref(),
        Ok(iss.as_ref())
    );
    assert_eq!(
        sig::verify(&signed, &key, None, NOW + 60),
        Err(sig::SigError::Expired)
    );
});
