//! The proof a built spec is right: runc runs it on a busybox root and the
//! container sees what the flags asked for.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::runtime::{build_spec, ImageConfig, Network, RunOptions};
use common::busybox_rootfs;

fn runc_available() -> bool {
    Command::new("runc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A container run: its temp dirs and, on drop, `runc delete -f`.
struct Run {
    id: String,
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        // scripts/install-deps.sh installs runc: without it these tests
        // must fail, not pass having checked nothing.
        assert!(
            runc_available(),
            "runc is not on PATH: run scripts/install-deps.sh"
        );
        static N: AtomicUsize = AtomicUsize::new(0);
        Run {
            id: format!(
                "berth-spec-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    fn container_dir(&self) -> PathBuf {
        self.dir.path().join("container")
    }

    /// Builds the busybox root: `/bin/busybox` plus applet links, and a
    /// passwd/group with `root` and `app` (1000:1000).
    fn make_rootfs(&self) {
        busybox_rootfs(
            &self.rootfs(),
            &[
                "sh", "echo", "cat", "id", "hostname", "ls", "head", "touch", "test", "[",
            ],
        );
        fs::create_dir_all(self.state()).unwrap();
        fs::create_dir_all(self.container_dir()).unwrap();
    }

    /// Builds the spec for `opts`, runs it with runc and returns stdout.
    fn run(&self, opts: &RunOptions) -> String {
        self.make_rootfs();
        let spec = build_spec(
            &ImageConfig::default(),
            opts,
            &self.rootfs(),
            &self.container_dir(),
        )
        .unwrap();
        spec.save(self.bundle().join("config.json")).unwrap();
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.state())
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "runc run failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.state())
            .args(["delete", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // TempDir removes the rest.
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn user_hostname_env_limits_and_masks() {
    let run = Run::new();
    let opts = RunOptions {
        name: run.id.clone(),
        args: sh("id -u; hostname; cat /etc/hostname; echo $FOO; \
                  for p in /proc/kcore /proc/keys /proc/timer_list; do \
                      if [ -e $p ]; then if [ -c $p ]; then echo masked; else echo visible $p; fi; break; fi; \
                  done; \
                  echo $HOME; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                      || cat /sys/fs/cgroup/memory.max"),
        user: Some("app".into()),
        hostname: Some("spec-test".into()),
        env: vec!["FOO=bar".into()],
        memory: Some("64m".into()),
        pids_limit: Some(50),
        ..Default::default()
    };
    // A masked path is /dev/null bound over it: a character device. Some
    // kernels have no /proc/kcore, so the first masked file that exists is
    // checked.
    let out = run.run(&opts);
    assert_eq!(
        lines(&out),
        [
            "1000",
            "spec-test",
            "spec-test",
            "bar",
            "masked",
            "/home/app",
            "50",
            "67108864"
        ],
        "{out}"
    );
    assert!(run.container_dir().join("hosts").is_file());
}

#[test]
fn read_only_root_refuses_writes() {
    let run = Run::new();
    let opts = RunOptions {
        name: run.id.clone(),
        args: sh(
            "if touch /written 2>/dev/null; then echo writable; else echo read-only; fi; \
                  if touch /dev/shm/ok; then echo shm-writable; fi",
        ),
        read_only: true,
        ..Default::default()
    };
    let out = run.run(&opts);
    assert_eq!(lines(&out), ["read-only", "shm-writable"], "{out}");
    assert!(!run.rootfs().join("written").exists());
}

#[test]
fn network_none_has_only_loopback() {
    let run = Run::new();
    let opts = RunOptions {
        name: run.id.clone(),
        args: sh("cat /proc/net/dev"),
        network: Network::None,
        ..Default::default()
    };
    let out = run.run(&opts);
    // Two header lines, then one line per interface.
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{out}");
}
