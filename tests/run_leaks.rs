//! The host before and after a run of containers: the same mount table and
//! the same cgroup tree. One test in its own binary, so no other test runs
//! beside it (cargo runs test binaries one after another) and a difference
//! can only be ours. It covers the ways a container ends: exit, failure to
//! start, kill, OOM, a detached container, and `--rm`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;

fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        // mount point and source, without the ids that change on remount
        .map(|l| l.split(' ').skip(3).take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn cgroups() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.insert(e.path().display().to_string());
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new("/sys/fs/cgroup"), &mut out);
    out
}

fn berth_processes() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains("berth-run") || text.contains("runc") {
            out.push(format!("{}: {text}", e.file_name().to_string_lossy()));
        }
    }
    out
}

#[test]
fn containers_leave_no_mount_cgroup_or_process() {
    let env = Env::new();
    // The parent cgroup berth creates once is expected to stay, as
    // /docker does; everything below it must go.
    let before_mounts = mounts();
    let out = env.run("berth", &["--rm", &env.image, "true"]);
    assert!(out.status.success());
    let before_cgroups = cgroups();
    for rt in ["berth", "runc"] {
        let img = env.image.as_str();
        for args in [
            vec!["--rm", img, "sh", "-c", "echo hi"],
            vec![img, "sh", "-c", "exit 2"],
            vec!["--rm", img, "no-such-command"],
            vec!["--rm", "--memory", "8m", img, "tail", "/dev/zero"],
            vec![
                "--rm",
                "-v",
                "/tmp:/host-tmp:ro",
                "--tmpfs",
                "/run",
                img,
                "true",
            ],
        ] {
            env.run(rt, &args);
        }
        let name = format!("leak-{rt}");
        let out = env.run(rt, &["-d", "--name", &name, img, "sleep", "1000"]);
        assert!(out.status.success());
        let kill = env.cmd("berth-kill", &[&name]).output().unwrap();
        assert!(kill.status.success());
        env.wait_stopped(&name);
        let out = env.run(rt, &["-d", "--rm", img, "true"]);
        assert!(out.status.success());
    }
    // Detached supervisors finish their cleanup just after recording the
    // exit; give them a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (m, c, p) = (mounts(), cgroups(), berth_processes());
        if (m == before_mounts && c == before_cgroups && p.is_empty())
            || std::time::Instant::now() > deadline
        {
            let gained: Vec<_> = m.difference(&before_mounts).collect();
            let lost: Vec<_> = before_mounts.difference(&m).collect();
            assert!(
                gained.is_empty() && lost.is_empty(),
                "mounts +{gained:?} -{lost:?}"
            );
            let gained: Vec<_> = c.difference(&before_cgroups).collect();
            assert!(gained.is_empty(), "cgroups left: {gained:?}");
            assert!(p.is_empty(), "processes left: {p:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
