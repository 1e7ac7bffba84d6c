//! Fake cgroupfs trees in temp dirs: the files a kernel would show, empty,
//! so every write must land on a file that exists in the real layout.

use std::fs as stdfs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};
use serde_json::json;

use super::*;

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).unwrap()
}

fn touch(dir: &Path, files: &[&str], content: &str) {
    stdfs::create_dir_all(dir).unwrap();
    for f in files {
        stdfs::write(dir.join(f), content).unwrap();
    }
}

fn read(p: impl AsRef<Path>) -> String {
    stdfs::read_to_string(p).unwrap()
}

const V1_FILES: &[(&str, &[&str])] = &[
    (
        "cpu",
        &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
    ),
    ("cpuacct", &[]),
    ("cpuset", &["cpuset.cpus", "cpuset.mems"]),
    (
        "memory",
        &[
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.oom_control",
        ],
    ),
    ("devices", &["devices.allow", "devices.deny"]),
    ("pids", &["pids.max"]),
    ("blkio", &[]),
    ("freezer", &["freezer.state"]),
];

/// A v1 tree whose `berth` and `berth/c1` groups the "kernel" already
/// populated (mkdir on cgroupfs creates the files; a plain fs cannot).
fn fake_v1(root: &Path) -> Hierarchy {
    let mut controllers = Vec::new();
    for (name, files) in V1_FILES {
        let mount = root.join(name);
        for dir in [mount.clone(), mount.join("berth"), mount.join("berth/c1")] {
            touch(&dir, files, "");
            touch(&dir, &["cgroup.procs"], "");
        }
        controllers.push((name.to_string(), mount));
    }
    stdfs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    stdfs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
    Hierarchy::v1(controllers)
}

const V2_FILES: &[&str] = &[
    "cgroup.controllers",
    "cgroup.subtree_control",
    "cgroup.procs",
    "memory.max",
    "memory.low",
    "memory.swap.max",
    "memory.events",
    "cpu.max",
    "cpu.weight",
    "pids.max",
];

fn fake_v2(root: &Path, root_controllers: &str) -> Hierarchy {
    for dir in [
        root.to_path_buf(),
        root.join("berth"),
        root.join("berth/c1"),
    ] {
        touch(&dir, V2_FILES, "");
    }
    stdfs::write(root.join("cgroup.controllers"), root_controllers).unwrap();
    // What the kernel shows a child: what its parent enabled. Our fake
    // offers everything below the root.
    stdfs::write(
        root.join("berth/cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    Hierarchy::v2(root)
}

#[test]
fn v1_create_copies_cpuset_down_every_level() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let cg = Cgroup::create(&h, "/berth/c1").unwrap();
    assert_eq!(cg.version(), Version::V1);
    assert_eq!(cg.path(), "/berth/c1");
    for level in ["berth", "berth/c1"] {
        let d = tmp.path().join("cpuset").join(level);
        assert_eq!(read(d.join("cpuset.cpus")), "0-1", "{level}");
        assert_eq!(read(d.join("cpuset.mems")), "0", "{level}");
    }
    // Idempotent: a second create finds everything in place.
    Cgroup::create(&h, "/berth/c1").unwrap();
}

#[test]
fn v1_create_makes_missing_dirs_in_every_used_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let mut controllers = Vec::new();
    for name in ["memory", "pids", "net_cls"] {
        stdfs::create_dir(tmp.path().join(name)).unwrap();
        controllers.push((name.to_string(), tmp.path().join(name)));
    }
    Cgroup::create(&Hierarchy::v1(controllers), "/berth/x").unwrap();
    assert!(tmp.path().join("memory/berth/x").is_dir());
    assert!(tmp.path().join("pids/berth/x").is_dir());
    assert!(
        !tmp.path().join("net_cls/berth").exists(),
        "not a controller we use"
    );
}

#[test]
fn v1_apply_writes_each_limit_to_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let cg = Cgroup::create(&h, "/berth/c1").unwrap();
    stdfs::write(
        tmp.path()
            .join("memory/berth/c1/memory.memsw.limit_in_bytes"),
        "-1",
    )
    .unwrap();
    cg.apply(&resources(json!({
        "memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "1"},
        "pids": {"limit": 50},
        "devices": [{"allow": false, "access": "rwm"}]
    })))
    .unwrap();
    let d = |c: &str, f: &str| read(tmp.path().join(c).join("berth/c1").join(f));
    assert_eq!(d("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(d("memory", "memory.memsw.limit_in_bytes"), "134217728");
    assert_eq!(d("memory", "memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(d("cpu", "cpu.shares"), "512");
    assert_eq!(d("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(d("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(d("cpuset", "cpuset.cpus"), "1");
    assert_eq!(d("pids", "pids.max"), "50");
    // The last allow written is the last default rule.
    assert_eq!(
        d("devices", "devices.allow"),
        *v1::DEFAULT_DEVICES.last().unwrap()
    );
}

#[test]
fn pids_limit_zero_or_negative_is_max() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let cg = Cgroup::create(&h, "/berth/c1").unwrap();
    for limit in [0, -1] {
        stdfs::write(tmp.path().join("pids/berth/c1/pids.max"), "").unwrap();
        cg.apply(&resources(json!({"pids": {"limit": limit}})))
            .unwrap();
        assert_eq!(read(tmp.path().join("pids/berth/c1/pids.max")), "max");
    }
}

#[test]
fn v1_swap_below_memory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::create(&fake_v1(tmp.path()), "/berth/c1").unwrap();
    let err = cg
        .apply(&resources(json!({"memory": {"limit": 100, "swap": 50}})))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("/berth/c1"), "{err}");
}

#[test]
fn v1_missing_controller_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    stdfs::create_dir(tmp.path().join("memory")).unwrap();
    let h = Hierarchy::v1([("memory".to_string(), tmp.path().join("memory"))]);
    let cg = Cgroup::create(&h, "/berth/c1").unwrap();
    let err = cg
        .apply(&resources(json!({"pids": {"limit": 5}})))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cgroup /berth/c1: the pids controller is not mounted"
    );
}

#[test]
fn device_rules_keep_spec_order_between_deny_all_and_defaults() {
    let rules: Vec<LinuxDeviceCgroup> = serde_json::from_value(json!([
        {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"},
        {"allow": false, "type": "b", "major": 8},
        {"allow": false, "access": "rwm"}
    ]))
    .unwrap();
    let writes = v1::device_writes(&rules);
    let head: Vec<(&str, &str)> = writes[..4].iter().map(|(f, r)| (*f, r.as_str())).collect();
    assert_eq!(
        head,
        [
            ("devices.deny", "a"),
            ("devices.allow", "c 10:200 rw"),
            ("devices.deny", "b 8:* rwm"),
            ("devices.deny", "a"),
        ]
    );
    let tail: Vec<&str> = writes[4..].iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(tail, v1::DEFAULT_DEVICES);
    assert!(writes[4..].iter().all(|(f, _)| *f == "devices.allow"));
    for needed in ["c 1:3 rwm", "c 1:9 rwm", "c 5:2 rwm", "c 136:* rwm"] {
        assert!(v1::DEFAULT_DEVICES.contains(&needed), "{needed}");
    }
}

#[test]
fn v2_create_enables_available_controllers_in_ancestors() {
    let tmp = tempfile::tempdir().unwrap();
    // The root lacks io: only the three others can be enabled there.
    let h = fake_v2(tmp.path(), "cpuset cpu memory pids hugetlb\n");
    let cg = Cgroup::create(&h, "/berth/c1").unwrap();
    assert_eq!(cg.version(), Version::V2);
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(tmp.path().join("berth/cgroup.subtree_control")),
        "+cpu +memory +pids +io"
    );
    // Processes live in the leaf: it enables nothing below itself.
    assert_eq!(read(tmp.path().join("berth/c1/cgroup.subtree_control")), "");
}

#[test]
fn v2_create_leaves_enabled_controllers_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v2(tmp.path(), "cpu memory\n");
    stdfs::write(tmp.path().join("cgroup.subtree_control"), "cpu memory\n").unwrap();
    Cgroup::create(&h, "/berth/c1").unwrap();
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "cpu memory\n"
    );
}

#[test]
fn v2_apply_writes_each_limit_to_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::create(&fake_v2(tmp.path(), "cpu memory pids io"), "/berth/c1").unwrap();
    cg.apply(&resources(json!({
        "memory": {"limit": 67108864, "swap": 100663296, "reservation": 1024},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
        "pids": {"limit": -1},
        "devices": [{"allow": false, "access": "rwm"}],
        "unified": {"memory.high": "50000000"}
    })))
    .unwrap_err(); // memory.high is not in our fake: the unified write must fail loudly
    touch(&tmp.path().join("berth/c1"), &["memory.high"], "");
    cg.apply(&resources(json!({
        "memory": {"limit": 67108864, "swap": 100663296, "reservation": 1024},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
        "pids": {"limit": -1},
        "devices": [{"allow": false, "access": "rwm"}],
        "unified": {"memory.high": "50000000"}
    })))
    .unwrap();
    let d = |f: &str| read(tmp.path().join("berth/c1").join(f));
    assert_eq!(d("memory.max"), "67108864");
    assert_eq!(
        d("memory.swap.max"),
        "33554432",
        "swap alone, not memory+swap"
    );
    assert_eq!(d("memory.low"), "1024");
    assert_eq!(d("cpu.weight"), "39");
    assert_eq!(d("cpu.max"), "50000 100000");
    assert_eq!(d("pids.max"), "max");
    assert_eq!(d("memory.high"), "50000000");
}

#[test]
fn v2_unlimited_values_are_max() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::create(&fake_v2(tmp.path(), ""), "/berth/c1").unwrap();
    cg.apply(&resources(json!({
        "memory": {"limit": -1, "swap": -1},
        "cpu": {"quota": -1, "period": 50000}
    })))
    .unwrap();
    let d = |f: &str| read(tmp.path().join("berth/c1").join(f));
    assert_eq!(d("memory.max"), "max");
    assert_eq!(d("memory.swap.max"), "max");
    assert_eq!(d("cpu.max"), "max 50000");
}

#[test]
fn shares_to_weight_maps_range_onto_range() {
    assert_eq!(v2::shares_to_weight(2), 1);
    assert_eq!(v2::shares_to_weight(262_144), 10_000);
    assert_eq!(v2::shares_to_weight(1024), 39);
    assert_eq!(v2::shares_to_weight(512), 20);
    // Out of range values are clamped, never wrap.
    assert_eq!(v2::shares_to_weight(1), 1);
    assert_eq!(v2::shares_to_weight(1 << 40), 10_000);
}

#[test]
fn oom_kills_read_from_the_right_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::create(&fake_v2(tmp.path(), ""), "/berth/c1").unwrap();
    stdfs::write(
        tmp.path().join("berth/c1/memory.events"),
        "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n",
    )
    .unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 2);

    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::create(&fake_v1(tmp.path()), "/berth/c1").unwrap();
    stdfs::write(
        tmp.path().join("memory/berth/c1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n",
    )
    .unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 7);
}

#[test]
fn processes_come_from_memory_on_v1() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::create(&fake_v1(tmp.path()), "/berth/c1").unwrap();
    stdfs::write(tmp.path().join("memory/berth/c1/cgroup.procs"), "12\n34\n").unwrap();
    assert_eq!(cg.processes().unwrap(), [12, 34]);
}

#[test]
fn bad_paths_are_refused_before_touching_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v2(tmp.path(), "");
    for path in ["/", "", "berth/x", "/berth/../x", "/berth//x", "/a/./b"] {
        let err = Cgroup::create(&h, path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
        let err = Cgroup::open(&h, path).remove().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
    }
}

#[test]
fn remove_takes_children_first_and_tolerates_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().into();
    stdfs::create_dir_all(root.join("berth/c1/sub/deeper")).unwrap();
    let h = Hierarchy::v2(&root);
    let cg = Cgroup::open(&h, "/berth/c1");
    cg.remove().unwrap();
    assert!(!root.join("berth/c1").exists());
    assert!(root.join("berth").exists(), "only the group itself goes");
    cg.remove().unwrap();
    cg.kill_all().unwrap();
}

#[test]
fn write_errors_name_file_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = Cgroup::open(&Hierarchy::v2(tmp.path()), "/nothere");
    let err = cg.add_process(1).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("writing \"1\" to "), "{msg}");
    assert!(msg.contains("nothere/cgroup.procs"), "{msg}");
}

// ------------------------------------------------------------ stats

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    stdfs::create_dir_all(dir).unwrap();
    for (f, content) in files {
        stdfs::write(dir.join(f), content).unwrap();
    }
}

/// A v1 group with every counter berth reads, as this kernel shows them.
fn fake_v1_stats(root: &Path) -> Cgroup {
    let h = fake_v1(root);
    let g = |c: &str| root.join(c).join("berth/c1");
    write_files(
        &g("cpuacct"),
        &[
            ("cpuacct.usage", "2500000000\n"),
            ("cpuacct.usage_user", "2000000000\n"),
            ("cpuacct.usage_sys", "500000000\n"),
        ],
    );
    write_files(
        &g("cpu"),
        &[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 3\nthrottled_time 7000\nnr_bursts 0\nburst_time 0\n",
        )],
    );
    write_files(
        &g("memory"),
        &[
            ("memory.usage_in_bytes", "110100480\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            (
                "memory.stat",
                "cache 4096\nrss 8192\ninactive_file 4096\n\
                 total_cache 6291456\ntotal_rss 104857600\ntotal_shmem 0\n\
                 total_inactive_file 4194304\ntotal_active_file 2097152\n",
            ),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
        ],
    );
    write_files(
        &g("pids"),
        &[("pids.current", "3\n"), ("pids.max", "max\n")],
    );
    write_files(
        &g("blkio"),
        &[
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n\
                 8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 12291\n",
            ),
            (
                "blkio.throttle.io_service_bytes",
                "8:0 Read 1\n8:0 Write 1\nTotal 2\n",
            ),
            ("blkio.throttle.io_serviced", "8:0 Read 3\n8:0 Write 4\nTotal 7\n"),
        ],
    );
    Cgroup::open(&h, "/berth/c1")
}

#[test]
fn v1_stats_read_every_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = fake_v1_stats(tmp.path());
    let s = cg.stats().unwrap();
    assert_eq!(
        s.cpu,
        Some(CpuStats {
            usage_ns: 2_500_000_000,
            user_ns: Some(2_000_000_000),
            system_ns: Some(500_000_000),
            periods: Some(10),
            throttled_periods: Some(3),
            throttled_ns: Some(7000),
        })
    );
    assert_eq!(
        s.memory,
        Some(MemoryStats {
            usage: 110_100_480,
            // LONG_MAX rounded to a page: unlimited.
            limit: None,
            // The hierarchical totals, not the group-local keys.
            cache: Some(6_291_456),
            rss: Some(104_857_600),
            inactive_file: Some(4_194_304),
        })
    );
    assert_eq!(s.oom_kills, Some(2));
    assert_eq!(
        s.pids,
        Some(PidsStats {
            current: 3,
            limit: None
        })
    );
    // Recursive bytes when present (both devices, Total lines skipped);
    // the plain file when there is no recursive one.
    assert_eq!(
        s.io,
        Some(IoStats {
            read_bytes: 4097,
            write_bytes: 8194,
            read_ops: 3,
            write_ops: 4,
        })
    );
    // PSI is a cgroup2 feature.
    assert_eq!(
        (s.cpu_pressure, s.memory_pressure, s.io_pressure),
        (None, None, None)
    );
}

#[test]
fn v1_stats_missing_controllers_are_none_and_limits_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Only memory mounted, with a limit and old-kernel keys.
    let h = Hierarchy::v1([("memory".to_string(), root.join("memory"))]);
    write_files(
        &root.join("memory/berth/c1"),
        &[
            ("memory.usage_in_bytes", "1000\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.stat", "cache 10\nrss 20\ninactive_file 30\n"),
        ],
    );
    let s = Cgroup::open(&h, "/berth/c1").stats().unwrap();
    let m = s.memory.unwrap();
    assert_eq!(m.limit, Some(67_108_864));
    assert_eq!(
        (m.cache, m.rss, m.inactive_file),
        (Some(10), Some(20), Some(30))
    );
    assert_eq!(s.cpu, None);
    assert_eq!(s.pids, None);
    assert_eq!(s.io, None);
    // memory.oom_control absent (old kernel): unknown, not zero.
    assert_eq!(s.oom_kills, None);
}

fn fake_v2_stats(root: &Path) -> Cgroup {
    let h = fake_v2(root, "cpu memory pids io");
    write_files(
        &root.join("berth/c1"),
        &[
            (
                "cpu.stat",
                "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n\
                 nr_periods 4\nnr_throttled 1\nthrottled_usec 250\n",
            ),
            ("memory.current", "209715200\n"),
            ("memory.max", "268435456\n"),
            (
                "memory.stat",
                "anon 104857600\nfile 94371840\nkernel 1048576\nshmem 0\n\
                 inactive_anon 0\nactive_anon 104857600\ninactive_file 73400320\nactive_file 20971520\n",
            ),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("pids.current", "12\n"),
            ("pids.max", "100\n"),
            (
                "io.stat",
                "8:0 rbytes=1000 wbytes=2000 rios=10 wios=20 dbytes=0 dios=0\n\
                 253:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n",
            ),
            (
                "cpu.pressure",
                "some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n",
            ),
            (
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
        ],
    );
    Cgroup::open(&h, "/berth/c1")
}

#[test]
fn v2_stats_read_every_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let s = fake_v2_stats(tmp.path()).stats().unwrap();
    assert_eq!(
        s.cpu,
        Some(CpuStats {
            usage_ns: 1_500_000_000,
            user_ns: Some(1_000_000_000),
            system_ns: Some(500_000_000),
            periods: Some(4),
            throttled_periods: Some(1),
            throttled_ns: Some(250_000),
        })
    );
    assert_eq!(
        s.memory,
        Some(MemoryStats {
            usage: 209_715_200,
            limit: Some(268_435_456),
            cache: Some(94_371_840),
            rss: Some(104_857_600),
            inactive_file: Some(73_400_320),
        })
    );
    assert_eq!(s.oom_kills, Some(1));
    assert_eq!(
        s.pids,
        Some(PidsStats {
            current: 12,
            limit: Some(100)
        })
    );
    assert_eq!(
        s.io,
        Some(IoStats {
            read_bytes: 1001,
            write_bytes: 2002,
            read_ops: 13,
            write_ops: 24,
        })
    );
    let cpu = s.cpu_pressure.unwrap();
    assert_eq!(
        cpu.some,
        PressureLine {
            avg10: 1.5,
            avg60: 0.75,
            avg300: 0.1,
            total_us: 123_456
        }
    );
    assert_eq!(cpu.full.unwrap().total_us, 42);
    assert_eq!(s.memory_pressure.unwrap().some.total_us, 0);
    // io.pressure absent (a kernel without PSI, or it is switched off).
    assert_eq!(s.io_pressure, None);
}

#[test]
fn v2_unlimited_and_missing_controllers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Hierarchy::v2(tmp.path());
    // Only the core files: no memory, pids or io controller enabled.
    write_files(
        &tmp.path().join("berth/c1"),
        &[
            ("cgroup.procs", "1\n"),
            ("cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\n"),
        ],
    );
    let s = Cgroup::open(&h, "/berth/c1").stats().unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage_ns, 10_000);
    assert_eq!(cpu.periods, None, "no cpu controller: no bandwidth stats");
    assert_eq!(
        (s.memory, s.pids, s.io, s.oom_kills),
        (None, None, None, None)
    );

    write_files(
        &tmp.path().join("berth/c1"),
        &[
            ("memory.current", "5\n"),
            ("memory.max", "max\n"),
            ("pids.current", "1\n"),
            ("pids.max", "max\n"),
        ],
    );
    let s = Cgroup::open(&h, "/berth/c1").stats().unwrap();
    let m = s.memory.unwrap();
    assert_eq!((m.usage, m.limit, m.inactive_file), (5, None, None));
    assert_eq!(s.pids.unwrap().limit, None);
}

#[test]
fn stats_of_a_missing_group_is_no_group() {
    let tmp = tempfile::tempdir().unwrap();
    for h in [fake_v1(tmp.path()), Hierarchy::v2(tmp.path())] {
        let err = Cgroup::open(&h, "/berth/gone").stats().unwrap_err();
        assert!(matches!(err, Error::NoGroup { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    // An existing group without any counter file is not an error.
    let s = Cgroup::open(&fake_v1(tmp.path()), "/berth/c1")
        .stats()
        .unwrap();
    assert_eq!(s, Stats::default());
}

#[test]
fn stats_name_the_file_that_does_not_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = fake_v2_stats(tmp.path());
    stdfs::write(tmp.path().join("berth/c1/pids.current"), "lots\n").unwrap();
    let err = cg.stats().unwrap_err();
    assert!(err.to_string().contains("pids.current"), "{err}");
    assert!(err.to_string().contains("lots"), "{err}");
    stdfs::write(tmp.path().join("berth/c1/pids.current"), "1\n").unwrap();
    stdfs::write(tmp.path().join("berth/c1/io.stat"), "8:0 rbytes=x\n").unwrap();
    assert!(cg.stats().unwrap_err().to_string().contains("io.stat"));
    stdfs::write(tmp.path().join("berth/c1/io.stat"), "").unwrap();
    stdfs::write(tmp.path().join("berth/c1/cpu.pressure"), "full avg10=1\n").unwrap();
    let err = cg.stats().unwrap_err().to_string();
    assert!(
        err.contains("cpu.pressure") && err.contains("some"),
        "{err}"
    );
}

#[test]
fn stat_parsers_on_their_own() {
    assert_eq!(stats::parse_number("max\n"), Some(None));
    assert_eq!(stats::parse_number(" 42\n"), Some(Some(42)));
    assert_eq!(stats::parse_number("-1"), None);
    assert_eq!(stats::parse_blkio("Total 0\n"), Ok((0, 0)));
    assert!(stats::parse_blkio("8:0 Read many\n").is_err());
    assert_eq!(stats::parse_io_stat("").unwrap(), IoStats::default());
    // cpu.pressure of older kernels: no full line.
    let p = stats::parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
    assert_eq!((p.some.total_us, p.full), (7, None));
}

#[test]
fn big_files_are_read_whole() {
    // More than one 4 KiB read: the reader must keep going.
    let tmp = tempfile::tempdir().unwrap();
    let cg = fake_v2_stats(tmp.path());
    let mut io = String::new();
    for minor in 0..200 {
        io.push_str(&format!(
            "8:{minor} rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n"
        ));
    }
    assert!(io.len() > 8192);
    stdfs::write(tmp.path().join("berth/c1/io.stat"), &io).unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(s.io.unwrap().write_ops, 800);
}
