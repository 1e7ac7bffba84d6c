//! The built-in runtime `berth` runs busybox containers built from
//! `build_spec`: exit codes, isolation, mounts, terminals, and cleanup.

mod common;

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::runtime::{
    build_spec, console, Builtin, CreateOptions, Error, ImageConfig, RunOptions, Runtime, Status,
    Stdio,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use common::busybox_rootfs;

/// One container: its temp dirs, runtime and, on drop, a forced delete.
struct Ctr {
    id: String,
    dir: tempfile::TempDir,
    rt: Builtin,
    pid: Option<i32>,
}

const CGROUP_PARENT: &str = "/berth";

impl Ctr {
    fn new() -> Ctr {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let c = Ctr {
            id: format!(
                "berth-bt-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            rt: Builtin::new(dir.path().join("state")),
            dir,
            pid: None,
        };
        c.make_rootfs();
        c
    }

    fn state_root(&self) -> PathBuf {
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
    fn cgroup(&self) -> String {
        format!("{CGROUP_PARENT}/{}", self.id)
    }

    fn make_rootfs(&self) {
        let root = self.rootfs();
        busybox_rootfs(
            &root,
            &[
                "sh", "echo", "cat", "id", "hostname", "ls", "head", "touch", "test", "[", "grep",
                "tty", "sleep", "wc",
            ],
        );
        fs::create_dir_all(self.container_dir()).unwrap();
        fs::write(root.join("bin/not-exec"), "#!/bin/sh\necho hi\n").unwrap();
    }

    fn write_spec(&self, opts: &RunOptions) {
        let mut spec = build_spec(
            &ImageConfig::default(),
            opts,
            &self.rootfs(),
            &self.container_dir(),
        )
        .unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(self.cgroup())));
        spec.set_linux(Some(linux));
        spec.save(self.bundle().join("config.json")).unwrap();
    }

    fn opts(&self, script: &str) -> RunOptions {
        RunOptions {
            name: self.id.clone(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }
    }

    /// Creates with pipes for stdout and stderr; returns their read ends.
    fn create(&mut self, opts: &RunOptions) -> Result<(OwnedFd, OwnedFd), Error> {
        self.write_spec(opts);
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let stdin: OwnedFd = fs::File::open("/dev/null").unwrap().into();
        let pid = self.rt.create(CreateOptions {
            id: &self.id,
            bundle: &self.bundle(),
            stdio: Stdio::Fds {
                stdin,
                stdout: out_w,
                stderr: err_w,
            },
        })?;
        self.pid = Some(pid);
        Ok((out_r, err_r))
    }

    fn wait(&mut self) -> i32 {
        let pid = self.pid.take().unwrap();
        match waitpid(Pid::from_raw(pid), None).unwrap() {
            WaitStatus::Exited(_, c) => c,
            WaitStatus::Signaled(_, s, _) => 128 + s as i32,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// create + start + wait: (exit code, stdout, stderr).
    fn run(&mut self, opts: &RunOptions) -> (i32, String, String) {
        let (out, err) = self.create(opts).unwrap();
        assert_eq!(self.rt.state(&self.id).unwrap().status, Status::Created);
        self.rt.start(&self.id).unwrap();
        let code = self.wait();
        assert_eq!(self.rt.state(&self.id).unwrap().status, Status::Stopped);
        let read = |fd: OwnedFd| {
            let mut s = String::new();
            fs::File::from(fd).read_to_string(&mut s).unwrap();
            s
        };
        (code, read(out), read(err))
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        ["memory", "pids", "cpu", "devices", "freezer"]
            .iter()
            .map(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(&self.cgroup()[1..])
            })
            .filter(|p| p.exists())
            .collect()
    }

    fn assert_gone(&self) {
        assert!(!self.state_root().join(&self.id).exists(), "state dir left");
        assert_eq!(self.cgroup_dirs(), Vec::<PathBuf>::new(), "cgroup left");
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = self.rt.delete(&self.id, true);
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        for d in self.cgroup_dirs() {
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
fn exit_status_passes_through_and_delete_cleans_up() {
    let mut c = Ctr::new();
    let (code, out, _) = c.run(&c.opts("echo hello; exit 7"));
    assert_eq!(code, 7);
    assert_eq!(out, "hello\n");
    c.rt.delete(&c.id, false).unwrap();
    c.assert_gone();
}

#[test]
fn missing_command_is_command_not_found_and_leaves_nothing() {
    let mut c = Ctr::new();
    let opts = RunOptions {
        name: c.id.clone(),
        args: vec!["no-such-command".into()],
        ..Default::default()
    };
    match c.create(&opts) {
        Err(Error::CommandNotFound { message, .. }) => {
            assert!(message.contains("no-such-command"), "{message}")
        }
        other => panic!("expected CommandNotFound, got {other:?}"),
    }
    c.assert_gone();
}

#[test]
fn non_executable_file_is_command_not_executable() {
    let mut c = Ctr::new();
    for arg in ["/bin/not-exec", "not-exec", "/etc"] {
        let opts = RunOptions {
            name: c.id.clone(),
            args: vec![arg.into()],
            ..Default::default()
        };
        match c.create(&opts) {
            Err(Error::CommandNotExecutable { .. }) => {}
            other => panic!("{arg}: expected CommandNotExecutable, got {other:?}"),
        }
        c.assert_gone();
    }
}

#[test]
fn failed_setup_leaves_nothing() {
    let mut c = Ctr::new();
    let mut opts = c.opts("true");
    // A file where a directory must be mounted makes the tmpfs mount fail.
    fs::write(c.rootfs().join("run"), "").unwrap();
    opts.tmpfs = vec!["/run/x".into()];
    match c.create(&opts) {
        Err(Error::Failed { message, .. }) => assert!(message.contains("/run/x"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    c.assert_gone();
}

#[test]
fn pid_one_hostname_and_no_host_processes() {
    let mut c = Ctr::new();
    let mut opts = c.opts("echo $$; hostname; echo /proc/[0-9]*; echo /proc/self/fd/*");
    opts.hostname = Some("boxed".into());
    let (code, out, err) = c.run(&opts);
    assert_eq!(code, 0, "{err}");
    // Only stdio (and the glob's own directory fd): nothing leaked from
    // the test harness's other threads.
    assert_eq!(
        out,
        "1\nboxed\n/proc/1\n/proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 /proc/self/fd/3\n"
    );
}

#[test]
fn proc_sys_and_sys_are_read_only() {
    let mut c = Ctr::new();
    let opts = c.opts(
        "echo x > /proc/sys/kernel/hostname 2>/dev/null && echo proc-writable; \
         touch /sys/x 2>/dev/null && echo sys-writable; \
         touch /written && echo root-writable",
    );
    let (code, out, err) = c.run(&opts);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "root-writable\n");
}

#[test]
fn read_only_root() {
    let mut c = Ctr::new();
    let mut opts =
        c.opts("touch /written 2>/dev/null || echo refused; touch /dev/shm/ok && echo shm");
    opts.read_only = true;
    let (code, out, err) = c.run(&opts);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "refused\nshm\n");
    assert!(!c.rootfs().join("written").exists());
}

#[test]
fn volume_bind() {
    let mut c = Ctr::new();
    let host = c.dir.path().join("vol");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("in"), "from host\n").unwrap();
    let mut opts = c.opts("cat /data/in; echo back > /data/out");
    opts.volumes = vec![format!("{}:/data", host.display())];
    let (code, out, err) = c.run(&opts);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from host\n");
    assert_eq!(fs::read_to_string(host.join("out")).unwrap(), "back\n");
}

#[test]
fn terminal_over_console_socket() {
    let mut c = Ctr::new();
    let mut opts = c.opts("tty; echo on-the-terminal");
    opts.tty = true;
    c.write_spec(&opts);
    let sock = c.dir.path().join("console.sock");
    let listener = console::listen(&sock).unwrap();
    let receiver = std::thread::spawn(move || console::receive_master(&listener).unwrap());
    let pid =
        c.rt.create(CreateOptions {
            id: &c.id,
            bundle: &c.bundle(),
            stdio: Stdio::Terminal {
                console_socket: sock.clone(),
            },
        })
        .unwrap();
    c.pid = Some(pid);
    let master = receiver.join().unwrap();
    c.rt.start(&c.id).unwrap();
    let code = c.wait();
    assert_eq!(code, 0);
    // Read what is buffered; EIO means the slave side is gone.
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out, "/dev/pts/0\r\non-the-terminal\r\n");
}

#[test]
fn kill_and_force_delete_a_running_container() {
    let mut c = Ctr::new();
    let _fds = c.create(&c.opts("sleep 100")).unwrap();
    c.rt.start(&c.id).unwrap();
    assert_eq!(c.rt.state(&c.id).unwrap().status, Status::Running);
    assert!(c.rt.delete(&c.id, false).is_err());
    c.rt.kill(&c.id, nix::sys::signal::SIGTERM).unwrap_or(());
    c.rt.delete(&c.id, true).unwrap();
    let code = c.wait();
    assert!(code == 128 + 15 || code == 128 + 9, "{code}");
    c.assert_gone();
}

#[test]
fn user_namespace_with_id_maps() {
    let mut c = Ctr::new();
    let opts = c.opts("id -u; cat /proc/self/uid_map; ls /dev/null");
    c.write_spec(&opts);
    let path = c.bundle().join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    v["linux"]["uidMappings"] = map.clone();
    v["linux"]["gidMappings"] = map;
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    // The root filesystem must belong to the namespace's root.
    fn chown_tree(p: &Path) {
        std::os::unix::fs::lchown(p, Some(100000), Some(100000)).unwrap();
        if p.is_dir() && !p.is_symlink() {
            for e in fs::read_dir(p).unwrap() {
                chown_tree(&e.unwrap().path());
            }
        }
    }
    chown_tree(&c.rootfs());
    // write_spec would overwrite the edited file: create directly.
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let stdin: OwnedFd = fs::File::open("/dev/null").unwrap().into();
    let pid =
        c.rt.create(CreateOptions {
            id: &c.id,
            bundle: &c.bundle(),
            stdio: Stdio::Fds {
                stdin,
                stdout: out_w,
                stderr: err_w,
            },
        })
        .unwrap();
    c.pid = Some(pid);
    c.rt.start(&c.id).unwrap();
    let code = c.wait();
    let mut out = String::new();
    fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut err = String::new();
    fs::File::from(err_r).read_to_string(&mut err).unwrap();
    assert_eq!(code, 0, "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["0", "0", "100000", "65536", "/dev/null"], "{out}");
}
