//! Samples in the Prometheus text exposition format (version 0.0.4), with
//! metric names in the style of cAdvisor's `container_*` metrics so
//! existing dashboards and alerts find them, and the labels `id` (the full
//! container id), `name` and `image`. Counters are the raw kernel counters
//! (Prometheus derives rates itself); nothing is timestamped, which is what
//! node_exporter's textfile collector wants.
//!
//! Each family is written once, HELP and TYPE first, then one line per
//! container that has the value; families no container has are left out.

use std::fmt::Write;

use super::Sample;

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// A family's values for one container: each with the label it adds to
/// the container's (the interface, for network families), if any.
type Values = Vec<(Option<(&'static str, String)>, f64)>;

/// One metric family: name, type, help, and how to get each value from a
/// sample.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    values: fn(&Sample) -> Values,
}

fn one(v: Option<f64>) -> Values {
    v.map(|v| vec![(None, v)]).unwrap_or_default()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

const FAMILIES: &[Family] = &[
    Family {
        name: "container_cpu_usage_seconds_total",
        kind: Kind::Counter,
        help: "Cumulative CPU time consumed, in seconds.",
        values: |s| one(s.cpu().map(|c| secs(c.usage_ns))),
    },
    Family {
        name: "container_cpu_user_seconds_total",
        kind: Kind::Counter,
        help: "Cumulative CPU time consumed in user mode, in seconds.",
        values: |s| one(s.cpu().and_then(|c| c.user_ns).map(secs)),
    },
    Family {
        name: "container_cpu_system_seconds_total",
        kind: Kind::Counter,
        help: "Cumulative CPU time consumed in kernel mode, in seconds.",
        values: |s| one(s.cpu().and_then(|c| c.system_ns).map(secs)),
    },
    Family {
        name: "container_cpu_cfs_periods_total",
        kind: Kind::Counter,
        help: "CFS bandwidth enforcement periods elapsed.",
        values: |s| one(s.cpu().and_then(|c| c.periods).map(|v| v as f64)),
    },
    Family {
        name: "container_cpu_cfs_throttled_periods_total",
        kind: Kind::Counter,
        help: "CFS bandwidth enforcement periods in which the container was throttled.",
        values: |s| one(s.cpu().and_then(|c| c.throttled_periods).map(|v| v as f64)),
    },
    Family {
        name: "container_cpu_cfs_throttled_seconds_total",
        kind: Kind::Counter,
        help: "Total time the container was throttled, in seconds.",
        values: |s| one(s.cpu().and_then(|c| c.throttled_ns).map(secs)),
    },
    Family {
        name: "container_memory_usage_bytes",
        kind: Kind::Gauge,
        help: "Memory charged to the container, page cache included, in bytes.",
        values: |s| one(s.memory.map(|m| m.usage as f64)),
    },
    Family {
        name: "container_memory_working_set_bytes",
        kind: Kind::Gauge,
        help: "Memory usage minus inactive file cache, in bytes.",
        values: |s| one(s.memory.map(|m| m.working_set as f64)),
    },
    Family {
        name: "container_memory_cache",
        kind: Kind::Gauge,
        help: "Page cache charged to the container, in bytes.",
        values: |s| one(s.mem_raw().and_then(|m| m.cache).map(|v| v as f64)),
    },
    Family {
        name: "container_memory_rss",
        kind: Kind::Gauge,
        help: "Anonymous memory charged to the container, in bytes.",
        values: |s| one(s.mem_raw().and_then(|m| m.rss).map(|v| v as f64)),
    },
    Family {
        name: "container_spec_memory_limit_bytes",
        kind: Kind::Gauge,
        help: "Memory limit of the container, in bytes; 0 when unlimited.",
        values: |s| one(s.memory.map(|m| m.limit.unwrap_or(0) as f64)),
    },
    Family {
        name: "container_oom_events_total",
        kind: Kind::Counter,
        help: "Processes of the container killed by the kernel's OOM killer.",
        values: |s| one(s.stats().and_then(|c| c.oom_kills).map(|v| v as f64)),
    },
    Family {
        name: "container_threads",
        kind: Kind::Gauge,
        help: "Tasks (processes and threads) in the container.",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.pids.as_ref())
                .map(|p| p.current as f64))
        },
    },
    Family {
        name: "container_threads_max",
        kind: Kind::Gauge,
        help: "Maximum number of tasks in the container; 0 when unlimited.",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.pids.as_ref())
                .map(|p| p.limit.unwrap_or(0) as f64))
        },
    },
    Family {
        name: "container_fs_reads_bytes_total",
        kind: Kind::Counter,
        help: "Bytes read from block devices.",
        values: |s| one(s.io().map(|i| i.read_bytes as f64)),
    },
    Family {
        name: "container_fs_writes_bytes_total",
        kind: Kind::Counter,
        help: "Bytes written to block devices.",
        values: |s| one(s.io().map(|i| i.write_bytes as f64)),
    },
    Family {
        name: "container_fs_reads_total",
        kind: Kind::Counter,
        help: "Read requests completed by block devices.",
        values: |s| one(s.io().map(|i| i.read_ops as f64)),
    },
    Family {
        name: "container_fs_writes_total",
        kind: Kind::Counter,
        help: "Write requests completed by block devices.",
        values: |s| one(s.io().map(|i| i.write_ops as f64)),
    },
    Family {
        name: "container_network_receive_bytes_total",
        kind: Kind::Counter,
        help: "Bytes received, by interface of the container's network namespace.",
        values: |s| per_interface(s, |i| i.rx_bytes),
    },
    Family {
        name: "container_network_receive_packets_total",
        kind: Kind::Counter,
        help: "Packets received, by interface.",
        values: |s| per_interface(s, |i| i.rx_packets),
    },
    Family {
        name: "container_network_receive_errors_total",
        kind: Kind::Counter,
        help: "Errors while receiving, by interface.",
        values: |s| per_interface(s, |i| i.rx_errors),
    },
    Family {
        name: "container_network_receive_packets_dropped_total",
        kind: Kind::Counter,
        help: "Packets dropped while receiving, by interface.",
        values: |s| per_interface(s, |i| i.rx_dropped),
    },
    Family {
        name: "container_network_transmit_bytes_total",
        kind: Kind::Counter,
        help: "Bytes sent, by interface.",
        values: |s| per_interface(s, |i| i.tx_bytes),
    },
    Family {
        name: "container_network_transmit_packets_total",
        kind: Kind::Counter,
        help: "Packets sent, by interface.",
        values: |s| per_interface(s, |i| i.tx_packets),
    },
    Family {
        name: "container_network_transmit_errors_total",
        kind: Kind::Counter,
        help: "Errors while sending, by interface.",
        values: |s| per_interface(s, |i| i.tx_errors),
    },
    Family {
        name: "container_network_transmit_packets_dropped_total",
        kind: Kind::Counter,
        help: "Packets dropped while sending, by interface.",
        values: |s| per_interface(s, |i| i.tx_dropped),
    },
    Family {
        name: "container_pressure_cpu_waiting_seconds_total",
        kind: Kind::Counter,
        help: "Time some of the container's tasks waited for CPU, in seconds (PSI some).",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.cpu_pressure.as_ref())
                .map(|p| us(p.some.total_us)))
        },
    },
    Family {
        name: "container_pressure_cpu_stalled_seconds_total",
        kind: Kind::Counter,
        help: "Time all of the container's tasks were stalled on CPU, in seconds (PSI full).",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.cpu_pressure.as_ref())
                .and_then(|p| p.full.as_ref())
                .map(|l| us(l.total_us)))
        },
    },
    Family {
        name: "container_pressure_memory_waiting_seconds_total",
        kind: Kind::Counter,
        help: "Time some of the container's tasks waited for memory, in seconds (PSI some).",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.memory_pressure.as_ref())
                .map(|p| us(p.some.total_us)))
        },
    },
    Family {
        name: "container_pressure_memory_stalled_seconds_total",
        kind: Kind::Counter,
        help: "Time all of the container's tasks were stalled on memory, in seconds (PSI full).",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.memory_pressure.as_ref())
                .and_then(|p| p.full.as_ref())
                .map(|l| us(l.total_us)))
        },
    },
    Family {
        name: "container_pressure_io_waiting_seconds_total",
        kind: Kind::Counter,
        help: "Time some of the container's tasks waited for I/O, in seconds (PSI some).",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.io_pressure.as_ref())
                .map(|p| us(p.some.total_us)))
        },
    },
    Family {
        name: "container_pressure_io_stalled_seconds_total",
        kind: Kind::Counter,
        help: "Time all of the container's tasks were stalled on I/O, in seconds (PSI full).",
        values: |s| {
            one(s
                .stats()
                .and_then(|c| c.io_pressure.as_ref())
                .and_then(|p| p.full.as_ref())
                .map(|l| us(l.total_us)))
        },
    },
    Family {
        name: "container_start_time_seconds",
        kind: Kind::Gauge,
        help: "Start time of the container since the Unix epoch, in seconds.",
        values: |s| {
            one(s
                .reading
                .as_ref()
                .and(s.target.started_ns)
                .map(|ns| ns as f64 / 1e9))
        },
    },
];

fn us(v: u64) -> f64 {
    v as f64 / 1e6
}

fn per_interface(s: &Sample, f: fn(&super::Interface) -> u64) -> Values {
    let Some(ifaces) = s.reading.as_ref().and_then(|r| r.net.as_ref()) else {
        return Vec::new();
    };
    ifaces
        .iter()
        .map(|i| (Some(("interface", i.name.clone())), f(i) as f64))
        .collect()
}

impl Sample {
    fn stats(&self) -> Option<&crate::cgroups::Stats> {
        self.reading.as_ref().map(|r| &r.cgroup)
    }
    fn cpu(&self) -> Option<&crate::cgroups::CpuStats> {
        self.stats().and_then(|c| c.cpu.as_ref())
    }
    fn mem_raw(&self) -> Option<&crate::cgroups::MemoryStats> {
        self.stats().and_then(|c| c.memory.as_ref())
    }
    fn io(&self) -> Option<&crate::cgroups::IoStats> {
        self.stats().and_then(|c| c.io.as_ref())
    }
}

/// The exposition of `samples`: every family with at least one value.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for fam in FAMILIES {
        let mut lines = String::new();
        for s in samples {
            for (extra, value) in (fam.values)(s) {
                lines.push_str(fam.name);
                lines.push('{');
                let mut labels = vec![
                    ("id", s.target.id.as_str()),
                    ("name", s.target.name.as_str()),
                    ("image", s.target.image.as_str()),
                ];
                if let Some((k, v)) = &extra {
                    labels.push((k, v.as_str()));
                }
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        lines.push(',');
                    }
                    let _ = write!(lines, "{k}=\"{}\"", escape_label(v));
                }
                lines.push_str("} ");
                lines.push_str(&number(value));
                lines.push('\n');
            }
        }
        if lines.is_empty() {
            continue;
        }
        let kind = match fam.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", fam.name, escape_help(fam.help));
        let _ = writeln!(out, "# TYPE {} {kind}", fam.name);
        out.push_str(&lines);
    }
    out
}

/// A sample value: integers without a fraction, others as Rust's shortest
/// round-tripping decimal (never exponent notation, which the format
/// allows but humans read worse).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and newline (quotes are fine there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1e-7), "0.0000001");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e20), "100000000000000000000");
    }
}
