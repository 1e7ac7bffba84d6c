//! Raw resource counters of one group, as the kernel keeps them.
//!
//! One reading is a handful of small control files, each read once (see
//! [`fs::read_into`]). Nothing here is derived over time: CPU percentages,
//! rates and the working set are computed by `crate::monitor` from two
//! readings. A file that is missing (the controller is not mounted, or the
//! kernel predates the counter) leaves its field `None`; only a group that
//! is not there at all is an error.
//!
//! Where the two versions keep the same counter in different places:
//!
//! | field               | v1                                         | v2                         |
//! |---------------------|--------------------------------------------|----------------------------|
//! | cpu usage           | `cpuacct.usage`, `cpuacct.usage_{user,sys}` | `cpu.stat` `*_usec`        |
//! | throttling          | `cpu.stat` (cpu controller)                 | `cpu.stat`                 |
//! | memory usage, limit | `memory.usage_in_bytes`, `.limit_in_bytes`  | `memory.current`, `.max`   |
//! | cache, rss, inactive| `memory.stat` `total_cache/rss/inactive_file`| `memory.stat` `file/anon/inactive_file` |
//! | OOM kills           | `memory.oom_control` `oom_kill`             | `memory.events` `oom_kill` |
//! | pids                | `pids.current`, `pids.max`                  | the same                   |
//! | block I/O           | `blkio.throttle.io_service{_bytes,d}[_recursive]` | `io.stat`            |
//! | pressure (PSI)      | none                                        | `{cpu,memory,io}.pressure` |

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hierarchy::Layout;
use super::{fs, Cgroup, Error, Result};

/// Everything one reading found. `None` means "not available here", never
/// zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    /// OOM kills in the group since it was created.
    pub oom_kills: Option<u64>,
    pub pids: Option<PidsStats>,
    pub io: Option<IoStats>,
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
}

/// CPU time the group's tasks used since it was created, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    pub usage_ns: u64,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    /// CFS bandwidth: enforcement periods, those in which the group was
    /// throttled, and the total time it was (`None` without the cpu
    /// controller).
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
}

/// Memory charged to the group, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Everything charged: anonymous memory, page cache, kernel memory.
    pub usage: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache: Option<u64>,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss: Option<u64>,
    /// Page cache the kernel may reclaim first; usage minus this is the
    /// working set.
    pub inactive_file: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidsStats {
    /// Tasks (threads included) in the group.
    pub current: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
}

/// Block I/O summed over every device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IoStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// One `*.pressure` file: the share of time some (or all) of the group's
/// tasks were stalled on the resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub some: PressureLine,
    /// Absent from `cpu.pressure` on older kernels.
    pub full: Option<PressureLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PressureLine {
    /// Percent of wall time stalled over the last 10, 60 and 300 seconds.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time, in microseconds.
    pub total_us: u64,
}

/// Values at or above this in a v1 limit file mean "no limit": the kernel
/// shows its page-rounded `LONG_MAX`.
const V1_UNLIMITED: u64 = 1 << 62;

impl Cgroup {
    /// Reads the group's counters now. See the module docs for where each
    /// comes from; a group that does not exist is [`Error::NoGroup`].
    pub fn stats(&self) -> Result<Stats> {
        let rel = self.relative()?;
        let mut buf = Vec::with_capacity(4096);
        let stats = match &self.hierarchy.layout {
            Layout::V1(c) => {
                let dir = |name: &str| c.get(name).map(|m| m.join(rel));
                read_v1(
                    &mut buf,
                    dir("cpuacct"),
                    dir("cpu"),
                    dir("memory"),
                    dir("pids"),
                    dir("blkio"),
                )?
            }
            Layout::V2(root) => read_v2(&mut buf, &root.join(rel))?,
        };
        if stats == Stats::default() {
            // Nothing at all: either no controller is mounted, or the group
            // is gone. Only the second is worth an error.
            let dir = self.procs_dir()?;
            if !dir.exists() {
                return Err(Error::NoGroup {
                    path: self.path.clone(),
                });
            }
        }
        Ok(stats)
    }
}

/// One file's text, `None` when the file is absent.
fn text<'a>(buf: &'a mut Vec<u8>, path: &Path) -> Result<Option<&'a str>> {
    if !fs::read_into(path, buf)? {
        return Ok(None);
    }
    std::str::from_utf8(buf)
        .map(Some)
        .map_err(|_| Error::Parse {
            path: path.to_path_buf(),
            reason: "not UTF-8".into(),
        })
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A file holding one number, or `max` (→ `None` inside `Some`).
fn read_number(buf: &mut Vec<u8>, path: &Path) -> Result<Option<Option<u64>>> {
    let Some(t) = text(buf, path)? else {
        return Ok(None);
    };
    parse_number(t)
        .map(Some)
        .ok_or_else(|| bad(path, format!("not a number: {:?}", t.trim())))
}

pub(crate) fn parse_number(t: &str) -> Option<Option<u64>> {
    match t.trim() {
        "max" => Some(None),
        v => v.parse().ok().map(Some),
    }
}

/// Looks up several keys of a flat-keyed file (`key value` lines) in one
/// pass. Keys not in the file stay `None`.
fn keyed<const N: usize>(t: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in t.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        if let Some(i) = keys.iter().position(|want| *want == k) {
            out[i] = v.parse().ok();
        }
    }
    out
}

fn read_keyed<const N: usize>(
    buf: &mut Vec<u8>,
    path: &Path,
    keys: [&str; N],
) -> Result<Option<[Option<u64>; N]>> {
    Ok(text(buf, path)?.map(|t| keyed(t, keys)))
}

fn join(dir: &Option<PathBuf>, file: &str) -> Option<PathBuf> {
    dir.as_ref().map(|d| d.join(file))
}

fn read_v1(
    buf: &mut Vec<u8>,
    cpuacct: Option<PathBuf>,
    cpu: Option<PathBuf>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    blkio: Option<PathBuf>,
) -> Result<Stats> {
    let mut s = Stats::default();
    let number = |buf: &mut Vec<u8>, dir: &Option<PathBuf>, file: &str| -> Result<Option<u64>> {
        match join(dir, file) {
            Some(p) => Ok(read_number(buf, &p)?.flatten()),
            None => Ok(None),
        }
    };

    if let Some(usage_ns) = number(buf, &cpuacct, "cpuacct.usage")? {
        let user_ns = number(buf, &cpuacct, "cpuacct.usage_user")?;
        let system_ns = number(buf, &cpuacct, "cpuacct.usage_sys")?;
        let [periods, throttled_periods, throttled_ns] = match join(&cpu, "cpu.stat") {
            Some(p) => read_keyed(buf, &p, ["nr_periods", "nr_throttled", "throttled_time"])?
                .unwrap_or_default(),
            None => [None; 3],
        };
        s.cpu = Some(CpuStats {
            usage_ns,
            user_ns,
            system_ns,
            periods,
            throttled_periods,
            throttled_ns,
        });
    }

    if let Some(usage) = number(buf, &memory, "memory.usage_in_bytes")? {
        let limit = number(buf, &memory, "memory.limit_in_bytes")?.filter(|l| *l < V1_UNLIMITED);
        let [cache, rss, inactive_file, local_cache, local_rss, local_inactive] =
            match join(&memory, "memory.stat") {
                Some(p) => read_keyed(
                    buf,
                    &p,
                    [
                        "total_cache",
                        "total_rss",
                        "total_inactive_file",
                        "cache",
                        "rss",
                        "inactive_file",
                    ],
                )?
                .unwrap_or_default(),
                None => [None; 6],
            };
        // The total_ keys include child groups; kernels without
        // hierarchical accounting show only the local ones.
        s.memory = Some(MemoryStats {
            usage,
            limit,
            cache: cache.or(local_cache),
            rss: rss.or(local_rss),
            inactive_file: inactive_file.or(local_inactive),
        });
        if let Some(p) = join(&memory, "memory.oom_control") {
            s.oom_kills = read_keyed(buf, &p, ["oom_kill"])?.map(|[k]| k.unwrap_or(0));
        }
    }

    if let Some(current) = number(buf, &pids, "pids.current")? {
        let limit = match join(&pids, "pids.max") {
            Some(p) => read_number(buf, &p)?.flatten(),
            None => None,
        };
        s.pids = Some(PidsStats { current, limit });
    }

    if let Some(dir) = &blkio {
        let pick = |buf: &mut Vec<u8>, base: &str| -> Result<Option<(u64, u64)>> {
            // The recursive files include child groups, like every other
            // counter here; older kernels only have the local ones.
            for name in [format!("{base}_recursive"), base.to_string()] {
                let p = dir.join(&name);
                if let Some(t) = text(buf, &p)? {
                    return parse_blkio(t).map(Some).map_err(|r| bad(&p, r));
                }
            }
            Ok(None)
        };
        let bytes = pick(buf, "blkio.throttle.io_service_bytes")?;
        let ops = pick(buf, "blkio.throttle.io_serviced")?;
        if bytes.is_some() || ops.is_some() {
            let (read_bytes, write_bytes) = bytes.unwrap_or_default();
            let (read_ops, write_ops) = ops.unwrap_or_default();
            s.io = Some(IoStats {
                read_bytes,
                write_bytes,
                read_ops,
                write_ops,
            });
        }
    }
    Ok(s)
}

/// Sums the `Read` and `Write` lines of a v1 blkio file
/// (`MAJ:MIN Op value`, ending in a `Total value` line we skip).
pub(crate) fn parse_blkio(t: &str) -> std::result::Result<(u64, u64), String> {
    let (mut read, mut write) = (0u64, 0u64);
    for line in t.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [_dev, op, value] = f[..] else { continue };
        let v: u64 = value
            .parse()
            .map_err(|_| format!("not a number in {line:?}"))?;
        match op {
            "Read" => read = read.saturating_add(v),
            "Write" => write = write.saturating_add(v),
            _ => {}
        }
    }
    Ok((read, write))
}

fn read_v2(buf: &mut Vec<u8>, dir: &Path) -> Result<Stats> {
    let mut s = Stats::default();
    // cpu.stat is there even without the cpu controller (usage only).
    let cpu = read_keyed(
        buf,
        &dir.join("cpu.stat"),
        [
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_periods",
            "nr_throttled",
            "throttled_usec",
        ],
    )?;
    if let Some([Some(usage), user, system, periods, throttled, throttled_us]) = cpu {
        let ns = |us: Option<u64>| us.map(|v| v.saturating_mul(1000));
        s.cpu = Some(CpuStats {
            usage_ns: usage.saturating_mul(1000),
            user_ns: ns(user),
            system_ns: ns(system),
            periods,
            throttled_periods: throttled,
            throttled_ns: ns(throttled_us),
        });
    }

    if let Some(usage) = read_number(buf, &dir.join("memory.current"))? {
        let usage = usage.unwrap_or(0);
        let limit = read_number(buf, &dir.join("memory.max"))?.flatten();
        let [cache, rss, inactive_file] = read_keyed(
            buf,
            &dir.join("memory.stat"),
            ["file", "anon", "inactive_file"],
        )?
        .unwrap_or_default();
        s.memory = Some(MemoryStats {
            usage,
            limit,
            cache,
            rss,
            inactive_file,
        });
        s.oom_kills =
            read_keyed(buf, &dir.join("memory.events"), ["oom_kill"])?.map(|[k]| k.unwrap_or(0));
    }

    if let Some(current) = read_number(buf, &dir.join("pids.current"))? {
        s.pids = Some(PidsStats {
            current: current.unwrap_or(0),
            limit: read_number(buf, &dir.join("pids.max"))?.flatten(),
        });
    }

    let io = dir.join("io.stat");
    if let Some(t) = text(buf, &io)? {
        s.io = Some(parse_io_stat(t).map_err(|r| bad(&io, r))?);
    }

    for (file, slot) in [
        ("cpu.pressure", &mut s.cpu_pressure),
        ("memory.pressure", &mut s.memory_pressure),
        ("io.pressure", &mut s.io_pressure),
    ] {
        let p = dir.join(file);
        if let Some(t) = text(buf, &p)? {
            *slot = Some(parse_pressure(t).map_err(|r| bad(&p, r))?);
        }
    }
    Ok(s)
}

/// Sums `rbytes`, `wbytes`, `rios` and `wios` over the devices of a v2
/// `io.stat` (`MAJ:MIN key=value…` per line).
pub(crate) fn parse_io_stat(t: &str) -> std::result::Result<IoStats, String> {
    let mut io = IoStats::default();
    for line in t.lines() {
        for field in line.split_ascii_whitespace().skip(1) {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let slot = match k {
                "rbytes" => &mut io.read_bytes,
                "wbytes" => &mut io.write_bytes,
                "rios" => &mut io.read_ops,
                "wios" => &mut io.write_ops,
                _ => continue,
            };
            let v: u64 = v.parse().map_err(|_| format!("not a number in {line:?}"))?;
            *slot = slot.saturating_add(v);
        }
    }
    Ok(io)
}

/// A `*.pressure` file: a `some` line and, except on older kernels'
/// `cpu.pressure`, a `full` line.
pub(crate) fn parse_pressure(t: &str) -> std::result::Result<Pressure, String> {
    let mut some = None;
    let mut full = None;
    for line in t.lines() {
        let mut it = line.split_ascii_whitespace();
        let slot = match it.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut l = PressureLine::default();
        for field in it {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let f = || {
                v.parse::<f64>()
                    .map_err(|_| format!("not a number in {line:?}"))
            };
            match k {
                "avg10" => l.avg10 = f()?,
                "avg60" => l.avg60 = f()?,
                "avg300" => l.avg300 = f()?,
                "total" => {
                    l.total_us = v.parse().map_err(|_| format!("not a number in {line:?}"))?
                }
                _ => {}
            }
        }
        *slot = Some(l);
    }
    Ok(Pressure {
        some: some.ok_or("no \"some\" line")?,
        full,
    })
}
