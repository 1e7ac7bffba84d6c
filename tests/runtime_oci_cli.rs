//! `OciCli` against the real runc (and crun, which this host's hybrid
//! cgroups make refuse): the whole lifecycle, stdio, terminals, signals,
//! and the errors a user acts on.
//!
//! Every test calls `become_subreaper` so the container's init, which runc
//! leaves behind, is re-parented to this process and can be waited for.
//! That is harmless for the rest of this test binary (its own binary, so no
//! other suite shares the process): the only other children are the runc
//! processes `OciCli` waits for itself, and an orphan nobody waits for
//! stays a zombie only until this process exits.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::runtime::{
    become_subreaper, build_spec, console, CreateOptions, Error, ImageConfig, OciCli, RunOptions,
    Runtime, Signal, Status, Stdio,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// One container under a fresh runc state root; on drop, `delete --force`
/// (which kills it if it still runs) and the temp dirs go.
struct Ctr {
    id: String,
    dir: tempfile::TempDir,
    rt: OciCli,
}

impl Ctr {
    fn new() -> Ctr {
        become_subreaper().unwrap();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        // scripts/install-deps.sh installs runc: without it these tests
        // must fail, not pass having checked nothing.
        let rt = OciCli::find("runc", dir.path().join("state"))
            .expect("runc is not on PATH: run scripts/install-deps.sh");
        let ctr = Ctr {
            id: format!(
                "berth-oci-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            dir,
            rt,
        };
        ctr.make_rootfs();
        ctr
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    fn make_rootfs(&self) {
        let root = self.rootfs();
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "cat", "sleep", "test", "["] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(root.join("bin/noexec"), "#!/bin/sh\necho ran\n").unwrap();
        fs::set_permissions(root.join("bin/noexec"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    }

    /// Writes `config.json` running `args`.
    fn spec(&self, args: &[&str], tty: bool) {
        let container_dir = self.dir.path().join("container");
        fs::create_dir_all(&container_dir).unwrap();
        let opts = RunOptions {
            name: self.id.clone(),
            args: args.iter().map(|s| s.to_string()).collect(),
            tty,
            ..Default::default()
        };
        let spec = build_spec(
            &ImageConfig::default(),
            &opts,
            &self.rootfs(),
            &container_dir,
        )
        .unwrap();
        spec.save(self.bundle().join("config.json")).unwrap();
    }

    fn create(&self, stdio: Stdio) -> Result<i32, Error> {
        self.rt.create(CreateOptions {
            id: &self.id,
            bundle: &self.bundle(),
            stdio,
        })
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = self.rt.delete(&self.id, true);
    }
}

/// Pipes for stdout and stderr, `/dev/null` for stdin: the container's
/// `Stdio` and our read ends.
fn pipes() -> (Stdio, OwnedFd, OwnedFd) {
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let stdin = fs::File::open("/dev/null").unwrap().into();
    (
        Stdio::Fds {
            stdin,
            stdout: out_w,
            stderr: err_w,
        },
        out_r,
        err_r,
    )
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

fn wait(pid: i32) -> WaitStatus {
    waitpid(Pid::from_raw(pid), None).unwrap()
}

#[test]
fn lifecycle_exit_status_and_stdio() {
    let c = Ctr::new();
    c.spec(&["sh", "-c", "echo out; echo err >&2; exit 3"], false);
    let (stdio, out, err) = pipes();
    let pid = c.create(stdio).unwrap();
    let st = c.rt.state(&c.id).unwrap();
    assert_eq!(st.status, Status::Created);
    assert_eq!(st.pid, Some(pid));
    assert_eq!(st.bundle, c.bundle());
    assert_eq!(st.id, c.id);
    c.rt.start(&c.id).unwrap();
    assert_eq!(wait(pid), WaitStatus::Exited(Pid::from_raw(pid), 3));
    // Only the container's output: runc logs to its own file.
    assert_eq!(read_all(out), "out\n");
    assert_eq!(read_all(err), "err\n");
    let st = c.rt.state(&c.id).unwrap();
    assert_eq!((st.status, st.pid), (Status::Stopped, None));
    c.rt.delete(&c.id, false).unwrap();
    let e = c.rt.state(&c.id).unwrap_err();
    assert!(matches!(e, Error::ContainerNotFound { .. }), "{e}");
    // No log or pid file of ours is left in the state root.
    let left: Vec<_> = fs::read_dir(c.rt.state_root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn terminal_through_console_socket() {
    let c = Ctr::new();
    c.spec(&["sh", "-c", "test -t 0 && test -t 1 && echo tty"], true);
    let sock = c.dir.path().join("console.sock");
    let listener = console::listen(&sock).unwrap();
    let receiver = std::thread::spawn(move || console::receive_master(&listener));
    let pid = c
        .create(Stdio::Terminal {
            console_socket: sock,
        })
        .unwrap();
    let master = receiver.join().unwrap().unwrap();
    c.rt.start(&c.id).unwrap();
    let mut master = fs::File::from(master);
    let mut got = Vec::new();
    // The slave's last close makes reads fail with EIO: that is the end.
    let mut buf = [0u8; 256];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(wait(pid), WaitStatus::Exited(Pid::from_raw(pid), 0));
    assert_eq!(String::from_utf8_lossy(&got), "tty\r\n");
}

#[test]
fn kill_with_sigterm() {
    let c = Ctr::new();
    // The container's init gets no default signal actions from the kernel,
    // so it traps TERM itself.
    c.spec(
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        false,
    );
    let (stdio, out, _err) = pipes();
    let pid = c.create(stdio).unwrap();
    c.rt.start(&c.id).unwrap();
    let mut out = fs::File::from(out);
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    assert_eq!(c.rt.state(&c.id).unwrap().status, Status::Running);
    c.rt.kill(&c.id, Signal::SIGTERM).unwrap();
    assert_eq!(wait(pid), WaitStatus::Exited(Pid::from_raw(pid), 7));
    let e = c.rt.kill(&c.id, Signal::SIGTERM).unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");
}

#[test]
fn delete_force_kills_a_running_container() {
    let c = Ctr::new();
    c.spec(&["sleep", "100"], false);
    let (stdio, _out, _err) = pipes();
    let pid = c.create(stdio).unwrap();
    c.rt.start(&c.id).unwrap();
    let e = c.rt.delete(&c.id, false).unwrap_err();
    assert!(matches!(e, Error::State { .. }), "{e}");
    c.rt.delete(&c.id, true).unwrap();
    assert_eq!(
        wait(pid),
        WaitStatus::Signaled(Pid::from_raw(pid), Signal::SIGKILL, false)
    );
}

#[test]
fn missing_command_is_not_found() {
    for cmd in ["/bin/nonexistent", "nonexistent"] {
        let c = Ctr::new();
        c.spec(&[cmd], false);
        let (stdio, _out, _err) = pipes();
        let e = c.create(stdio).unwrap_err();
        match &e {
            Error::CommandNotFound {
                runtime,
                id,
                message,
            } => {
                assert_eq!((runtime.as_str(), id.as_str()), ("runc", c.id.as_str()));
                assert!(message.contains(cmd), "{message}");
            }
            other => panic!("expected CommandNotFound, got {other:?}"),
        }
        // Nothing of the container is left.
        let e = c.rt.state(&c.id).unwrap_err();
        assert!(matches!(e, Error::ContainerNotFound { .. }), "{e}");
    }
}

#[test]
fn non_executable_command_is_refused() {
    let c = Ctr::new();
    c.spec(&["/bin/noexec"], false);
    let (stdio, _out, _err) = pipes();
    let e = c.create(stdio).unwrap_err();
    match &e {
        Error::CommandNotExecutable { message, .. } => {
            assert!(message.contains("permission denied"), "{message}")
        }
        other => panic!("expected CommandNotExecutable, got {other:?}"),
    }
}

#[test]
fn unknown_container() {
    let c = Ctr::new();
    for e in [
        c.rt.state("nope").unwrap_err(),
        c.rt.start("nope").unwrap_err(),
        c.rt.kill("nope", Signal::SIGKILL).unwrap_err(),
        c.rt.delete("nope", false).unwrap_err(),
    ] {
        assert!(matches!(e, Error::ContainerNotFound { .. }), "{e}");
    }
}

#[test]
fn crun_refuses_this_hybrid_host() {
    let c = Ctr::new();
    let crun = match OciCli::find("crun", c.dir.path().join("crun")) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("SKIPPED: crun not installed ({e}); scripts/install-deps.sh installs it");
            return;
        }
    };
    if !hybrid_cgroups() {
        eprintln!("SKIPPED: this host's cgroups are not hybrid; crun would accept it");
        return;
    }
    c.spec(&["true"], false);
    let (stdio, _out, _err) = pipes();
    let e = crun
        .create(CreateOptions {
            id: &c.id,
            bundle: &c.bundle(),
            stdio,
        })
        .unwrap_err();
    match &e {
        Error::Unsupported { runtime, message } => {
            assert_eq!(runtime, "crun");
            assert!(message.contains("hybrid mode not supported"), "{message}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let _ = crun.delete(&c.id, true);
}

fn hybrid_cgroups() -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let fstype = |l: &str| {
        l.split(" - ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    };
    let types: Vec<String> = info.lines().filter_map(fstype).collect();
    types.iter().any(|t| t == "cgroup") && types.iter().any(|t| t == "cgroup2")
}

#[test]
fn open_by_name_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let rt = berth::runtime::open(dir.path(), "runc").unwrap();
    assert_eq!(rt.name(), "runc");
    let e = rt.state("nope").unwrap_err();
    assert!(matches!(e, Error::ContainerNotFound { .. }), "{e}");
    assert!(dir.path().join("runtime/runc").is_dir());

    let runc = OciCli::find("runc", dir.path().into()).unwrap();
    let path = runc.binary().to_str().unwrap();
    let rt = berth::runtime::open(dir.path(), path).unwrap();
    assert_eq!(rt.name(), path);
    rt.state("nope").unwrap_err();
    assert!(dir.path().join("runtime/path-runc").is_dir());

    assert!(berth::runtime::open(dir.path(), "nosuch").is_err());
    assert!(berth::runtime::open(dir.path(), "/nonexistent/runc").is_err());
}
