use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::cgroups::{CpuStats, IoStats, MemoryStats, PidsStats};

const MIB: u64 = 1024 * 1024;

fn target(id: &str) -> Target {
    Target {
        id: id.into(),
        name: format!("name-{id}"),
        image: "img".into(),
        running: true,
        cgroup_path: Some(format!("/berth/{id}")),
        pid: Some(1),
        pid_start: Some(1),
        started_ns: Some(1),
    }
}

fn reading(at: Instant, cpu_ns: u64, rx: u64, read_bytes: u64) -> Reading {
    Reading {
        at,
        time: SystemTime::now(),
        cgroup: Stats {
            cpu: Some(CpuStats {
                usage_ns: cpu_ns,
                ..Default::default()
            }),
            memory: Some(MemoryStats {
                usage: 300 * MIB,
                limit: Some(1024 * MIB),
                cache: Some(200 * MIB),
                rss: Some(100 * MIB),
                inactive_file: Some(150 * MIB),
            }),
            oom_kills: Some(0),
            pids: Some(PidsStats {
                current: 2,
                limit: None,
            }),
            io: Some(IoStats {
                read_bytes,
                ..Default::default()
            }),
            ..Default::default()
        },
        net: Some(vec![
            Interface {
                name: "lo".into(),
                rx_bytes: rx,
                tx_bytes: rx,
                ..Default::default()
            },
            Interface {
                name: "eth0".into(),
                rx_bytes: 10,
                tx_bytes: 20,
                rx_packets: 1,
                tx_packets: 2,
                ..Default::default()
            },
        ]),
    }
}

#[test]
fn cpu_percent_is_usage_over_wall_time() {
    let s = Duration::from_secs(1);
    assert_eq!(cpu_percent(0, 1_000_000_000, s), Some(100.0));
    assert_eq!(cpu_percent(0, 500_000_000, s), Some(50.0));
    // Two cores busy for two seconds.
    assert_eq!(
        cpu_percent(1_000, 4_000_001_000, Duration::from_secs(2)),
        Some(200.0)
    );
    assert_eq!(cpu_percent(5, 5, s), Some(0.0));
    // No time, or a counter that went back (a new group): no figure.
    assert_eq!(cpu_percent(0, 10, Duration::ZERO), None);
    assert_eq!(cpu_percent(10, 5, s), None);
}

#[test]
fn rates_per_second() {
    assert_eq!(rate(100, 1100, Duration::from_millis(500)), Some(2000.0));
    assert_eq!(rate(100, 50, Duration::from_secs(1)), None);
    assert_eq!(rate(0, 1, Duration::ZERO), None);
}

#[test]
fn working_set_and_memory_percent() {
    let mut m = MemoryStats {
        usage: 300 * MIB,
        limit: Some(600 * MIB),
        inactive_file: Some(100 * MIB),
        ..Default::default()
    };
    assert_eq!(working_set(&m), 200 * MIB);
    let f = memory_figures(&m, 4096 * MIB);
    assert_eq!(f.effective_limit, 600 * MIB);
    assert!((f.percent - 33.333).abs() < 0.01, "{}", f.percent);
    // No limit, or one above the host's memory: against the host.
    m.limit = None;
    assert_eq!(memory_figures(&m, 800 * MIB).effective_limit, 800 * MIB);
    assert_eq!(memory_figures(&m, 800 * MIB).percent, 25.0);
    m.limit = Some(1 << 50);
    assert_eq!(memory_figures(&m, 800 * MIB).effective_limit, 800 * MIB);
    // Inactive file read after usage can exceed it: zero, not a wrap.
    m.inactive_file = Some(m.usage + 1);
    assert_eq!(working_set(&m), 0);
    m.inactive_file = None;
    assert_eq!(working_set(&m), m.usage);
    assert_eq!(memory_percent(1, 0), 0.0);
}

#[test]
fn derive_over_two_readings() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    let first = derive(target("a"), None, reading(t0, 0, 0, 0), 4096 * MIB);
    assert_eq!(first.cpu_percent, None, "one reading has no interval");
    assert_eq!(first.net_rx_rate, None);
    assert_eq!(first.memory.unwrap().working_set, 150 * MIB);

    let prev = reading(t0, 1_000_000_000, 1000, 4096);
    let s = derive(
        target("a"),
        Some(&prev),
        reading(t1, 3_000_000_000, 3000, 8192),
        4096 * MIB,
    );
    assert_eq!(s.cpu_percent, Some(100.0));
    // Loopback counted: 3000 + eth0's 10.
    assert_eq!(
        s.net,
        Some(NetTotals {
            rx_bytes: 3010,
            tx_bytes: 3020,
            rx_packets: 1,
            tx_packets: 2,
        })
    );
    assert_eq!(s.net_rx_rate, Some(1000.0));
    assert_eq!(s.block_read_rate, Some(2048.0));
    assert_eq!(s.block_write_rate, Some(0.0));
    let m = s.memory.unwrap();
    assert_eq!(
        (m.usage, m.working_set, m.limit),
        (300 * MIB, 150 * MIB, Some(1024 * MIB))
    );
}

#[test]
fn host_memory_from_meminfo() {
    assert_eq!(
        parse_mem_total("MemTotal:        8039564 kB\nMemFree: 1 kB\n"),
        Some(8_039_564 * 1024)
    );
    assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    assert_eq!(parse_mem_total("MemTotal: 1 MB\n"), None);
    assert!(host_memory_total().unwrap() > 0);
}

#[test]
fn net_dev_parses_every_interface() {
    let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth0: 98765432  65432    1    2    0     0          0         3 12345678   23456    4    5    0     0       0          0
";
    let ifaces = net::parse(text).unwrap();
    assert_eq!(ifaces.len(), 2);
    assert_eq!(
        ifaces[1],
        Interface {
            name: "eth0".into(),
            rx_bytes: 98_765_432,
            rx_packets: 65_432,
            rx_errors: 1,
            rx_dropped: 2,
            tx_bytes: 12_345_678,
            tx_packets: 23_456,
            tx_errors: 4,
            tx_dropped: 5,
        }
    );
    let t = net::totals(&ifaces);
    assert_eq!((t.rx_bytes, t.tx_packets), (98_766_666, 23_468));
    assert!(net::parse("  lo: 1 2 3\n").is_err());
    assert!(net::parse("  lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n").is_err());
}

#[test]
fn net_of_a_missing_process_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(net::read_file(&tmp.path().join("nope")).unwrap(), None);
    // Our own namespace reads.
    let me = std::process::id() as i32;
    assert!(net::read(me).unwrap().is_some());
}

/// A v2 tree with one group holding the cpu and memory files.
fn v2_group(root: &std::path::Path, id: &str, usage_usec: u64) {
    let dir = root.join("berth").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cgroup.procs"), "").unwrap();
    std::fs::write(dir.join("cpu.stat"), format!("usage_usec {usage_usec}\n")).unwrap();
    std::fs::write(dir.join("memory.current"), "1048576\n").unwrap();
    std::fs::write(dir.join("memory.max"), "max\n").unwrap();
}

/// Ourselves as a container's init, so the liveness check passes.
fn me(id: &str) -> Target {
    let pid = std::process::id() as i32;
    Target {
        pid: Some(pid),
        pid_start: crate::metadata::process_start_time(pid),
        ..target(id)
    }
}

#[test]
fn monitor_pairs_readings_and_drops_stopped_containers() {
    let tmp = tempfile::tempdir().unwrap();
    v2_group(tmp.path(), "a", 1_000);
    v2_group(tmp.path(), "b", 1_000);
    let mut m = Monitor::with(Hierarchy::v2(tmp.path()), 1024 * MIB);
    let mut stopped = target("s");
    stopped.running = false;
    let targets = [me("a"), me("b"), stopped.clone()];

    let first = m.sample(&targets).unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|s| s.cpu_percent.is_none()));
    // We share our own network namespace: no network figures.
    assert!(first[0].net.is_none());
    assert!(first[2].reading.is_none(), "stopped: an empty sample");
    let m0 = first[0].memory.unwrap();
    assert_eq!((m0.effective_limit, m0.percent), (1024 * MIB, 0.09765625));

    v2_group(tmp.path(), "a", 2_000);
    // b's group is gone: the container stopped between readings.
    std::fs::remove_dir_all(tmp.path().join("berth/b")).unwrap();
    let second = m.sample(&targets).unwrap();
    let ids: Vec<&str> = second.iter().map(|s| s.target.id.as_str()).collect();
    assert_eq!(ids, ["a", "s"]);
    let cpu = second[0]
        .cpu_percent
        .expect("a second reading has an interval");
    assert!(cpu > 0.0, "{cpu}");

    // An init that is not the recorded process (pid reused): dropped.
    let mut reused = me("a");
    reused.pid_start = reused.pid_start.map(|s| s + 1);
    assert!(m.sample(&[reused]).unwrap().is_empty());
    // A new incarnation (other start time) does not pair with the old
    // reading: no CPU figure from another process's counter.
    let first_again = m.sample(&[me("a")]).unwrap();
    assert_eq!(first_again[0].cpu_percent, None);
}

#[test]
fn prometheus_exposition() {
    let t0 = Instant::now();
    let mut t = target("a");
    t.name = "we\"ird\\name\n".into();
    let s = derive(t, None, reading(t0, 2_500_000_000, 7, 9), 4096 * MIB);
    let text = prometheus::render(&[s]);
    let labels = r#"id="a",name="we\"ird\\name\n",image="img""#;
    for line in [
        "# TYPE container_cpu_usage_seconds_total counter".to_string(),
        format!("container_cpu_usage_seconds_total{{{labels}}} 2.5"),
        format!(
            "container_memory_working_set_bytes{{{labels}}} {}",
            150 * MIB
        ),
        format!("container_memory_usage_bytes{{{labels}}} {}", 300 * MIB),
        format!(
            "container_spec_memory_limit_bytes{{{labels}}} {}",
            1024 * MIB
        ),
        format!("container_oom_events_total{{{labels}}} 0"),
        format!("container_threads{{{labels}}} 2"),
        format!("container_threads_max{{{labels}}} 0"),
        format!("container_fs_reads_bytes_total{{{labels}}} 9"),
        format!("container_network_receive_bytes_total{{{labels},interface=\"lo\"}} 7"),
        format!("container_network_transmit_bytes_total{{{labels},interface=\"eth0\"}} 20"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // No PSI on this reading: no pressure families at all.
    assert!(!text.contains("pressure"), "{text}");
    // Each family's HELP and TYPE once, before its samples.
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(types, helps);
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
    assert!(prometheus::render(&[]).is_empty());
}
