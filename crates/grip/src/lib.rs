//! GRIP as data.
//!
//! Everything here is pure: parsing and rendering of the Generic Realtime Intermediary Protocol
//! as Pushpin 1.36 speaks it. No sockets, no runtime, no clocks except those passed in, so every
//! function can be unit-tested and fuzzed.

pub mod filter;
pub mod instruct;
mod jsonutil;
pub mod publish;
pub mod sig;
pub mod wscontrol;
pub mod wsevents;

/// The `Grip-Feature` header value the edge sends to origins: Pushpin 1.41's list, exactly the
/// features this build implements (every filter of [`filter::ALL`]).
pub const GRIP_FEATURES: &str = "status, session, link:next, link:gone, filter:skip-self, \
filter:skip-users, filter:require-sub, filter:build-id, filter:var-subst";

/// Largest duration, in seconds, taken from an origin (`Grip-Timeout`, keep-alive, next-link
/// and send-delayed timeouts, `Keep-Alive-Interval`): one day. Larger values are clamped to it
/// when parsed, so no value from outside can overflow a deadline (`Instant + Duration` panics
/// on overflow) or park a connection for ever.
pub const MAX_DURATION_SECS: u64 = 86_400;

#[cfg(test)]
mod tests {
    #[test]
    fn grip_feature_lists_exactly_the_supported_filters() {
        let filters: Vec<&str> = super::GRIP_FEATURES
            .split(", ")
            .filter(|f| f.starts_with("filter:"))
            .collect();
        let supported: Vec<String> = super::filter::feature_names().collect();
        assert_eq!(filters, supported);
    }
}
