//! `host[:port]` values (conditions, targets, `as_host`, `host`): host names, IPv4/IPv6
//! addresses and ports.

use std::net::Ipv6Addr;

/// A DNS name or IPv4 address: ASCII letters, digits, `-`, `.`, `_`.
pub(crate) fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Parses a port: decimal digits only, 1..=65535.
pub(crate) fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

/// Why a `host[:port]` string is bad.
pub(crate) enum HostPortError {
    /// The host part is not a host name or IP address.
    Host,
    /// The port is missing after `:`, not a number, or out of range.
    Port,
}

/// Splits and validates `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address;
/// returns the host (no brackets) and the port if any.
pub(crate) fn check_host_port(v: &str) -> Result<(&str, Option<u16>), HostPortError> {
    let port = |s: &str| parse_port(s).ok_or(HostPortError::Port);
    if let Some(rest) = v.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(HostPortError::Host)?;
        host.parse::<Ipv6Addr>().map_err(|_| HostPortError::Host)?;
        let p = match after {
            "" => None,
            a => Some(port(a.strip_prefix(':').ok_or(HostPortError::Port)?)?),
        };
        return Ok((host, p));
    }
    if v.matches(':').count() > 1 {
        v.parse::<Ipv6Addr>().map_err(|_| HostPortError::Host)?;
        return Ok((v, None));
    }
    let (host, p) = match v.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (v, None),
    };
    if !is_host_name(host) {
        return Err(HostPortError::Host);
    }
    Ok((host, p))
}
