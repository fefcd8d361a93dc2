//! Command-line interface. Every flag also reads `GRIPMESH_<FLAG>` and the `--config` file.
//!
//! The subcommands and the flags every one has are here; the flag groups the tiers share are in
//! [`flags`], each tier's own flags in [`tiers`], the client subcommands' in [`client`].

mod client;
mod flags;
mod tiers;

pub use client::*;
pub use flags::*;
pub use tiers::*;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// A horizontally scalable GRIP realtime proxy.
#[derive(Debug, Parser)]
#[command(name = "gripmesh", version, about, args_override_self = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Edge + control in one process, over an in-memory bus (or NATS with --nats).
    Standalone(Box<StandaloneArgs>),
    /// The edge tier: client listener, origin proxying, holds, bus subscriptions.
    Edge(Box<EdgeArgs>),
    /// The control tier: publish API (HTTP + gRPC), route store and distribution.
    Control(ControlArgs),
    /// The auth sidecar: gRPC `Check` against the upstream API gateway.
    Authz(AuthzArgs),
    /// The article's scenario on one machine: standalone + a mock API gateway + a trades feed.
    Demo(DemoArgs),
    /// Publish to a channel from the shell (what `pushpin-publish` is to Pushpin users).
    Publish(PublishCmdArgs),
    /// Read, replace or follow control's route table.
    Routes(RoutesCmdArgs),
    /// Readiness and key figures of a running tier, from its admin listener.
    Status(StatusCmdArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags every subcommand has.
#[derive(Debug, Args)]
pub struct CommonFlags {
    /// Seconds allowed for a graceful drain on SIGTERM/SIGINT.
    #[arg(long, env = "GRIPMESH_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,

    /// Seconds between checks of the routes file for changes.
    #[arg(long, env = "GRIPMESH_ROUTES_POLL_INTERVAL", default_value_t = 1)]
    pub routes_poll_interval: u64,

    /// Log format.
    #[arg(long, env = "GRIPMESH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// TOML file with the same keys as the long flags (flags and env win).
    #[arg(long, env = "GRIPMESH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A duration: `500ms`, `10s`, `5m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}': expected a number with ms, s, m, h or d"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (ms, s, m, h, d)")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{s}': too large"))
}

pub(crate) fn parse_usage_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < edge::usage::MIN_INTERVAL {
        return Err(format!("'{s}': the shortest usage interval is 100ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod usage_flag_tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_usage_interval("50ms").is_err());
        assert!(parse_usage_interval("100ms").is_ok());
    }
}
