//! The run's plan: which client connects where (edge, source address, path with channel, key,
//! user and filters), and whether published items are due to it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use super::RunArgs;
use crate::clients::{Plan, Shared, Transport};
use crate::publish::{self, Formats};

/// What a step's bookkeeping needs from the run.
pub(super) struct Ctx {
    pub shared: Arc<Shared>,
    pub plans: Vec<Plan>,
    pub channel_of: Vec<usize>,
    pub channels: Vec<String>,
    pub channels_json: Vec<String>,
    pub formats: Formats,
    pub labels: publish::Labels,
    /// Per client: whether published items are due to it (false when a filter skips it).
    pub expects: Vec<bool>,
    pub pids: Vec<u32>,
}

/// Every client's plan, in connection order, with its channel and expectation.
struct Plans {
    plans: Vec<Plan>,
    channel_of: Vec<usize>,
    expects: Vec<bool>,
}

/// Resolves the edges and plans every client of the run.
pub(super) async fn context(args: &RunArgs, edges: &[String], pids: Vec<u32>) -> Result<Ctx> {
    let mut targets = Vec::new();
    for e in edges {
        let (addr, host) = resolve(e).await?;
        targets.push((addr, Arc::<str>::from(host)));
    }
    let channels: Vec<String> = (0..args.channels)
        .map(|j| format!("{}{j}", args.channel_prefix))
        .collect();
    let channels_json = channels
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .collect();
    let Plans {
        plans,
        channel_of,
        expects,
    } = plan_clients(args, &targets, &channels);
    let total = plans.len();
    let ctx = Ctx {
        shared: Arc::new(Shared::new(total)),
        plans,
        channel_of,
        channels,
        channels_json,
        formats: Formats::for_transports(&args.transport),
        labels: publish::Labels {
            id_prefix: args.ids.then(|| format!("{:x}", crate::msg::now_us())),
            sender: args.sender.clone(),
        },
        expects,
        pids,
    };
    let skipped = ctx.expects.iter().filter(|e| !**e).count();
    if skipped > 0 {
        eprintln!("{skipped} clients are skipped by their filter: they expect no deliveries");
    }
    Ok(ctx)
}

/// Per transport, client k ⇒ channel k % C, edge k % E.
fn plan_clients(args: &RunArgs, targets: &[(SocketAddr, Arc<str>)], channels: &[String]) -> Plans {
    let source_base = u32::from(args.source_ip_base.unwrap_or_else(random_loopback));
    let mut out = Plans {
        plans: Vec::new(),
        channel_of: Vec::new(),
        expects: Vec::new(),
    };
    for &t in &args.transport {
        let path = match t {
            Transport::Ws => &args.ws_path,
            Transport::Sse => &args.sse_path,
            Transport::Stream => &args.stream_path,
            Transport::Poll => &args.poll_path,
        };
        for k in 0..args.clients {
            let idx = out.plans.len();
            let ch = k % args.channels;
            let (addr, host) = &targets[k % targets.len()];
            let source = match addr.ip() {
                IpAddr::V4(ip) if ip.is_loopback() && args.clients_per_source_ip > 0 => {
                    let n = source_base.wrapping_add((idx / args.clients_per_source_ip) as u32);
                    Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))))
                }
                _ => None,
            };
            let key = (args.keys > 0).then(|| k % args.keys);
            let user = (args.users > 0).then(|| k % args.users);
            let user_name = user.map(|u| format!("u-{u}"));
            out.expects.push(expects_delivery(
                &args.filters,
                user_name.as_deref(),
                args.sender.as_deref(),
            ));
            out.plans.push(Plan {
                idx,
                transport: t,
                addr: *addr,
                host: host.clone(),
                path: client_path(path, &channels[ch], key, user, &args.filters),
                source,
                header: None,
            });
            out.channel_of.push(ch);
        }
    }
    out
}

/// Resolves an edge given as `host:port` (a `http://` or `ws://` prefix and a trailing `/`
/// are dropped) to its address and its `Host`.
async fn resolve(edge: &str) -> Result<(SocketAddr, String)> {
    let hostport = edge
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let addr = tokio::net::lookup_host(&hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .ok_or_else(|| anyhow!("{hostport}: no address"))?;
    Ok((addr, hostport))
}

/// The path and query of client `k` of a transport: its channel, key, user and filters.
fn client_path(
    path: &str,
    channel: &str,
    key: Option<usize>,
    user: Option<usize>,
    filters: &[String],
) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut p = format!("{path}{sep}channel={channel}");
    if let Some(k) = key {
        p.push_str(&format!("&apikey=key-{k}"));
    }
    if let Some(u) = user {
        p.push_str(&format!("&user=u-{u}"));
    }
    for f in filters {
        p.push_str("&filter=");
        p.push_str(f);
    }
    p
}

/// Whether a subscriber with sub meta `user` gets items published with meta `sender` through
/// `filters` (only `skip-self` decides here; the tool's items carry no other publish meta).
fn expects_delivery(filters: &[String], user: Option<&str>, sender: Option<&str>) -> bool {
    let skip_self = filters.iter().any(|f| f == "skip-self");
    !(skip_self && user.is_some() && user == sender)
}

/// A pseudo-random 127.X.Y.1 (X in 1..=250).
fn random_loopback() -> Ipv4Addr {
    let r = crate::msg::now_us() ^ (u64::from(std::process::id()) << 20);
    let r = r ^ (r >> 29);
    Ipv4Addr::new(127, 1 + (r % 250) as u8, ((r / 250) % 256) as u8, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_paths_and_skip_self_expectations() {
        let f = vec!["skip-self".to_owned()];
        assert_eq!(
            client_path("/ws", "lt0", Some(3), Some(1), &f),
            "/ws?channel=lt0&apikey=key-3&user=u-1&filter=skip-self"
        );
        assert_eq!(
            client_path("/sse?x=1", "c", None, None, &[]),
            "/sse?x=1&channel=c"
        );
        // skip-self skips only the subscriber whose user is the sender.
        assert!(!expects_delivery(&f, Some("u-0"), Some("u-0")));
        assert!(expects_delivery(&f, Some("u-1"), Some("u-0")));
        assert!(expects_delivery(&f, None, Some("u-0")));
        assert!(expects_delivery(&f, Some("u-0"), None));
        assert!(expects_delivery(&[], Some("u-0"), Some("u-0")));
    }

    #[test]
    fn random_source_addresses_are_loopback() {
        let ip = random_loopback();
        assert!(ip.is_loopback());
        assert_ne!(ip.octets()[1], 0);
    }
}
