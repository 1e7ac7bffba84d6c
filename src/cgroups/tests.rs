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
