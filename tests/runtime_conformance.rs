//! Conformance: the built-in runtime must give a container the same view
//! of itself as runc does. A probe script prints identity, capabilities,
//! masked paths, the mount table, cgroup limits, network, limits,
//! environment and working directory; for each set of `run` flags the
//! probe's output under `berth` must equal its output under runc, on the
//! same root filesystem with the same spec.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use common::{busybox_rootfs, normalise_probe, PROBE};

use berth::runtime::{
    build_spec, Builtin, CreateOptions, ImageConfig, Network, RunOptions, Runtime, Stdio,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "hostname", "ls", "head", "test", "[", "grep", "wc", "env", "sort",
    "pwd", "stat",
];

/// One flag combination: a tmpfs root filesystem shared by both runs, the
/// container directory, and cleanup of both runtimes' containers.
struct Case {
    name: String,
    dir: tempfile::TempDir,
    mounted: bool,
    berth: Builtin,
    berth_pid: Option<i32>,
}

impl Case {
    fn new(tag: &str) -> Case {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let mut c = Case {
            name: format!(
                "berth-conf-{}-{}-{tag}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            berth: Builtin::new(dir.path().join("berth-state")),
            dir,
            mounted: false,
            berth_pid: None,
        };
        let root = c.rootfs();
        fs::create_dir_all(&root).unwrap();
        // Same filesystem and options for both runs: the `/` line of the
        // mount table is compared too.
        mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=16m,mode=755"),
        )
        .unwrap();
        c.mounted = true;
        busybox_rootfs(&root, APPLETS);
        fs::create_dir_all(c.container_dir()).unwrap();
        fs::create_dir_all(c.host_dir()).unwrap();
        fs::write(c.host_dir().join("file"), "data\n").unwrap();
        c
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
    fn host_dir(&self) -> PathBuf {
        self.dir.path().join("hostdir")
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc-state")
    }
    fn id(&self, runtime: &str) -> String {
        format!("{}-{runtime}", self.name)
    }

    fn write_spec(&self, opts: &RunOptions, runtime: &str) {
        let mut spec = build_spec(
            &ImageConfig::default(),
            opts,
            &self.rootfs(),
            &self.container_dir(),
        )
        .unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/berth/{}", self.id(runtime)))));
        spec.set_linux(Some(linux));
        spec.save(self.bundle().join("config.json")).unwrap();
    }

    fn run_runc(&self, opts: &RunOptions) -> String {
        self.write_spec(opts, "runc");
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.runc_root())
            .arg("run")
            .arg("--bundle")
            .arg(self.bundle())
            .arg(self.id("runc"))
            .stdin(PStdio::null())
            .output()
            .expect("runc is not on PATH: run scripts/install-deps.sh");
        assert!(
            out.status.success(),
            "runc: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn run_berth(&mut self, opts: &RunOptions) -> String {
        self.write_spec(opts, "berth");
        self.run_berth_spec()
    }

    /// Runs the `config.json` already in the bundle.
    fn run_berth_spec(&mut self) -> String {
        let id = self.id("berth");
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let stdin: OwnedFd = fs::File::open("/dev/null").unwrap().into();
        let pid = self
            .berth
            .create(CreateOptions {
                id: &id,
                bundle: &self.bundle(),
                stdio: Stdio::Fds {
                    stdin,
                    stdout: out_w,
                    stderr: err_w,
                },
            })
            .unwrap();
        self.berth_pid = Some(pid);
        self.berth.start(&id).unwrap();
        // Read before waiting: the output may not fit in a pipe buffer.
        let mut out = String::new();
        fs::File::from(out_r).read_to_string(&mut out).unwrap();
        let mut err = String::new();
        fs::File::from(err_r).read_to_string(&mut err).unwrap();
        let status = waitpid(Pid::from_raw(pid), None).unwrap();
        self.berth_pid = None;
        assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 0), "{err}");
        self.berth.delete(&id, false).unwrap();
        out
    }

    /// Runs the probe under both runtimes and compares.
    fn check(&mut self, opts: RunOptions) {
        // Run as nohup or a background job would: ignored signals survive
        // execve, and neither runtime may pass them on to the container.
        // SAFETY: changes only this test process's dispositions, which no
        // test here relies on.
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        }
        let opts = RunOptions {
            name: self.name.clone(),
            hostname: Some("probe".into()),
            args: vec!["sh".into(), "-c".into(), PROBE.into()],
            ..opts
        };
        let runc = normalise_probe(&self.run_runc(&opts));
        let berth = normalise_probe(&self.run_berth(&opts));
        if runc != berth {
            let a = self.dir.path().join("runc.out");
            let b = self.dir.path().join("berth.out");
            fs::write(&a, &runc).unwrap();
            fs::write(&b, &berth).unwrap();
            let diff = Command::new("diff")
                .arg("-u")
                .arg(&a)
                .arg(&b)
                .output()
                .unwrap();
            panic!(
                "{}: probe output differs (- runc, + berth):\n{}",
                self.name,
                String::from_utf8_lossy(&diff.stdout)
            );
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.runc_root())
            .args(["delete", "-f", &self.id("runc")])
            .stdout(PStdio::null())
            .stderr(PStdio::null())
            .status();
        let _ = self.berth.delete(&self.id("berth"), true);
        if let Some(pid) = self.berth_pid.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        for rt in ["runc", "berth"] {
            for c in [
                "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio",
                "systemd",
            ] {
                let _ = fs::remove_dir(
                    Path::new("/sys/fs/cgroup")
                        .join(c)
                        .join("berth")
                        .join(self.id(rt)),
                );
            }
        }
        if self.mounted {
            let _ = umount2(&self.rootfs(), MntFlags::MNT_DETACH);
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn default_flags() {
    Case::new("default").check(RunOptions::default());
}

#[test]
fn user_app() {
    Case::new("user").check(RunOptions {
        user: Some("app".into()),
        ..Default::default()
    });
}

#[test]
fn cap_add_and_drop() {
    Case::new("caps").check(RunOptions {
        cap_add: strings(&["SYS_ADMIN"]),
        cap_drop: strings(&["CHOWN"]),
        ..Default::default()
    });
}

/// `--privileged` asks for every capability the caller can grant (this
/// host's root lacks CAP_SYS_RESOURCE; see `build_spec`).
#[test]
fn privileged() {
    Case::new("privileged").check(RunOptions {
        privileged: true,
        ..Default::default()
    });
}

/// A capability the caller does not have cannot be granted: both runtimes
/// refuse, berth naming the capability.
#[test]
fn unobtainable_capability_is_refused() {
    let c = Case::new("nocap");
    let Some(missing) = missing_capability() else {
        eprintln!("every capability is in our bounding set here: no capability to refuse");
        return;
    };
    let opts = RunOptions {
        name: c.name.clone(),
        args: vec!["true".into()],
        cap_add: vec![missing.clone()],
        ..Default::default()
    };
    c.write_spec(&opts, "berth");
    let id = c.id("berth");
    let stdin: OwnedFd = fs::File::open("/dev/null").unwrap().into();
    let out: OwnedFd = fs::File::create(c.dir.path().join("out")).unwrap().into();
    let err = out.try_clone().unwrap();
    let got = c.berth.create(CreateOptions {
        id: &id,
        bundle: &c.bundle(),
        stdio: Stdio::Fds {
            stdin,
            stdout: out,
            stderr: err,
        },
    });
    match got {
        Err(berth::runtime::Error::Failed { message, .. }) => {
            assert!(message.contains(&format!("CAP_{missing}")), "{message}")
        }
        other => panic!("expected a refusal naming CAP_{missing}, got {other:?}"),
    }
    assert!(!c.dir.path().join("berth-state").join(&id).exists());
}

/// The first capability (by number) missing from our bounding set, by name.
fn missing_capability() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap();
    let bnd = u64::from_str_radix(bnd.trim(), 16).unwrap();
    CAP_NAMES
        .iter()
        .enumerate()
        .find(|(i, _)| bnd & (1 << i) == 0)
        .map(|(_, n)| n.to_string())
}

/// Capabilities in kernel numbering, as in linux/capability.h.
const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

#[test]
fn read_only() {
    Case::new("ro").check(RunOptions {
        read_only: true,
        ..Default::default()
    });
}

#[test]
fn resource_limits() {
    Case::new("limits").check(RunOptions {
        memory: Some("64m".into()),
        pids_limit: Some(50),
        cpus: Some(0.5),
        ..Default::default()
    });
}

#[test]
fn ulimit_nofile() {
    Case::new("ulimit").check(RunOptions {
        ulimits: strings(&["nofile=100:200"]),
        ..Default::default()
    });
}

#[test]
fn net_host() {
    Case::new("nethost").check(RunOptions {
        network: Network::Host,
        ..Default::default()
    });
}

#[test]
fn tmpfs_run() {
    Case::new("tmpfs").check(RunOptions {
        tmpfs: strings(&["/run"]),
        ..Default::default()
    });
}

#[test]
fn volume_read_only() {
    let mut c = Case::new("volume");
    let v = format!("{}:/data:ro", c.host_dir().display());
    c.check(RunOptions {
        volumes: vec![v],
        ..Default::default()
    });
}

#[test]
fn workdir() {
    Case::new("workdir").check(RunOptions {
        workdir: Some("/tmp".into()),
        ..Default::default()
    });
}

#[test]
fn env_var() {
    Case::new("env").check(RunOptions {
        env: strings(&["FOO=bar"]),
        ..Default::default()
    });
}
