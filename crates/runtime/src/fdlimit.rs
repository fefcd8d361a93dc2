//! The open-file limit: raised at startup, and what fits under it.
//!
//! Every client connection is a file descriptor (two while its request is proxied). A soft
//! limit left at the usual 1024 makes an edge fail long before `--max-connections`: `accept`
//! fails with `EMFILE` and new clients wait in the kernel's queue with no answer. So every
//! tier raises its soft limit to the hard limit (what nginx's `worker_rlimit_nofile` and
//! Envoy's docs ask operators to do by hand), warns when `--max-connections` cannot fit, and
//! lowers the connection limit to what fits so clients beyond it get the listener's 503.

/// Descriptors kept out of the client budget: listeners, the bus, origin connections in
/// flight, files, the runtime's own.
pub const RESERVED_FDS: u64 = 64;

/// Origin connections an edge may use at once besides its clients' own: the idle connections
/// the pool keeps per origin ([`crate::client::POOL_MAX_IDLE_PER_ENDPOINT`]), which is also how
/// many WebSocket-over-HTTP requests may be in flight. Kept out of the client budget too (at
/// most an eighth of the limit).
pub const ORIGIN_CONNECTIONS: usize = 256;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => Some(soft),
        Err(err) => {
            tracing::warn!(error = %err, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The soft open-file limit in force (`None` where it cannot be read).
pub fn current_nofile_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Client connections that fit under `nofile` descriptors (unbounded when unknown): what is
/// left after [`RESERVED_FDS`] and [`ORIGIN_CONNECTIONS`] (at most an eighth of the limit, so
/// a small limit still serves clients).
pub fn budget(nofile: Option<u64>) -> usize {
    nofile.map_or(usize::MAX, |n| {
        let pool = (ORIGIN_CONNECTIONS as u64).min(n / 8);
        let left = n.saturating_sub(RESERVED_FDS).saturating_sub(pool);
        usize::try_from(left.max(1)).unwrap_or(usize::MAX)
    })
}

/// The connection limit that fits under `nofile` descriptors: `max_connections`, or fewer
/// (with a warning naming the flag) when the limit leaves no room for that many.
pub fn fit_connections(max_connections: usize, nofile: Option<u64>) -> usize {
    let budget = budget(nofile);
    if max_connections > budget {
        tracing::warn!(
            max_connections,
            open_file_limit = nofile,
            effective = budget,
            "--max-connections cannot fit under the open-file limit (raise it: ulimit -n / \
             LimitNOFILE / the container's nofile); connections beyond {budget} get 503"
        );
        return budget;
    }
    max_connections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_under_the_limit() {
        assert_eq!(fit_connections(100, Some(1024)), 100);
        assert_eq!(
            fit_connections(100_000, Some(1024)),
            1024 - RESERVED_FDS as usize - 128,
            "an eighth of a small limit is kept for origin connections"
        );
        assert_eq!(
            fit_connections(100_000, Some(20_000)),
            20_000 - RESERVED_FDS as usize - ORIGIN_CONNECTIONS
        );
        assert_eq!(fit_connections(100_000, Some(10)), 1);
        assert_eq!(fit_connections(7, None), 7);
    }

    #[test]
    fn raising_never_lowers() {
        let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        let now = raise_nofile_limit().expect("limit");
        assert!(now >= before);
        assert!(now <= hard);
    }
}
