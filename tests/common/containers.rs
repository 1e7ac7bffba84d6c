//! Containers for tests: a registry holding a busybox image, a throwaway
//! store it was pulled into, and the berth binaries run against it.
//! Dropping an [`Env`] kills whatever a failed test left running (each
//! container's supervisor, then its init), deletes runc's records and
//! removes the cgroups, before the store's temp dir goes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth::metadata::{ContainerRecord, ContainerStatus, Db};

use super::{bin, push_oci, ImageBuilder, Registry, TempRoot};

/// A registry with the test image, and a store it was pulled into.
pub struct Env {
    _registry: Registry,
    pub root: TempRoot,
    pub image: String,
}

impl Env {
    pub fn new() -> Env {
        let registry = Registry::start();
        let image = ImageBuilder::new("run")
            .cmd(&["sh", "-c", "echo default-cmd"])
            .build();
        let reference = registry.reference("run/busybox:1");
        push_oci(&image, &registry, "run/busybox:1");
        let root = TempRoot::new();
        let env = Env {
            _registry: registry,
            root,
            image: reference,
        };
        let out = env.cmd("berth-pull", &["-q", &env.image]).output().unwrap();
        assert!(
            out.status.success(),
            "pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    pub fn cmd(&self, bin_name: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin(bin_name));
        c.arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("BERTH_CONFIG", "/dev/null")
            .env_remove("BERTH_ROOT")
            .env_remove("BERTH_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `berth-run --runtime RT ARGS…` (the image is in ARGS), to completion.
    pub fn run(&self, runtime: &str, args: &[&str]) -> Output {
        let mut full = vec!["--runtime", runtime];
        full.extend_from_slice(args);
        let out = self.cmd("berth-run", &full).output().unwrap();
        eprintln!(
            "berth-run {full:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn db(&self) -> Db {
        Db::open(self.root.path()).unwrap()
    }

    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.db().containers_reconciled().unwrap()
    }

    pub fn container(&self, name: &str) -> ContainerRecord {
        self.db()
            .container_reconciled(name)
            .unwrap_or_else(|e| panic!("container {name}: {e}"))
    }

    /// Waits until `name` is recorded stopped.
    pub fn wait_stopped(&self, name: &str) -> ContainerRecord {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = self.container(name);
            if c.status == ContainerStatus::Stopped {
                return c;
            }
            assert!(Instant::now() < deadline, "{name} still {:?}", c.status);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts nothing of `id` is left on the host.
    pub fn assert_released(&self, id: &str) {
        for ctrl in ["memory", "pids", "cpu", "devices"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join("berth")
                .join(id);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(id),
            "a mount of container {id} is visible on the host"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill what a failed test left running, supervisors first so they
        // cannot record anything half-way, then the containers; their
        // cgroups go once empty.
        let Ok(db) = Db::open(self.root.path()) else {
            return;
        };
        let Ok(list) = db.containers() else { return };
        for c in &list {
            for (pid, start) in [(c.supervisor_pid, c.supervisor_start), (c.pid, c.pid_start)] {
                if let (Some(pid), Some(start)) = (pid, start) {
                    if berth::metadata::process_start_time(pid) == Some(start) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for c in &list {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(self.root.path().join("runtime/runc"))
                .args(["delete", "-f", &c.id])
                .stderr(Stdio::null())
                .status();
            if let Ok(h) = berth::cgroups::Hierarchy::detect() {
                let _ = berth::cgroups::Cgroup::open(&h, &format!("/berth/{}", c.id)).remove();
            }
        }
    }
}
