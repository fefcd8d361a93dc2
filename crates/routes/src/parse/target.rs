//! Target sections of a route line: the origin address and the per-target properties.

use super::hostport::{HostPortError, check_host_port};
use super::props::{Seen, bad_value, flag, non_empty, valued};
use crate::lex;
use crate::route::{Target, TargetAddr};

/// Target props Pushpin knows that gripmesh accepts and ignores.
const IGNORED_TARGET_PROPS: &[&str] = &["trust_connect_host", "untrusted"];

/// The address of a target section: `host:port`, `[v6]:port` or `test`.
fn parse_target_addr(section: &lex::RawSection) -> Result<TargetAddr, String> {
    let v = section.value.as_str();
    if v.is_empty() {
        return Err(format!("target has no address ('{}')", section.display()));
    }
    if v == "test" {
        return Ok(TargetAddr::Test);
    }
    if v.starts_with("zhttp/") || v.starts_with("zhttpreq/") {
        return Err(format!("zhttp targets are not supported ('{v}')"));
    }
    if !v.starts_with('[') && v.matches(':').count() > 1 {
        return Err(format!(
            "IPv6 target must be bracketed as '[addr]:port' (got '{v}')"
        ));
    }
    match check_host_port(v) {
        Ok((host, Some(port))) => Ok(TargetAddr::Host {
            host: host.to_string(),
            port,
        }),
        Ok((_, None)) => Err(format!("missing port in target '{v}'")),
        Err(HostPortError::Host) => Err(format!("invalid host in target '{v}'")),
        Err(HostPortError::Port) => Err(format!("invalid port in target '{v}'")),
    }
}

/// One target section: its address and properties; ignored Pushpin properties are added to
/// `ignored`.
pub(crate) fn parse_target(
    section: &lex::RawSection,
    ignored: &mut Vec<String>,
) -> Result<Target, String> {
    let mut target = Target {
        addr: parse_target_addr(section)?,
        ssl: false,
        insecure: false,
        host: None,
        over_http: false,
        one_event: false,
        sub: Vec::new(),
    };
    let mut seen = Seen::default();
    for p in &section.props {
        let name = p.name.as_str();
        if IGNORED_TARGET_PROPS.contains(&name) {
            ignored.push(p.name.clone());
            continue;
        }
        if name != "sub" {
            seen.once(name)?;
        }
        match name {
            "ssl" => target.ssl = flag(p)?,
            "insecure" => target.insecure = flag(p)?,
            "host" => {
                let v = valued(p)?;
                check_host_port(v).map_err(|_| bad_value(p, "host[:port]"))?;
                target.host = Some(v.to_string());
            }
            "over_http" => target.over_http = flag(p)?,
            "one_event" => target.one_event = flag(p)?,
            "sub" => target.sub.push(non_empty(p)?),
            "client_cert" | "client_key" | "ipc_file_mode" => {
                return Err(format!("target property '{name}' is not supported"));
            }
            _ => return Err(format!("unknown target property '{name}'")),
        }
    }
    Ok(target)
}
