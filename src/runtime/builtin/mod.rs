//! `berth`, the built-in runtime: namespaces, mounts, cgroup and
//! `pivot_root` done by berth itself, no runtime binary involved.
//!
//! # How a container is made
//!
//! `create` reads `config.json`, checks everything it asks for and
//! prepares it ([`plan`]), creates the container's cgroup, then `clone`s
//! the init with its new namespaces as a direct child of the caller (pid 1
//! of its pid namespace). The init waits until the parent has put it in
//! its cgroup, then sets the container up ([`child`]), reports readiness
//! over a pipe and blocks opening `exec.fifo` for writing. `start` opens
//! the fifo for reading and takes the init's byte; the init then `execve`s
//! the command.
//!
//! # State and guarantees
//!
//! Each container has `<state_root>/<id>/` holding `state.json` (pid, the
//! pid's start time, bundle, cgroup) and, until started, `exec.fifo`. A
//! pid only counts as the container's while its start time matches, so a
//! recycled pid is never signalled. A `create` that fails kills and reaps
//! its init and removes the cgroup and the state directory: nothing is
//! left behind. Every verb works from the files alone, in any process.

mod child;
mod options;
mod plan;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::kill;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{CreateOptions, Error, Result, Runtime, Signal, Spec, State, Status, Stdio};
use crate::cgroups::{Cgroup, Hierarchy};
use plan::Plan;

const NAME: &str = "berth";
const STATE_FILE: &str = "state.json";
const FIFO: &str = "exec.fifo";
/// The init's stack: its frames are small, but debug builds are generous.
const STACK_SIZE: usize = 8 << 20;
/// How long `start` and `delete` wait for the init.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// How long `create` waits for the init to finish setting up.
const SETUP_LIMIT: Duration = Duration::from_secs(60);

/// The built-in runtime; its state lives in `<state_root>/<id>/`.
#[derive(Debug, Clone)]
pub struct Builtin {
    state_root: PathBuf,
}

/// `state.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: tells our init from a recycled pid.
    start_time: u64,
    bundle: PathBuf,
    cgroup: String,
    /// Seconds since the epoch.
    created: u64,
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && id.len() <= 1024
}

/// The start time and whether the process is a zombie (or dead), from
/// `/proc/<pid>/stat`; `None` when there is no such process.
fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((start, matches!(*state, "Z" | "X")))
}

impl Record {
    /// The init still runs (a zombie does not).
    fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((start, false)) if start == self.start_time)
    }
}

fn failed(id: &str, action: &'static str, message: impl Into<String>) -> Error {
    Error::Failed {
        runtime: NAME.into(),
        action,
        id: id.into(),
        message: message.into(),
    }
}

/// Undoes a partial `create` unless disarmed.
struct Undo<'a> {
    id: &'a str,
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    child: Option<Pid>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.kill_all().and_then(|()| cg.remove()) {
                eprintln!("berth: container {}: cleaning up cgroup: {e}", self.id);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Os {
        action: "creating pipe",
        source: e.into(),
    })
}

/// What the init said, or how it ended without saying.
enum Report {
    Ready,
    Message(u8, String),
    Died(String),
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => {
            format!("container init exited with status {code} before it was ready")
        }
        WaitStatus::Signaled(_, sig, _) => {
            format!("container init was killed by {sig} before it was ready")
        }
        other => format!("container init ended before it was ready ({other:?})"),
    }
}

/// Waits for the init's one message. The init is never reaped here: its
/// pid stays ours (a zombie) until `Undo` kills and reaps it, so no
/// recycled pid can be signalled. The pipe's write end may also live in
/// other processes forked meanwhile by other threads, so the init's exit is
/// watched too, not only end-of-file.
fn wait_report(report: &OwnedFd, pid: Pid) -> Report {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + SETUP_LIMIT;
    loop {
        if Instant::now() > deadline {
            return Report::Died(format!(
                "container init did not finish setting up within {}s",
                SETUP_LIMIT.as_secs()
            ));
        }
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0);
        if ready > 0 {
            match nix::unistd::read(report, &mut buf) {
                Ok(n) if n >= 3 => {
                    let len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
                    let body = String::from_utf8_lossy(&buf[3..n.min(3 + len)]).into_owned();
                    return match buf[0] {
                        child::READY => Report::Ready,
                        kind => Report::Message(kind, body),
                    };
                }
                Ok(_) | Err(_) => {
                    let status = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
                    return Report::Died(status.map(describe).unwrap_or_else(|e| e.to_string()));
                }
            }
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => {
                // One last look: the message may have raced the exit.
                let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0 {
                    continue;
                }
                let status = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
                return Report::Died(status.map(describe).unwrap_or_else(|e| e.to_string()));
            }
            Err(e) => return Report::Died(format!("waiting for container init: {e}")),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

impl Builtin {
    pub fn new(state_root: PathBuf) -> Builtin {
        Builtin { state_root }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.state_root.join(id)
    }

    fn load(&self, id: &str) -> Result<Record> {
        if !valid_id(id) {
            return Err(Error::ContainerNotFound {
                runtime: NAME.into(),
                id: id.into(),
            });
        }
        let path = self.dir(id).join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ContainerNotFound {
                    runtime: NAME.into(),
                    id: id.into(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    action: "reading",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| failed(id, "reading state of", format!("{}: {e}", path.display())))
    }

    fn status(&self, rec: &Record) -> Status {
        if !rec.alive() {
            Status::Stopped
        } else if self.dir(&rec.id).join(FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    fn do_create(&self, opts: CreateOptions<'_>) -> Result<i32> {
        let id = opts.id;
        if !valid_id(id) {
            return Err(Error::InvalidArgument(format!(
                "container id {id:?}: must match [A-Za-z0-9][A-Za-z0-9_.-]*"
            )));
        }
        let config = opts.bundle.join("config.json");
        let spec = Spec::load(&config)
            .map_err(|e| failed(id, "creating", format!("loading {}: {e}", config.display())))?;
        let cgroup_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("/berth/{id}"));
        let cgroup_path = if cgroup_path.starts_with('/') {
            cgroup_path
        } else {
            format!("/{cgroup_path}")
        };
        let plan = Plan::new(&spec, &cgroup_path).map_err(|m| failed(id, "creating", m))?;

        fs::create_dir_all(&self.state_root).map_err(|source| Error::Io {
            action: "creating runtime state directory",
            path: self.state_root.clone(),
            source,
        })?;
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::State {
                    runtime: NAME.into(),
                    id: id.into(),
                    message: "a container with this id already exists".into(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    action: "creating",
                    path: dir,
                    source,
                })
            }
        }
        let mut undo = Undo {
            id,
            dir: dir.clone(),
            cgroup: None,
            child: None,
            armed: true,
        };

        let fifo_path = dir.join(FIFO);
        nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o622)).map_err(|e| {
            Error::Io {
                action: "creating",
                path: fifo_path.clone(),
                source: e.into(),
            }
        })?;
        // The fifo's mode must survive our umask: anyone may write it.
        let _ = nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &fifo_path,
            Mode::from_bits_truncate(0o622),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
        let fifo = nix::fcntl::open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::Io {
                action: "opening",
                path: fifo_path.clone(),
                source: e.into(),
            })?;

        let cg_err = |e: crate::cgroups::Error| failed(id, "creating", e.to_string());
        let hierarchy = Hierarchy::detect().map_err(cg_err)?;
        let cgroup = Cgroup::create(&hierarchy, &cgroup_path).map_err(cg_err)?;
        undo.cgroup = Some(cgroup.clone());
        if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cgroup.apply(r).map_err(cg_err)?;
        }

        let (sync_r, sync_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let console = match &opts.stdio {
            Stdio::Terminal { console_socket } => Some(
                UnixStream::connect(console_socket).map_err(|source| Error::Io {
                    action: "connecting to console socket",
                    path: console_socket.clone(),
                    source,
                })?,
            ),
            Stdio::Fds { .. } => None,
        };
        let stdio = match &opts.stdio {
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => Some([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]),
            Stdio::Terminal { .. } => None,
        };
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let argv = ptrs(&plan.exec.argv);
        let envp = ptrs(&plan.exec.envp);
        let fds = child::Fds {
            sync: sync_r.as_raw_fd(),
            report: report_w.as_raw_fd(),
            stdio,
            console: console.as_ref().map(|c| c.as_raw_fd()),
            fifo: fifo.as_raw_fd(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
        };

        let mut stack = vec![0u8; STACK_SIZE];
        let cb = Box::new(|| child::init(&plan, &fds));
        // SAFETY: the child runs `child::init`, which only makes system
        // calls on data prepared above (no allocation, no locks) and never
        // returns; the stack is ours until the child execs or exits, since
        // without CLONE_VM the child has its own copy of memory.
        let pid =
            unsafe { nix::sched::clone(cb, &mut stack, plan.clone_flags, Some(libc::SIGCHLD)) }
                .map_err(|e| failed(id, "creating", format!("clone: {}", e.desc())))?;
        undo.child = Some(pid);
        drop((sync_r, report_w, console, fifo));

        if let Some((uid_map, gid_map)) = &plan.id_maps {
            for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                let path = PathBuf::from(format!("/proc/{pid}/{file}"));
                fs::write(&path, map).map_err(|source| Error::Io {
                    action: "writing",
                    path,
                    source,
                })?;
            }
        }
        cgroup.add_process(pid.as_raw()).map_err(cg_err)?;
        nix::unistd::write(&sync_w, b"G").map_err(|e| Error::Os {
            action: "releasing container init",
            source: e.into(),
        })?;

        match wait_report(&report_r, pid) {
            Report::Ready => {}
            Report::Message(child::NOT_FOUND, message) => {
                return Err(Error::CommandNotFound {
                    runtime: NAME.into(),
                    id: id.into(),
                    message,
                })
            }
            Report::Message(child::NOT_EXECUTABLE, message) => {
                return Err(Error::CommandNotExecutable {
                    runtime: NAME.into(),
                    id: id.into(),
                    message,
                })
            }
            Report::Message(_, message) | Report::Died(message) => {
                return Err(failed(id, "creating", message))
            }
        }

        let start_time = proc_stat(pid.as_raw())
            .map(|(s, _)| s)
            .ok_or_else(|| failed(id, "creating", "container init vanished after setup"))?;
        let record = Record {
            id: id.into(),
            pid: pid.as_raw(),
            start_time,
            bundle: opts.bundle.to_path_buf(),
            cgroup: cgroup_path,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| failed(id, "creating", format!("encoding state: {e}")))?;
        let state = dir.join(STATE_FILE);
        write_atomic(&state, &json).map_err(|source| Error::Io {
            action: "writing",
            path: state,
            source,
        })?;
        undo.armed = false;
        Ok(pid.as_raw())
    }
}

impl Runtime for Builtin {
    fn name(&self) -> &str {
        NAME
    }

    fn create(&self, opts: CreateOptions<'_>) -> Result<i32> {
        self.do_create(opts)
    }

    fn start(&self, id: &str) -> Result<()> {
        let rec = self.load(id)?;
        let state_err = |message: &str| Error::State {
            runtime: NAME.into(),
            id: id.into(),
            message: message.into(),
        };
        match self.status(&rec) {
            Status::Created => {}
            Status::Running => return Err(state_err("already started")),
            Status::Stopped => return Err(state_err("not running: its init has exited")),
        }
        let fifo_path = self.dir(id).join(FIFO);
        // Non-blocking, so a dead init cannot hang us: its open for writing
        // completes as soon as we hold the read end.
        let fifo = nix::fcntl::open(
            &fifo_path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            action: "opening",
            path: fifo_path.clone(),
            source: e.into(),
        })?;
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut byte = [0u8; 1];
        loop {
            let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u16));
            match nix::unistd::read(&fifo, &mut byte) {
                Ok(1) => break,
                Ok(_) | Err(Errno::EAGAIN) => {}
                Err(e) => return Err(failed(id, "starting", format!("reading exec fifo: {e}"))),
            }
            if !rec.alive() {
                return Err(failed(
                    id,
                    "starting",
                    "container init exited before it was started",
                ));
            }
            if Instant::now() > deadline {
                return Err(failed(
                    id,
                    "starting",
                    "container init did not take the start signal",
                ));
            }
        }
        fs::remove_file(&fifo_path).map_err(|source| Error::Io {
            action: "removing",
            path: fifo_path,
            source,
        })?;
        Ok(())
    }

    fn state(&self, id: &str) -> Result<State> {
        let rec = self.load(id)?;
        let status = self.status(&rec);
        Ok(State {
            id: rec.id.clone(),
            status,
            pid: (status != Status::Stopped).then_some(rec.pid),
            bundle: rec.bundle.clone(),
        })
    }

    fn kill(&self, id: &str, signal: Signal) -> Result<()> {
        let rec = self.load(id)?;
        if !rec.alive() {
            return Err(Error::State {
                runtime: NAME.into(),
                id: id.into(),
                message: "not running".into(),
            });
        }
        kill(Pid::from_raw(rec.pid), signal)
            .map_err(|e| failed(id, "signalling", format!("kill {}: {e}", rec.pid)))
    }

    fn delete(&self, id: &str, force: bool) -> Result<()> {
        let rec = self.load(id)?;
        let status = self.status(&rec);
        if status == Status::Running && !force {
            return Err(Error::State {
                runtime: NAME.into(),
                id: id.into(),
                message: "still running: stop it first, or delete with force".into(),
            });
        }
        let cg_err = |e: crate::cgroups::Error| failed(id, "deleting", e.to_string());
        let hierarchy = Hierarchy::detect().map_err(cg_err)?;
        let cgroup = Cgroup::open(&hierarchy, &rec.cgroup);
        if status != Status::Stopped {
            cgroup.kill_all().map_err(cg_err)?;
            if rec.alive() {
                let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
            }
            let deadline = Instant::now() + WAIT_LIMIT;
            while rec.alive() {
                if Instant::now() > deadline {
                    return Err(failed(
                        id,
                        "deleting",
                        format!("pid {} did not die", rec.pid),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        cgroup.remove().map_err(cg_err)?;
        let dir = self.dir(id);
        fs::remove_dir_all(&dir).map_err(|source| Error::Io {
            action: "removing",
            path: dir,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("abc-1.2_x"));
        assert!(!valid_id(""));
        assert!(!valid_id("-x"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(".."));
    }

    #[test]
    fn our_own_stat() {
        let (start, zombie) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(!zombie);
        assert!(proc_stat(i32::MAX).is_none());
    }
}
