//! Sampling running containers' resource usage, and the figures that need
//! two readings: CPU percent, rates, and the memory figures people read.
//!
//! # Lifecycle
//!
//! 1. [`Monitor::new`] detects the cgroup layout and reads the host's
//!    memory size once.
//! 2. Each [`Monitor::sample`] takes one [`Reading`] per [`Target`]: the
//!    group's counters (`Cgroup::stats`) and the interface counters of the
//!    container's network namespace (`/proc/<init>/net/dev`). It pairs the
//!    reading with the previous one of the same container (same init, by
//!    pid *and* start time) and derives the figures over the time between
//!    them. The first sample of a container has no CPU percent or rates.
//! 3. A container that stopped meanwhile (its group is gone, or its init is
//!    no longer the recorded process) is left out of the sample, without an
//!    error, and forgotten.
//!
//! Nothing is written anywhere; a monitor is a pure reader, so any number
//! of them can watch the same containers.
//!
//! # The figures
//!
//! - CPU percent is CPU time used over wall time elapsed between two
//!   readings, times 100: one busy core is 100%, two are 200%. It is never
//!   a lifetime average.
//! - Memory usage, as shown, is the working set: usage minus inactive file
//!   cache (the page cache the kernel reclaims first), the figure the
//!   kubelet evicts on and docker's `MEM USAGE` shows. Memory percent is
//!   the working set against the limit, or against the host's memory when
//!   the limit is higher or there is none.
//! - Network counters include every interface of the container's network
//!   namespace, loopback too: a berth container's own namespace holds only
//!   `lo`, so leaving it out would always show zero. A container sharing
//!   the host's namespace has no network figures (the host's counters are
//!   not the container's).

pub mod net;
pub mod prometheus;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::cgroups::{self, Cgroup, Hierarchy, Stats};
use crate::ErrorKind;
pub use net::Interface;

/// A container to sample, as its record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub name: String,
    pub image: String,
    /// Running as recorded. Stopped targets (listed with `--all`) get an
    /// empty sample.
    pub running: bool,
    pub cgroup_path: Option<String>,
    /// The container's init and its start time (clock ticks since boot).
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub started_ns: Option<i64>,
}

/// What one look at a container found.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    #[serde(skip)]
    pub at: Instant,
    /// Wall-clock time of the reading.
    #[serde(skip)]
    pub time: SystemTime,
    pub cgroup: Stats,
    /// `None` when the container shares the host's network namespace, or
    /// its namespace could not be read.
    pub net: Option<Vec<Interface>>,
}

/// The figures for one container at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub target: Target,
    /// `None` for a stopped target.
    pub reading: Option<Reading>,
    /// Over the time since the previous reading; `None` on the first.
    pub cpu_percent: Option<f64>,
    pub memory: Option<MemoryFigures>,
    pub net: Option<NetTotals>,
    /// Per second since the previous reading.
    pub net_rx_rate: Option<f64>,
    pub net_tx_rate: Option<f64>,
    pub block_read_rate: Option<f64>,
    pub block_write_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryFigures {
    /// Everything charged to the group.
    pub usage: u64,
    /// Usage minus inactive file cache.
    pub working_set: u64,
    /// The group's limit, `None` when unlimited.
    pub limit: Option<u64>,
    /// What percent is taken against: the limit, or the host's memory when
    /// that is smaller.
    pub effective_limit: u64,
    /// Working set against `effective_limit`.
    pub percent: f64,
}

/// Counters summed over every interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetTotals {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// Samples containers; see the module docs.
#[derive(Debug)]
pub struct Monitor {
    hierarchy: Hierarchy,
    host_memory: u64,
    /// Our own network namespace, to spot containers that share it.
    host_netns: Option<PathBuf>,
    /// The last reading of each container, by id, with the init start time
    /// it belongs to.
    previous: HashMap<String, (Option<u64>, Reading)>,
}

impl Monitor {
    /// A monitor for this host's cgroups.
    pub fn new() -> Result<Monitor> {
        let hierarchy = Hierarchy::detect()?;
        let host_memory = host_memory_total()?;
        Ok(Monitor::with(hierarchy, host_memory))
    }

    /// A monitor over `hierarchy` with `host_memory` bytes as the limit of
    /// unlimited groups (tests use fake trees).
    pub fn with(hierarchy: Hierarchy, host_memory: u64) -> Monitor {
        Monitor {
            hierarchy,
            host_memory,
            host_netns: std::fs::read_link("/proc/self/ns/net").ok(),
            previous: HashMap::new(),
        }
    }

    pub fn host_memory(&self) -> u64 {
        self.host_memory
    }

    /// One reading of `t`, or `None` when it has stopped (or is not
    /// running at all).
    pub fn read(&self, t: &Target) -> Result<Option<Reading>> {
        if !t.running {
            return Ok(None);
        }
        let (Some(path), Some(pid), Some(start)) = (&t.cgroup_path, t.pid, t.pid_start) else {
            return Ok(None);
        };
        let at = Instant::now();
        let time = SystemTime::now();
        let cgroup = match Cgroup::open(&self.hierarchy, path).stats() {
            Ok(s) => s,
            Err(cgroups::Error::NoGroup { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let net = match (&netns, &self.host_netns) {
            (Some(theirs), Some(ours)) if theirs == ours => None,
            (None, _) => None,
            _ => net::read(pid)?,
        };
        // Checked last: an init that is still the recorded process now was
        // that process all along, so everything above was read from it and
        // not from a recycled pid.
        if crate::metadata::process_start_time(pid) != Some(start) {
            return Ok(None);
        }
        Ok(Some(Reading {
            at,
            time,
            cgroup,
            net,
        }))
    }

    /// One sample of every target, in the order given. Running targets
    /// that have stopped are left out; stopped ones get an empty sample.
    pub fn sample(&mut self, targets: &[Target]) -> Result<Vec<Sample>> {
        let mut out = Vec::with_capacity(targets.len());
        let mut seen = HashMap::with_capacity(targets.len());
        for t in targets {
            if !t.running {
                out.push(Sample::empty(t.clone()));
                continue;
            }
            let Some(reading) = self.read(t)? else {
                continue;
            };
            let prev = self
                .previous
                .remove(&t.id)
                .filter(|(start, _)| *start == t.pid_start)
                .map(|(_, r)| r);
            out.push(derive(
                t.clone(),
                prev.as_ref(),
                reading.clone(),
                self.host_memory,
            ));
            seen.insert(t.id.clone(), (t.pid_start, reading));
        }
        // Only what was seen now: stopped containers are forgotten.
        self.previous = seen;
        Ok(out)
    }
}

impl Sample {
    fn empty(target: Target) -> Sample {
        Sample {
            target,
            reading: None,
            cpu_percent: None,
            memory: None,
            net: None,
            net_rx_rate: None,
            net_tx_rate: None,
            block_read_rate: None,
            block_write_rate: None,
        }
    }
}

/// The figures of `cur`, with `prev` (the same container's previous
/// reading) for those over time.
pub fn derive(target: Target, prev: Option<&Reading>, cur: Reading, host_memory: u64) -> Sample {
    let elapsed = prev.map(|p| cur.at.saturating_duration_since(p.at));
    let net = cur.net.as_deref().map(net::totals);
    let prev_net = prev.and_then(|p| p.net.as_deref()).map(net::totals);
    let over = |a: Option<u64>, b: Option<u64>| match (a, b, elapsed) {
        (Some(a), Some(b), Some(e)) => rate(a, b, e),
        _ => None,
    };
    let cpu = |r: &Reading| r.cgroup.cpu.as_ref().map(|c| c.usage_ns);
    let io = |r: &Reading| r.cgroup.io.clone();
    let prev_io = prev.and_then(io);
    let cur_io = io(&cur);
    Sample {
        cpu_percent: match (prev.and_then(cpu), cpu(&cur), elapsed) {
            (Some(a), Some(b), Some(e)) => cpu_percent(a, b, e),
            _ => None,
        },
        memory: cur
            .cgroup
            .memory
            .as_ref()
            .map(|m| memory_figures(m, host_memory)),
        net_rx_rate: over(prev_net.map(|n| n.rx_bytes), net.map(|n| n.rx_bytes)),
        net_tx_rate: over(prev_net.map(|n| n.tx_bytes), net.map(|n| n.tx_bytes)),
        block_read_rate: over(
            prev_io.as_ref().map(|i| i.read_bytes),
            cur_io.as_ref().map(|i| i.read_bytes),
        ),
        block_write_rate: over(
            prev_io.as_ref().map(|i| i.write_bytes),
            cur_io.as_ref().map(|i| i.write_bytes),
        ),
        net,
        target,
        reading: Some(cur),
    }
}

/// CPU percent from two readings of a usage counter (ns) `elapsed` apart:
/// 100 is one core busy all the time. `None` when no time passed or the
/// counter went backwards (a new group under the same name).
pub fn cpu_percent(before_ns: u64, after_ns: u64, elapsed: Duration) -> Option<f64> {
    let wall = elapsed.as_nanos();
    if wall == 0 || after_ns < before_ns {
        return None;
    }
    Some((after_ns - before_ns) as f64 * 100.0 / wall as f64)
}

/// Per-second rate of a counter; `None` as for [`cpu_percent`].
pub fn rate(before: u64, after: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || after < before {
        return None;
    }
    Some((after - before) as f64 / secs)
}

/// Usage minus inactive file cache, never below zero (the two counters are
/// read at slightly different moments).
pub fn working_set(m: &cgroups::MemoryStats) -> u64 {
    m.usage.saturating_sub(m.inactive_file.unwrap_or(0))
}

/// What a memory percent is taken against: the limit, unless there is
/// none or it is above the host's memory (it can never be reached then).
pub fn effective_limit(limit: Option<u64>, host_memory: u64) -> u64 {
    match limit {
        Some(l) if host_memory == 0 || l < host_memory => l,
        _ => host_memory,
    }
}

pub fn memory_percent(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        used as f64 * 100.0 / limit as f64
    }
}

pub fn memory_figures(m: &cgroups::MemoryStats, host_memory: u64) -> MemoryFigures {
    let ws = working_set(m);
    let limit = effective_limit(m.limit, host_memory);
    MemoryFigures {
        usage: m.usage,
        working_set: ws,
        limit: m.limit,
        effective_limit: limit,
        percent: memory_percent(ws, limit),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn host_memory_total() -> Result<u64> {
    let path = "/proc/meminfo";
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.into(),
        source,
    })?;
    parse_mem_total(&text).ok_or_else(|| Error::Parse {
        path: path.into(),
        reason: "no MemTotal line".into(),
    })
}

fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut f = line.split_ascii_whitespace().skip(1);
    let n: u64 = f.next()?.parse().ok()?;
    match f.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// Errors while sampling. A container that stops is not one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("writing {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Cgroup(e) => e.kind(),
            Error::Io { .. } | Error::Parse { .. } | Error::Output { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
