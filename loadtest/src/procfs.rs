//! Reading a server's memory and CPU use from `/proc`, and facts about the machine.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on every Linux port we run on).
const TICKS_PER_SEC: f64 = 100.0;

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// `pid` and all its descendants (Pushpin's runner spawns condure, zurl, proxy and handler).
pub(crate) fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // field 4 (ppid) is index 1 after the command name.
            if let Some(pp) = stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut tree = BTreeSet::from([pid]);
    loop {
        let before = tree.len();
        for &(p, pp) in &parent_of {
            if tree.contains(&pp) {
                tree.insert(p);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree.into_iter()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect()
}

/// Resident set size of one process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Summed RSS (KiB) of `pids` and their descendants.
pub(crate) fn tree_rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|&p| process_tree(p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(rss_kib)
        .sum()
}

/// CPU seconds (user + system) used so far by one process.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 (indices 11 and 12 after the name).
    let u: f64 = f.get(11)?.parse().ok()?;
    let s: f64 = f.get(12)?.parse().ok()?;
    Some((u + s) / TICKS_PER_SEC)
}

/// Summed CPU seconds of `pids` and their descendants.
pub(crate) fn tree_cpu_secs(pids: &[u32]) -> f64 {
    pids.iter()
        .flat_map(|&p| process_tree(p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(cpu_secs)
        .sum()
}

/// The machine a result was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// `MemTotal` in KiB.
    pub mem_total_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` when the run started.
    pub loadavg: String,
    /// CPU model name.
    pub cpu: String,
}

impl Machine {
    /// Reads the current machine.
    pub(crate) fn current() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total_kib: read("/proc/meminfo")
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            cpu: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Raises the open-file soft limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
                return hard;
            }
            soft
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap_or(0) > 0);
        assert!(cpu_secs(me).is_some());
        assert!(process_tree(me).contains(&me));
        // RSS moves while other tests run: only check that the tree sum includes something.
        assert!(tree_rss_kib(&[me]) > 0);
        let m = Machine::current();
        assert!(m.nproc >= 1 && m.mem_total_kib > 0);
    }
}
