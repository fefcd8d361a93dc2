//! Behaviour-changing records in the state buckets (route tables, revocations), sealed with the
//! cluster key.
//!
//! Any client that can write to NATS can write to a bucket, so a record is only believed when
//! it carries an HMAC-SHA256 made with `--cluster-key` over the bucket, the key and the body
//! (a record copied to another key or bucket does not verify). Without a cluster key records
//! are written unsigned and every record is believed: the bus is then trusted, and NATS
//! authorisation is what protects it. Refused records are logged and counted in
//! `gripmesh_bus_records_refused_total{bucket,reason}`.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

/// The record format this build writes and reads ([`SealedRecord::version`], which also
/// versions the body it carries).
pub const RECORD_VERSION: u32 = 1;

pub use crate::wire::{RevocationRecord, RoutesRecord, SealedRecord};

/// Why a record was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a sealed record of a version this build reads.
    #[error("undecodable record")]
    Undecodable,
    /// No MAC, and a cluster key is configured.
    #[error("unsigned record")]
    Unsigned,
    /// A MAC that does not verify with the cluster key.
    #[error("bad signature")]
    BadSignature,
    /// A signed table not newer than the one applied (a replay).
    #[error("replayed record")]
    Replayed,
    /// A key that cannot name what the bucket holds.
    #[error("bad key")]
    BadKey,
}

impl Refused {
    /// Every refusal, in label order.
    pub const ALL: [Refused; 5] = [
        Refused::Undecodable,
        Refused::Unsigned,
        Refused::BadSignature,
        Refused::Replayed,
        Refused::BadKey,
    ];

    /// Describes `gripmesh_bus_records_refused_total` and creates its series at 0 for every
    /// reason and each of `buckets` (the buckets the calling tier reads), so dashboards and
    /// absence alerts see them before the first refusal.
    pub fn declare_metrics(buckets: &[&str]) {
        metrics::describe_counter!(
            "gripmesh_bus_records_refused_total",
            "State records not believed, by bucket and reason."
        );
        for bucket in buckets {
            for r in Refused::ALL {
                metrics::counter!(
                    "gripmesh_bus_records_refused_total",
                    "bucket" => (*bucket).to_owned(),
                    "reason" => r.label()
                )
                .absolute(0);
            }
        }
    }

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Undecodable => "undecodable",
            Refused::Unsigned => "unsigned",
            Refused::BadSignature => "bad_signature",
            Refused::Replayed => "replayed",
            Refused::BadKey => "bad_key",
        }
    }

    /// Counts (and logs) a refused record.
    pub fn count(self, bucket: &str, key: &str) {
        tracing::warn!(bucket, key, reason = self.label(), "state record refused");
        metrics::counter!(
            "gripmesh_bus_records_refused_total",
            "bucket" => bucket.to_owned(),
            "reason" => self.label()
        )
        .increment(1);
    }
}

/// The cluster key (`--cluster-key`, literal or `base64:...`).
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Parses a key: `base64:...` or the literal bytes; at least 16 bytes.
    pub fn parse(s: &str) -> Result<ClusterKey, String> {
        use base64::Engine;
        let bytes = match s.strip_prefix("base64:") {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| "not valid base64".to_owned())?,
            None => s.as_bytes().to_vec(),
        };
        if bytes.len() < 16 {
            return Err("must be at least 16 bytes".into());
        }
        Ok(ClusterKey(bytes))
    }

    fn mac(&self, bucket: &str, key: &str, body: &[u8]) -> Hmac<Sha256> {
        // A key of any length is accepted by HMAC; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in [
            b"gripmesh-record-v1".as_slice(),
            bucket.as_bytes(),
            key.as_bytes(),
        ] {
            mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(part);
        }
        mac.update(body);
        mac
    }
}

/// Seals and opens records, with or without a cluster key. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RecordCodec {
    key: Option<ClusterKey>,
}

impl RecordCodec {
    /// A codec signing with `key` (and refusing unsigned records) when given.
    pub fn new(key: Option<ClusterKey>) -> RecordCodec {
        RecordCodec { key }
    }

    /// True when records are signed and checked.
    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    /// Seals `body` for `key` in `bucket`.
    pub fn seal(&self, bucket: &str, key: &str, body: &impl Message) -> Bytes {
        let body = Bytes::from(body.encode_to_vec());
        let mac = self.key.as_ref().map_or_else(Bytes::new, |k| {
            Bytes::from(k.mac(bucket, key, &body).finalize().into_bytes().to_vec())
        });
        Bytes::from(
            SealedRecord {
                version: RECORD_VERSION,
                body,
                mac,
            }
            .encode_to_vec(),
        )
    }

    /// Opens a record read from `key` in `bucket`.
    pub fn open<M: Message + Default>(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
    ) -> Result<M, Refused> {
        let sealed = SealedRecord::decode(value).map_err(|_| Refused::Undecodable)?;
        if sealed.version != RECORD_VERSION {
            return Err(Refused::Undecodable);
        }
        if let Some(k) = &self.key {
            if sealed.mac.is_empty() {
                return Err(Refused::Unsigned);
            }
            k.mac(bucket, key, &sealed.body)
                .verify_slice(&sealed.mac)
                .map_err(|_| Refused::BadSignature)?;
        }
        M::decode(sealed.body).map_err(|_| Refused::Undecodable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<ClusterKey> {
        Some(ClusterKey::parse(s).expect("key"))
    }

    #[test]
    fn signed_records_verify_only_with_the_key_bucket_and_key() {
        let signed = RecordCodec::new(key("0123456789abcdef-one"));
        let rec = RoutesRecord {
            text: "* test\n".into(),
            seq: 7,
        };
        let sealed = signed.seal("b", "table", &rec);
        assert_eq!(
            signed.open::<RoutesRecord>("b", "table", sealed.clone()),
            Ok(rec.clone())
        );
        assert_eq!(
            signed.open::<RoutesRecord>("b", "other", sealed.clone()),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            signed.open::<RoutesRecord>("c", "table", sealed.clone()),
            Err(Refused::BadSignature)
        );
        let other = RecordCodec::new(key("0123456789abcdef-two"));
        assert_eq!(
            other.open::<RoutesRecord>("b", "table", sealed.clone()),
            Err(Refused::BadSignature)
        );
        let unsigned = RecordCodec::new(None);
        let plain = unsigned.seal("b", "table", &rec);
        assert_eq!(
            signed.open::<RoutesRecord>("b", "table", plain.clone()),
            Err(Refused::Unsigned)
        );
        // Without a key every well-formed record is believed.
        assert_eq!(
            unsigned.open::<RoutesRecord>("b", "table", plain),
            Ok(rec.clone())
        );
        assert_eq!(unsigned.open::<RoutesRecord>("b", "table", sealed), Ok(rec));
        assert_eq!(
            signed.open::<RoutesRecord>("b", "table", Bytes::from_static(b"\xff\xff")),
            Err(Refused::Undecodable)
        );
    }

    #[test]
    fn keys_are_at_least_16_bytes() {
        assert!(ClusterKey::parse("short").is_err());
        assert!(ClusterKey::parse("base64:!!").is_err());
        assert!(ClusterKey::parse("base64:MDEyMzQ1Njc4OWFiY2RlZg==").is_ok());
        assert_eq!(
            format!("{:?}", ClusterKey::parse("0123456789abcdef").ok()),
            "Some(ClusterKey(..))"
        );
    }
}
