//! Runtime: what a container runs with, and what runs it.
//!
//! Two halves:
//!
//! * **Spec.** [`build_spec`] turns an image's config plus docker-style
//!   `run` flags into one OCI runtime [`Spec`] (`config.json`). Building a
//!   spec writes the files bind-mounted into the container (`hosts`,
//!   `hostname`, `resolv.conf`) into the container's own directory. Nothing
//!   here trusts the image: its `/etc/passwd` and `/etc/group` are read with
//!   every path resolved inside the root filesystem (see [`user`]).
//! * **Runtimes.** A [`Runtime`] executes a bundle (a directory holding
//!   `config.json`, whose `root.path` is an already mounted root
//!   filesystem). The built-in runtime `berth` does it with namespaces,
//!   mounts and `pivot_root` itself; any OCI runtime CLI (`runc`, `crun`, a
//!   path) is driven through its `create`/`start`/`state`/`kill`/`delete`
//!   commands.
//!
//! # Lifecycle of a container under a runtime
//!
//! 1. [`Runtime::create`] sets the container up (namespaces, mounts, cgroup,
//!    identity) and leaves its init process waiting just before `execve` of
//!    the user's command. Errors found while setting up, including a command
//!    that is missing or not executable, are returned from `create` with
//!    the runtime's own message; nothing of the container is left behind.
//! 2. [`Runtime::start`] lets that process exec the command.
//! 3. The caller waits for the container's init (its pid is what `create`
//!    returned). The built-in runtime makes it a direct child of the calling
//!    process; OCI CLI runtimes leave it to be re-parented, so a caller that
//!    waits must call [`become_subreaper`] before `create`.
//! 4. [`Runtime::kill`] signals the init process; [`Runtime::state`] reports
//!    created, running or stopped.
//! 5. [`Runtime::delete`] removes the runtime's record of the container
//!    (and its cgroup); with `force`, a still-running container is killed
//!    first. The bundle and root filesystem belong to the caller.
//!
//! Runtime state lives in the store, `<root>/runtime/<runtime>/<id>/`, so
//! any berth process can reach a container another one created. No process
//! holds state in memory between these calls: each verb may run in a
//! different process.

mod builtin;
pub mod console;
pub mod container;
pub(crate) mod identity;
mod oci_cli;
mod spec;
pub mod user;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use builtin::Builtin;
pub use nix::sys::signal::Signal;
pub use oci_cli::OciCli;
pub use oci_spec::runtime::Spec;
pub use spec::{
    build_spec, parse_size, parse_ulimit, ImageConfig, Network, RunOptions, DEFAULT_CAPABILITIES,
    DEFAULT_PATH, STOP_SIGNAL_ANNOTATION,
};

use crate::ErrorKind;

/// Where the container's standard streams go.
#[derive(Debug)]
pub enum Stdio {
    /// The container's fds 0, 1 and 2 are copies of these; the caller keeps
    /// its own.
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The container gets a new pseudo-terminal as its controlling terminal
    /// and stdio; the runtime sends the master end over this unix socket
    /// (runc's `--console-socket` protocol, see [`console`]).
    Terminal { console_socket: PathBuf },
}

/// What [`Runtime::create`] needs.
#[derive(Debug)]
pub struct CreateOptions<'a> {
    /// Container id: `[A-Za-z0-9][A-Za-z0-9_.-]*`, unique per runtime.
    pub id: &'a str,
    /// Directory holding `config.json`.
    pub bundle: &'a Path,
    pub stdio: Stdio,
}

/// A container's state as its runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Set up, waiting for `start`.
    Created,
    Running,
    /// Its init process has exited (or never will run again).
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub id: String,
    pub status: Status,
    /// Host pid of the container's init, while it has one.
    pub pid: Option<i32>,
    pub bundle: PathBuf,
}

/// A container runtime. See the module doc for the lifecycle and who
/// waits for the container's process.
pub trait Runtime {
    /// The plugin id (`berth`, `runc`, `crun`) or the path given.
    fn name(&self) -> &str;
    /// Creates the container; returns the host pid of its init process.
    fn create(&self, opts: CreateOptions<'_>) -> Result<i32>;
    /// Lets a created container exec its command.
    fn start(&self, id: &str) -> Result<()>;
    fn state(&self, id: &str) -> Result<State>;
    /// Sends `signal` to the container's init process.
    fn kill(&self, id: &str, signal: Signal) -> Result<()>;
    /// Forgets the container; `force` kills it first if it still runs.
    fn delete(&self, id: &str, force: bool) -> Result<()>;
}

/// Opens the runtime plugin `name` of the store at `root`: `runc` or
/// `crun` (found on `PATH`), or the path of any OCI runtime binary (any
/// name holding a `/`). Each keeps its state in `<root>/runtime/<name>`; a
/// path's in `<root>/runtime/path-<file name>`.
pub fn open(root: &Path, name: &str) -> Result<Box<dyn Runtime>> {
    let state = root.join("runtime");
    match name {
        "berth" => Ok(Box::new(Builtin::new(state.join("berth")))),
        "runc" | "crun" => Ok(Box::new(OciCli::find(name, state.join(name))?)),
        path if path.contains('/') => {
            let file = Path::new(path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = format!("path-{}", sanitise(&file));
            Ok(Box::new(OciCli::find(path, state.join(dir))?))
        }
        other => Err(Error::InvalidArgument(format!(
            "unknown runtime \"{other}\": expected berth, runc, crun or the path of an OCI runtime binary"
        ))),
    }
}

/// A file name fit to be one directory name: anything outside
/// `[A-Za-z0-9_.-]` becomes `_`, and `.`/`..` cannot result.
fn sanitise(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

/// Makes the calling process the reaper of orphaned descendants, so a
/// container's init that its runtime process left behind is re-parented to
/// us and we can `waitpid` it.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches
    // no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::Os {
            action: "becoming a child subreaper",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Errors from building a spec and from running containers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value is malformed or names something that is not there.
    #[error("{flag} {value}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// The image config or the combination of image and flags is unusable.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system call outside any one path failed.
    #[error("{action}: {source}")]
    Os {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The JSON we assembled was refused by the spec types: a bug.
    #[error("building runtime spec: {0}")]
    Spec(String),
    /// The container's command does not exist in its root filesystem.
    #[error("{runtime}: container {id}: executable not found: {message}")]
    CommandNotFound {
        runtime: String,
        id: String,
        message: String,
    },
    /// The container's command exists but cannot be executed.
    #[error("{runtime}: container {id}: cannot execute: {message}")]
    CommandNotExecutable {
        runtime: String,
        id: String,
        message: String,
    },
    /// The runtime cannot work on this host (e.g. crun on hybrid cgroups).
    #[error("runtime {runtime} cannot run containers on this host: {message}")]
    Unsupported { runtime: String, message: String },
    /// No container with this id is known to the runtime.
    #[error("{runtime}: container {id}: not found")]
    ContainerNotFound { runtime: String, id: String },
    /// The container is not in a state that allows this verb.
    #[error("{runtime}: container {id}: {message}")]
    State {
        runtime: String,
        id: String,
        message: String,
    },
    /// The runtime failed; `message` is what it said (its stderr, or the
    /// error the built-in runtime's container process reported).
    #[error("{runtime}: {action} container {id}: {message}")]
    Failed {
        runtime: String,
        action: &'static str,
        id: String,
        message: String,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidFlag { .. } | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::CommandNotFound { .. } | Error::ContainerNotFound { .. } => ErrorKind::NotFound,
            Error::CommandNotExecutable { .. } | Error::State { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::Unsupported { .. } => ErrorKind::Unavailable,
            Error::Io { .. } | Error::Os { .. } | Error::Spec(_) | Error::Failed { .. } => {
                ErrorKind::Internal
            }
        }
    }

    pub(crate) fn flag(
        flag: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidFlag {
            flag,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Gives every signal this process ignores, but those in `keep`, back its
/// default action: ignored dispositions survive `execve`, and a container
/// must not inherit them from whatever shell or service started us.
/// Async-signal-safe (raw syscalls only), so a forked child may call it.
pub fn reset_ignored_signals(keep: &[i32]) {
    // SAFETY: rt_sigaction with a null new action only reads the current
    // one into `old`, a kernel_sigaction-sized buffer we own; with a
    // SIG_DFL action it changes only our own process's disposition. The
    // raw syscall reaches the realtime signals glibc reserves (32, 33).
    unsafe {
        let max = libc::SIGRTMAX();
        for sig in 1..=max {
            if keep.contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // struct kernel_sigaction: handler, flags, restorer, mask (8 bytes).
            let mut old = [0usize; 4];
            let rc = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<usize>(),
                old.as_mut_ptr(),
                8usize,
            );
            if rc == 0 && old[0] == libc::SIG_IGN {
                let dfl = [libc::SIG_DFL, 0, 0, 0];
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<usize>(),
                    8usize,
                );
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_paths_become_one_directory_name() {
        assert_eq!(sanitise("runc"), "runc");
        assert_eq!(sanitise("my runtime:v2"), "my_runtime_v2");
        assert_eq!(sanitise(".."), "_..");
        assert_eq!(sanitise(""), "_");
    }

    #[test]
    fn open_refuses_unknown_names() {
        let dir = Path::new("/nonexistent");
        let err = open(dir, "podman").err().unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_eq!(open(dir, "berth").unwrap().name(), "berth");
    }
}
