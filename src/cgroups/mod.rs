//! Control groups: one interface over cgroup v1 and v2.
//!
//! # Lifecycle
//!
//! 1. [`Hierarchy::detect`] finds how this host mounts cgroups. Hybrid
//!    hosts (v1 controllers plus a controller-less cgroup2) are v1; a host
//!    whose cgroup2 has controllers is v2.
//! 2. [`Cgroup::create`] makes the group (`/berth/<id>`) under every
//!    controller we use, idempotently: creating twice is fine, so a crashed
//!    run can be retried.
//! 3. [`Cgroup::apply`] writes an OCI spec's resource limits.
//! 4. [`Cgroup::add_process`] moves the container's init in; its children
//!    follow it by themselves.
//! 5. [`Cgroup::kill_all`] and [`Cgroup::remove`] tear it down. `remove`
//!    tolerates a group already gone, so any process may clean up after
//!    any other.
//!
//! While a container runs, [`Cgroup::watch_oom`] gives its waiter a
//! descriptor that wakes at each OOM kill in the group (see [`FileWatch`]).
//!
//! [`Cgroup::stats`] reads the group's counters (cpu, memory, pids, block
//! I/O, pressure) at any point while it exists; see `stats.rs` for where
//! each comes from on each version.
//!
//! Nothing is kept in memory between calls: [`Cgroup::open`] rebuilds the
//! handle from the path alone, so the process that removes a group need
//! not be the one that created it.

mod fs;
mod hierarchy;
mod stats;

pub(crate) use hierarchy::unescape_mountinfo;
mod v1;
mod v2;
mod watch;

pub use watch::FileWatch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub use hierarchy::Hierarchy;
use hierarchy::Layout;
pub use stats::{CpuStats, IoStats, MemoryStats, PidsStats, Pressure, PressureLine, Stats};

use crate::ErrorKind;

/// Which cgroup API a [`Hierarchy`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One control group, named by its path below each hierarchy's root.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    path: String,
}

/// How long teardown waits for dying processes to leave the group.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const SETTLE_POLL: Duration = Duration::from_millis(10);

impl Cgroup {
    /// Creates `path` (like `/berth/<id>`) under every controller we use:
    /// on v1 cpu, cpuacct, cpuset, memory, devices, pids, blkio and freezer
    /// where mounted (new cpuset groups get their parent's cpus and mems,
    /// or no process could join them); on v2 the available ones among cpu,
    /// memory, pids and io are enabled in each ancestor's
    /// `cgroup.subtree_control`. Creating an existing group is fine.
    pub fn create(h: &Hierarchy, path: &str) -> Result<Cgroup> {
        let cg = Cgroup::open(h, path);
        let rel = cg.relative()?;
        match &h.layout {
            Layout::V1(controllers) => v1::create(controllers, rel)?,
            Layout::V2(root) => v2::create(root, rel)?,
        }
        Ok(cg)
    }

    /// A handle on an existing group; touches nothing.
    pub fn open(h: &Hierarchy, path: &str) -> Cgroup {
        Cgroup {
            hierarchy: h.clone(),
            path: path.to_string(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn version(&self) -> Version {
        self.hierarchy.version()
    }

    /// Applies an OCI spec's `linux.resources`: memory limit, reservation
    /// and swap, cpu quota/period/shares/cpus/mems, pids limit, and on v1
    /// the device rules (deny all, the spec's rules in order, then
    /// the few devices any container needs: null, zero, full, random,
    /// urandom, tty, console, ptmx, /dev/pts/*). On v2 `unified`
    /// entries are written as given.
    ///
    /// On v2 the kernel enforces device rules only through an eBPF program
    /// attached to the group; berth does not load one, so device rules are
    /// skipped there (not an error): the container's `/dev` holds only the
    /// devices the spec lists, which is the line of defence left.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        let rel = self.relative()?;
        match &self.hierarchy.layout {
            Layout::V1(controllers) => v1::apply(controllers, rel, r),
            Layout::V2(root) => v2::apply(&root.join(rel), r),
        }
    }

    /// Moves process `pid` (and its threads) into the group in every
    /// hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.dirs()? {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The pids in the group: from the memory controller on v1 (any
    /// controller when memory is not mounted), the group itself on v2.
    pub fn processes(&self) -> Result<Vec<i32>> {
        fs::read_pids(&self.procs_dir()?.join("cgroup.procs"))
    }

    /// OOM kills in this group so far: `oom_kill` in `memory.events` (v2)
    /// or `memory.oom_control` (v1). Kernels too old to count them give 0.
    pub fn oom_kills(&self) -> Result<u64> {
        let rel = self.relative()?;
        let file = match &self.hierarchy.layout {
            Layout::V1(c) => v1::dir(c, "memory", rel)?.join("memory.oom_control"),
            Layout::V2(root) => root.join(rel).join("memory.events"),
        };
        Ok(fs::read_keyed(&file, "oom_kill")?.unwrap_or(0))
    }

    /// SIGKILLs every process in the group and waits until it is empty.
    /// v2 uses `cgroup.kill` where the kernel has it (no race with forks);
    /// otherwise (v1) the group is frozen when the freezer is mounted, so
    /// nothing forks while we read the pid list, and every pid is killed
    /// until none is left. A group that does not exist has nothing to kill.
    pub fn kill_all(&self) -> Result<()> {
        let rel = self.relative()?;
        let procs = self.procs_dir()?.join("cgroup.procs");
        if !procs.exists() {
            // No group, no processes: a teardown that runs twice is fine.
            return Ok(());
        }
        if let Layout::V2(root) = &self.hierarchy.layout {
            let kill_file = root.join(rel).join("cgroup.kill");
            if kill_file.exists() {
                fs::write(&kill_file, "1")?;
                return wait_empty(&procs);
            }
        }
        let freezer = match &self.hierarchy.layout {
            Layout::V1(c) => c.get("freezer").map(|m| m.join(rel).join("freezer.state")),
            Layout::V2(_) => None,
        };
        if let Some(state) = &freezer {
            fs::write(state, "FROZEN")?;
        }
        let killed = kill_listed(&procs);
        // Killed tasks die only once thawed: thaw whatever happened.
        if let Some(state) = &freezer {
            fs::write(state, "THAWED")?;
        }
        killed?;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let pids = fs::read_pids(&procs)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Busy {
                    action: "killing every process in",
                    path: procs,
                    pids,
                });
            }
            kill_listed(&procs)?;
            std::thread::sleep(SETTLE_POLL);
        }
    }

    /// Removes the group in every hierarchy, child groups first, retrying
    /// briefly while dying processes leave (`EBUSY`). A group that is not
    /// there is fine.
    pub fn remove(&self) -> Result<()> {
        for dir in self.dirs()? {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// The path below each hierarchy root, checked: absolute, no `..`, not
    /// the root itself (removing that would be a disaster).
    fn relative(&self) -> Result<&str> {
        let rel = self.path.trim_start_matches('/');
        let bad = |reason: &str| Error::InvalidPath {
            path: self.path.clone(),
            reason: reason.to_string(),
        };
        if !self.path.starts_with('/') {
            return Err(bad("must start with /"));
        }
        if rel.is_empty() {
            return Err(bad("is the root cgroup"));
        }
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad("has an empty, . or .. component"));
        }
        Ok(rel)
    }

    /// The group's directory in each distinct hierarchy we use.
    fn dirs(&self) -> Result<Vec<PathBuf>> {
        let rel = self.relative()?;
        Ok(match &self.hierarchy.layout {
            Layout::V1(c) => v1::dirs(c, rel),
            Layout::V2(root) => vec![root.join(rel)],
        })
    }

    fn procs_dir(&self) -> Result<PathBuf> {
        let rel = self.relative()?;
        match &self.hierarchy.layout {
            Layout::V1(c) => {
                v1::dir(c, "memory", rel).or_else(|e| v1::dirs(c, rel).into_iter().next().ok_or(e))
            }
            Layout::V2(root) => Ok(root.join(rel)),
        }
    }
}

/// SIGKILLs each pid listed in `procs`; one that already left is fine.
fn kill_listed(procs: &Path) -> Result<()> {
    for pid in fs::read_pids(procs)? {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                return Err(Error::Signal {
                    pid,
                    path: procs.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
    Ok(())
}

fn wait_empty(procs: &Path) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let pids = fs::read_pids(procs)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Busy {
                action: "waiting for killed processes to leave",
                path: procs.to_path_buf(),
                pids,
            });
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

/// rmdir `dir` after its child groups, depth first.
fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::io("listing cgroup", dir, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("listing cgroup", dir, source))?;
        let is_dir = entry
            .file_type()
            .map_err(|source| Error::io("listing cgroup", dir, source))?
            .is_dir();
        if is_dir {
            remove_tree(&entry.path())?;
        }
    }
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(SETTLE_POLL);
            }
            Err(source) => return Err(Error::io("removing cgroup", dir, source)),
        }
    }
}

/// Errors from cgroup operations. Each names the file or directory and
/// what we were doing with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("detecting cgroups from /proc/self/mountinfo: no cgroup v1 controller and no cgroup2 hierarchy with controllers is mounted")]
    NotMounted,
    #[error("cgroup {path}: the {controller} controller is not mounted")]
    MissingController {
        path: String,
        controller: &'static str,
    },
    #[error("cgroup {path}: no such group (its container has stopped?)")]
    NoGroup { path: String },
    #[error("cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The spec asks for something this cgroup version cannot express.
    #[error("applying resources to cgroup {path}: {what}: {reason}")]
    InvalidResource {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("{action} {}: processes still there after {}s: {pids:?}", path.display(), SETTLE_TIMEOUT.as_secs())]
    Busy {
        action: &'static str,
        path: PathBuf,
        pids: Vec<i32>,
    },
    #[error("killing pid {pid} listed in {}: {source}", path.display())]
    Signal {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidPath { .. } | Error::InvalidResource { .. } => ErrorKind::InvalidArgument,
            Error::NotMounted | Error::MissingController { .. } => ErrorKind::Unavailable,
            Error::Busy { .. } => ErrorKind::FailedPrecondition,
            Error::NoGroup { .. } => ErrorKind::NotFound,
            Error::Io { .. } | Error::Write { .. } | Error::Parse { .. } | Error::Signal { .. } => {
                ErrorKind::Internal
            }
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `pids.max` for a spec's limit: zero or negative means no limit.
fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

#[cfg(test)]
mod tests;
