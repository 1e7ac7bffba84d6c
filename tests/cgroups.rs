//! cgroups on the live host: v1 controllers as this host mounts them, and a
//! cgroup2 hierarchy the test mounts itself. Every group, process and mount
//! is owned by a guard that tears it down even when an assert fails.
//!
//! These need root (creating cgroups); as another user they fail loudly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::cgroups::{Cgroup, Hierarchy, Version};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::LinuxResources;
use serde_json::json;

fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A group and the processes put into it. Drop kills the processes,
/// reaps them and removes the group (its top-level dir, so nested groups
/// go too).
struct Group {
    top: Cgroup,
    children: Vec<Child>,
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.top.kill_all();
        let _ = self.top.remove();
    }
}

/// A cgroup2 mount on a temp dir; unmounted (lazily if busy) on drop,
/// after the groups inside are gone: declare it before the `Group`.
struct Cgroup2Mount {
    dir: tempfile::TempDir,
}

impl Cgroup2Mount {
    fn new() -> Cgroup2Mount {
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("none"),
            dir.path(),
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount -t cgroup2 none {}: {e}", dir.path().display()));
        Cgroup2Mount { dir }
    }
}

impl Drop for Cgroup2Mount {
    fn drop(&mut self) {
        if umount2(self.dir.path(), MntFlags::empty()).is_err() {
            let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
        }
    }
}

fn sleeper() -> Child {
    Command::new("sleep").arg("300").spawn().unwrap()
}

/// Every place a leftover `name` could be: each v1 hierarchy and the
/// unified one (the same hierarchy a test's own cgroup2 mount shows).
fn leftovers(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/fs/cgroup").unwrap() {
        let p = entry.unwrap().path().join(name);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn limits() -> LinuxResources {
    serde_json::from_value(json!({
        "memory": {"limit": 64 * 1024 * 1024},
        "pids": {"limit": 50},
        "cpu": {"quota": 50000, "period": 100000, "shares": 512}
    }))
    .unwrap()
}

/// The v1 scenario; `fail_midway` panics after the group holds a process,
/// to prove the guard still cleans up.
fn live_v1(name: &str, fail_midway: bool) {
    let h = Hierarchy::detect().unwrap();
    assert_eq!(h.version(), Version::V1, "this host is hybrid: v1");
    let path = format!("/{name}");
    let cg = Cgroup::create(&h, &path).unwrap();
    let mut group = Group {
        top: cg.clone(),
        children: Vec::new(),
    };
    Cgroup::create(&h, &path).expect("create is idempotent");
    cg.apply(&limits()).unwrap();

    let dir = |c: &str| h.v1_mountpoint(c).unwrap().join(name);
    assert_eq!(
        read(dir("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(dir("pids").join("pids.max")), "50");
    assert_eq!(read(dir("cpu").join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(dir("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(dir("cpu").join("cpu.shares")), "512");
    let devices = read(dir("devices").join("devices.list"));
    assert!(devices.contains("c 1:3 rwm"), "{devices}");
    assert!(devices.contains("c 136:* rwm"), "{devices}");
    assert!(!devices.contains("a *:* rwm"), "deny-all first: {devices}");
    assert_eq!(
        read(dir("cpuset").join("cpuset.cpus")),
        read(h.v1_mountpoint("cpuset").unwrap().join("cpuset.cpus"))
    );

    group.children.push(sleeper());
    let pid = group.children[0].id() as i32;
    cg.add_process(pid).unwrap();
    assert_eq!(cg.processes().unwrap(), [pid]);
    for c in ["pids", "cpu", "devices", "freezer", "cpuset", "blkio"] {
        assert_eq!(read(dir(c).join("cgroup.procs")), pid.to_string(), "{c}");
    }
    assert_eq!(cg.oom_kills().unwrap(), 0);
    if fail_midway {
        panic!("failing on purpose with {pid} in {path}");
    }

    cg.kill_all().unwrap();
    assert!(cg.processes().unwrap().is_empty());
    let status = group.children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    cg.remove().unwrap();
    assert_eq!(leftovers(name), Vec::<PathBuf>::new());
    cg.remove().expect("removing a removed group is fine");
}

#[test]
fn v1_live_create_apply_join_kill_remove() {
    let name = unique_name();
    live_v1(&name, false);
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}

#[test]
fn v2_own_mount_nested_group_join_kill_remove() {
    let name = unique_name();
    {
        let mnt = Cgroup2Mount::new();
        let h = Hierarchy::v2(mnt.dir.path());
        let top = Cgroup::open(&h, &format!("/{name}"));
        let mut group = Group {
            top,
            children: Vec::new(),
        };
        let cg = Cgroup::create(&h, &format!("/{name}/inner")).unwrap();
        assert_eq!(cg.version(), Version::V2);
        assert!(mnt.dir.path().join(&name).join("inner").is_dir());

        group.children.push(sleeper());
        group.children.push(sleeper());
        let mut pids: Vec<i32> = group.children.iter().map(|c| c.id() as i32).collect();
        for pid in &pids {
            cg.add_process(*pid).unwrap();
        }
        let mut listed = cg.processes().unwrap();
        listed.sort();
        pids.sort();
        assert_eq!(listed, pids);

        cg.kill_all().unwrap();
        assert!(cg.processes().unwrap().is_empty());
        for c in &mut group.children {
            assert!(!c.wait().unwrap().success());
        }
        group.top.remove().unwrap();
        assert!(!mnt.dir.path().join(&name).exists());
    }
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}

#[test]
fn a_failing_test_leaves_no_group_behind() {
    let name = unique_name();
    let n = name.clone();
    let result = std::thread::spawn(move || live_v1(&n, true)).join();
    assert!(result.is_err(), "the scenario was meant to panic");
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}

/// The kernel's own change notifications on a real cgroup2 file reach a
/// `FileWatch` (the mechanism of the v2 OOM watch: memory.events cannot be
/// had here, the memory controller is bound to v1, but cgroup.events is
/// notified the same way), and a group without memory.events is an error
/// naming it rather than a watch that never fires.
#[test]
fn v2_own_mount_file_watch_sees_kernel_notifications() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let readable = |w: &berth::cgroups::FileWatch| {
        let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap() > 0
    };
    let name = unique_name();
    {
        let mnt = Cgroup2Mount::new();
        let h = Hierarchy::v2(mnt.dir.path());
        let mut group = Group {
            top: Cgroup::open(&h, &format!("/{name}")),
            children: Vec::new(),
        };
        let cg = Cgroup::create(&h, &format!("/{name}")).unwrap();
        let events = mnt.dir.path().join(&name).join("cgroup.events");
        let mut w = berth::cgroups::FileWatch::inotify(&events, "populated").unwrap();
        assert_eq!(w.value(), 0);

        group.children.push(sleeper());
        cg.add_process(group.children[0].id() as i32).unwrap();
        assert!(readable(&w), "no notification when the group filled");
        assert_eq!(w.check().unwrap(), Some(1));

        cg.kill_all().unwrap();
        assert!(readable(&w), "no notification when the group emptied");
        assert_eq!(w.check().unwrap(), Some(0));

        let has_memory = read(mnt.dir.path().join("cgroup.controllers"))
            .split_whitespace()
            .any(|c| c == "memory");
        if !has_memory {
            let err = cg.watch_oom().unwrap_err();
            assert!(err.to_string().contains("memory.events"), "{err}");
        }
        drop(w);
        group.top.remove().unwrap();
    }
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}

/// On v1 the OOM watch registers an eventfd in the group's
/// cgroup.event_control; a fresh group has counted no kill.
#[test]
fn v1_oom_watch_registers() {
    let h = Hierarchy::detect().unwrap();
    if h.version() != Version::V1 {
        return;
    }
    let name = unique_name();
    {
        let group = Group {
            top: Cgroup::create(&h, &format!("/{name}")).unwrap(),
            children: Vec::new(),
        };
        let w = group.top.watch_oom().unwrap();
        assert_eq!(w.value(), 0);
        assert!(w.path().ends_with("memory.oom_control"), "{w:?}");
    }
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}

/// A process that burns CPU until killed.
fn spinner() -> Child {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap()
}

/// Waits until the group has used at least `ns` of CPU.
fn wait_cpu(cg: &Cgroup, ns: u64) -> berth::cgroups::Stats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = cg.stats().unwrap();
        if s.cpu.as_ref().is_some_and(|c| c.usage_ns >= ns) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CPU counted: {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn v1_live_stats_match_the_files() {
    let name = unique_name();
    {
        let h = Hierarchy::detect().unwrap();
        let path = format!("/{name}");
        let cg = Cgroup::create(&h, &path).unwrap();
        let mut group = Group {
            top: cg.clone(),
            children: Vec::new(),
        };
        cg.apply(&limits()).unwrap();
        group.children.push(spinner());
        cg.add_process(group.children[0].id() as i32).unwrap();

        let s = wait_cpu(&cg, 20_000_000);
        let dir = |c: &str| h.v1_mountpoint(c).unwrap().join(&name);
        let cpu = s.cpu.unwrap();
        let after: u64 = read(dir("cpuacct").join("cpuacct.usage")).parse().unwrap();
        assert!(cpu.usage_ns <= after, "{} > {after}", cpu.usage_ns);
        assert!(cpu.user_ns.is_some() && cpu.system_ns.is_some());
        assert!(cpu.periods.is_some(), "the cpu controller's cpu.stat");
        let m = s.memory.unwrap();
        assert_eq!(m.limit, Some(64 * 1024 * 1024));
        // The spinner joined after it started, and v1 does not move a
        // process's charge with it: the usage may be zero, but it is the
        // file's.
        let file: u64 = read(dir("memory").join("memory.usage_in_bytes"))
            .parse()
            .unwrap();
        assert!(m.usage.abs_diff(file) <= 1 << 20, "{} vs {file}", m.usage);
        assert!(m.inactive_file.is_some() && m.rss.is_some());
        let p = s.pids.unwrap();
        assert_eq!((p.current, p.limit), (1, Some(50)));
        assert_eq!(s.oom_kills, Some(0));
        assert!(s.io.is_some(), "blkio is mounted here");
        assert!(s.cpu_pressure.is_none() && s.memory_pressure.is_none());

        cg.kill_all().unwrap();
        group.children[0].wait().unwrap();
        cg.remove().unwrap();
        let err = cg.stats().unwrap_err();
        assert!(
            matches!(err, berth::cgroups::Error::NoGroup { .. }),
            "{err}"
        );
    }
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}

#[test]
fn v2_own_mount_stats_read_what_the_kernel_offers() {
    let name = unique_name();
    {
        let mnt = Cgroup2Mount::new();
        let h = Hierarchy::v2(mnt.dir.path());
        let cg = Cgroup::create(&h, &format!("/{name}")).unwrap();
        let mut group = Group {
            top: cg.clone(),
            children: Vec::new(),
        };
        group.children.push(spinner());
        cg.add_process(group.children[0].id() as i32).unwrap();

        // cpu.stat and the pressure files are core cgroup2 files: there
        // even where the controllers are bound to v1, as on this host.
        let s = wait_cpu(&cg, 20_000_000);
        let dir = mnt.dir.path().join(&name);
        let controllers = read(dir.join("cgroup.controllers"));
        let cpu = s.cpu.unwrap();
        assert!(cpu.user_ns.is_some() && cpu.system_ns.is_some());
        if dir.join("cpu.pressure").exists() {
            // A busy loop alone in its group waits for nothing but the
            // other load on the host: parsed, whatever the figures.
            assert!(s.cpu_pressure.is_some(), "cpu.pressure is there");
            assert!(s.memory_pressure.is_some() && s.io_pressure.is_some());
        }
        // Controllers this mount lacks leave their fields empty, no error.
        if !controllers.split_whitespace().any(|c| c == "memory") {
            assert_eq!(s.memory, None);
            assert_eq!(s.oom_kills, None);
        }
        if !controllers.split_whitespace().any(|c| c == "pids") {
            assert_eq!(s.pids, None);
        }

        cg.kill_all().unwrap();
        group.children[0].wait().unwrap();
        cg.remove().unwrap();
    }
    assert_eq!(leftovers(&name), Vec::<PathBuf>::new());
}
