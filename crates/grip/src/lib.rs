//! GRIP as data.
//!
//! Everything here is pure: parsing and rendering of the Generic Realtime Intermediary Protocol
//! as Pushpin 1.36 speaks it. No sockets, no runtime, no clocks except those passed in, so every
//! function can be unit-tested and fuzzed.

pub mod instruct;
mod jsonutil;
pub mod publish;
pub mod sig;
pub mod wscontrol;
pub mod wsevents;

/// The `Grip-Feature` header value the edge sends to origins (Pushpin 1.36's list, minus the
/// features we do not implement yet).
pub const GRIP_FEATURES: &str = "status, session, link:next";

/// Largest duration, in seconds, taken from an origin (`Grip-Timeout`, keep-alive, next-link
/// and send-delayed timeouts, `Keep-Alive-Interval`): one day. Larger values are clamped to it
/// when parsed, so no value from outside can overflow a deadline (`Instant + Duration` panics
/// on overflow) or park a connection for ever.
pub const MAX_DURATION_SECS: u64 = 86_400;
