//! Any OCI runtime CLI (`runc`, `crun`, a path) as a [`Runtime`].
//!
//! Each verb is one run of the binary:
//! `<binary> --root <state_root> --log <file> --log-format json <verb> …`.
//! The state root holds the runtime's own records, so every berth process
//! that opens the same runtime under the same store reaches the same
//! containers.
//!
//! The runtime's messages are read from the log file, one fresh file per
//! call (removed afterwards), not from its stderr: in `create` with
//! [`Stdio::Fds`] the runtime's stdio *is* the container's, handed through,
//! so reading the runtime's stderr would mix its messages with the
//! container's output. (runc still prints a fatal error to its stderr as
//! well, so a failed `create` leaves that one line in the caller's stderr
//! stream; the container never ran, so nothing of its output is mixed.)
//!
//! What runc 1.1.5 reports, and how it is mapped:
//!
//! | situation                         | runc's message (create)                                                        | error |
//! |-----------------------------------|--------------------------------------------------------------------------------|-------|
//! | command missing, bare name        | `exec: "x": executable file not found in $PATH`                               | [`Error::CommandNotFound`] |
//! | command missing, path             | `exec: "/bin/x": stat /bin/x: no such file or directory`                      | [`Error::CommandNotFound`] |
//! | command not executable            | `exec: "/bin/x": permission denied`                                            | [`Error::CommandNotExecutable`] |
//! | unknown container (every verb)    | `container does not exist`                                                     | [`Error::ContainerNotFound`] |
//!
//! runc 1.1.5 looks the command up during `create`, so both failures are
//! reported there. If the file changes between `create` and `start`, `runc
//! start` still succeeds: the container's init writes `exec /bin/x:
//! permission denied` (or `no such file or directory`) to the container's
//! own stderr and exits. `start` maps the same messages should a runtime
//! report them from `start`.
//!
//! crun 1.8 refuses hybrid cgroup hosts at `create` with `cgroups in hybrid
//! mode not supported, drop all controllers from cgroupv2`, mapped to
//! [`Error::Unsupported`] with that message; its `state` of an unknown id
//! says ``error opening file `<root>/<id>/status`: No such file or
//! directory``, mapped to [`Error::ContainerNotFound`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::{CreateOptions, Error, Result, Runtime, Signal, State, Status, Stdio};

/// An OCI runtime binary and the directory it keeps its state in.
#[derive(Debug, Clone)]
pub struct OciCli {
    name: String,
    binary: PathBuf,
    state_root: PathBuf,
}

/// Host refusals: the runtime works, but not on this host.
const UNSUPPORTED: &[&str] = &[
    "hybrid mode not supported",
    "cgroups v1 not supported",
    "cgroup v1 not supported",
    "not supported on this host",
];

impl OciCli {
    pub fn new(name: &str, binary: PathBuf, state_root: PathBuf) -> OciCli {
        OciCli {
            name: name.to_owned(),
            binary,
            state_root,
        }
    }

    /// Finds the runtime binary: a bare name (`runc`) is looked up on
    /// `PATH`; anything with a `/` must be an executable file.
    pub fn find(name_or_path: &str, state_root: PathBuf) -> Result<OciCli> {
        let binary = if name_or_path.contains('/') {
            let path = PathBuf::from(name_or_path);
            if !is_executable_file(&path) {
                return Err(Error::InvalidArgument(format!(
                    "runtime {name_or_path}: not an executable file"
                )));
            }
            path
        } else {
            let path_var = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path_var)
                .map(|dir| dir.join(name_or_path))
                .find(|p| is_executable_file(p))
                .ok_or_else(|| Error::Unsupported {
                    runtime: name_or_path.to_owned(),
                    message: format!(
                        "no executable {name_or_path} on PATH ({})",
                        path_var.to_string_lossy()
                    ),
                })?
        };
        Ok(OciCli::new(name_or_path, binary, state_root))
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// A command for one verb, writing the runtime's log to `log`.
    fn command(&self, log: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.state_root)
            .arg("--log")
            .arg(log)
            .args(["--log-format", "json"]);
        cmd
    }

    /// A log file for one call; unique across processes and threads.
    fn log_file(&self, verb: &str) -> Result<LogFile> {
        static N: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(&self.state_root).map_err(|source| Error::Io {
            action: "creating runtime state directory",
            path: self.state_root.clone(),
            source,
        })?;
        let path = self.state_root.join(format!(
            ".log-{verb}-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from a recycled pid would prepend stale messages.
        let _ = fs::remove_file(&path);
        Ok(LogFile(path))
    }

    /// Runs a verb with stdio captured; on failure the error says what the
    /// runtime said.
    fn run(&self, action: &'static str, id: &str, args: &[&str]) -> Result<Output> {
        let log = self.log_file(action)?;
        let out = self
            .command(&log.0)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        if out.status.success() {
            return Ok(out);
        }
        let message = log.message(&out.stderr);
        Err(self.classify(action, id, out.status, message))
    }

    fn spawn_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            action: "running runtime",
            path: self.binary.clone(),
            source,
        }
    }

    /// Maps a failed verb to the error kinds callers act on, keeping the
    /// runtime's message.
    fn classify(
        &self,
        action: &'static str,
        id: &str,
        status: ExitStatus,
        message: String,
    ) -> Error {
        let lower = message.to_lowercase();
        let runtime = self.name.clone();
        let id = id.to_owned();
        let execing = matches!(action, "creating" | "starting");
        if lower.contains("container does not exist")
            || (!execing
                && lower.contains("no such file or directory")
                && message.contains(&format!("/{id}/")))
        {
            return Error::ContainerNotFound { runtime, id };
        }
        if UNSUPPORTED.iter().any(|p| lower.contains(p)) {
            return Error::Unsupported { runtime, message };
        }
        if execing {
            let exec = lower.contains("exec:") || lower.contains("exec ");
            if lower.contains("executable file not found")
                || (lower.contains("executable file") && lower.contains("not found"))
                || (exec && lower.contains("no such file or directory"))
            {
                return Error::CommandNotFound {
                    runtime,
                    id,
                    message,
                };
            }
            if exec && lower.contains("permission denied") {
                return Error::CommandNotExecutable {
                    runtime,
                    id,
                    message,
                };
            }
        }
        if [
            "not running",
            "not stopped",
            "already running",
            "cannot start",
            "is paused",
        ]
        .iter()
        .any(|p| lower.contains(p))
        {
            return Error::State {
                runtime,
                id,
                message,
            };
        }
        Error::Failed {
            runtime,
            action,
            id,
            message: format!("{message} ({status})"),
        }
    }
}

impl Runtime for OciCli {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&self, opts: CreateOptions<'_>) -> Result<i32> {
        let action = "creating";
        let log = self.log_file("create")?;
        let pid_file = self.state_root.join(format!(".pid-{}", opts.id));
        let _ = fs::remove_file(&pid_file);
        let mut cmd = self.command(&log.0);
        cmd.arg("create")
            .arg("--bundle")
            .arg(opts.bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        let captured_stderr = match opts.stdio {
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => {
                cmd.stdin(stdin).stdout(stdout).stderr(stderr);
                false
            }
            Stdio::Terminal { ref console_socket } => {
                cmd.arg("--console-socket")
                    .arg(console_socket)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                true
            }
        };
        cmd.arg(opts.id);
        // `output` would wait for EOF on a piped stderr, which the
        // container holds open; only the runtime's exit matters here.
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        // Close our copies of the container's stdio now, so the caller sees
        // EOF when the container (not this struct) closes them.
        drop(cmd);
        let stderr_pipe = child.stderr.take();
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        if !status.success() {
            let stderr = match (captured_stderr, stderr_pipe) {
                (true, Some(mut pipe)) => {
                    let mut buf = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut pipe, &mut buf);
                    buf
                }
                _ => Vec::new(),
            };
            let _ = fs::remove_file(&pid_file);
            return Err(self.classify(action, opts.id, status, log.message(&stderr)));
        }
        let text = fs::read_to_string(&pid_file);
        let _ = fs::remove_file(&pid_file);
        let text = text.map_err(|source| Error::Io {
            action: "reading runtime pid file",
            path: pid_file.clone(),
            source,
        })?;
        text.trim()
            .parse::<i32>()
            .ok()
            .filter(|pid| *pid > 0)
            .ok_or_else(|| Error::Failed {
                runtime: self.name.clone(),
                action,
                id: opts.id.to_owned(),
                message: format!("pid file {} holds {text:?}", pid_file.display()),
            })
    }

    fn start(&self, id: &str) -> Result<()> {
        self.run("starting", id, &["start", id]).map(drop)
    }

    fn state(&self, id: &str) -> Result<State> {
        let out = self.run("reading state of", id, &["state", id])?;
        parse_state(&out.stdout).map_err(|message| Error::Failed {
            runtime: self.name.clone(),
            action: "reading state of",
            id: id.to_owned(),
            message,
        })
    }

    fn kill(&self, id: &str, signal: Signal) -> Result<()> {
        let number = (signal as i32).to_string();
        self.run("signalling", id, &["kill", id, &number]).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.run("deleting", id, &args).map(drop)
    }
}

/// The runtime's state document (`runtime-spec` "State").
#[derive(Deserialize)]
struct StateDoc {
    id: String,
    status: String,
    #[serde(default)]
    pid: Option<i32>,
    #[serde(default)]
    bundle: PathBuf,
}

fn parse_state(bytes: &[u8]) -> Result<State, String> {
    let doc: StateDoc = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "unreadable state: {e}: {}",
            String::from_utf8_lossy(bytes).trim()
        )
    })?;
    let status = match doc.status.as_str() {
        "creating" | "created" => Status::Created,
        // A paused container still has its init; to us it runs.
        "running" | "paused" => Status::Running,
        "stopped" => Status::Stopped,
        other => return Err(format!("unknown status {other:?}")),
    };
    Ok(State {
        id: doc.id,
        status,
        pid: doc.pid.filter(|p| *p > 0 && status != Status::Stopped),
        bundle: doc.bundle,
    })
}

/// One call's `--log` file, removed when dropped.
struct LogFile(PathBuf);

impl LogFile {
    /// The runtime's error messages from the log; if it wrote none (it
    /// failed before opening the log), whatever `stderr` holds.
    fn message(&self, stderr: &[u8]) -> String {
        let text = fs::read_to_string(&self.0).unwrap_or_default();
        let msg = log_messages(&text);
        if !msg.is_empty() {
            return msg;
        }
        let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
        if stderr.is_empty() {
            "no message".to_owned()
        } else {
            stderr
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The `msg` of each error-level JSON log line (runc and crun both write
/// `{"level": …, "msg": …}`), joined; lines that are not JSON are kept as
/// they are.
fn log_messages(text: &str) -> String {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match serde_json::from_str::<Line>(line) {
            Ok(l) if matches!(l.level.as_str(), "error" | "fatal" | "panic") => out.push(l.msg),
            Ok(_) => {}
            Err(_) => out.push(line.to_owned()),
        }
    }
    out.join("; ")
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn cli() -> OciCli {
        OciCli::new("runc", "/usr/bin/runc".into(), "/nonexistent".into())
    }

    fn exit1() -> ExitStatus {
        ExitStatus::from_raw(1 << 8)
    }

    #[test]
    fn runc_messages_map_to_kinds() {
        let c = cli();
        let e = c.classify(
            "creating",
            "a",
            exit1(),
            r#"runc create failed: unable to start container process: exec: "nope": executable file not found in $PATH"#.into(),
        );
        assert!(matches!(e, Error::CommandNotFound { .. }), "{e}");
        let e = c.classify(
            "creating",
            "a",
            exit1(),
            r#"runc create failed: unable to start container process: exec: "/bin/x": stat /bin/x: no such file or directory"#.into(),
        );
        assert!(matches!(e, Error::CommandNotFound { .. }), "{e}");
        let e = c.classify(
            "starting",
            "a",
            exit1(),
            "exec /bin/x: permission denied".into(),
        );
        assert!(matches!(e, Error::CommandNotExecutable { .. }), "{e}");
        let e = c.classify(
            "reading state of",
            "a",
            exit1(),
            "container does not exist".into(),
        );
        assert!(matches!(e, Error::ContainerNotFound { .. }), "{e}");
        let e = c.classify(
            "reading state of",
            "a",
            exit1(),
            "error opening file `/run/crun/a/status`: No such file or directory".into(),
        );
        assert!(matches!(e, Error::ContainerNotFound { .. }), "{e}");
        let e = c.classify(
            "creating",
            "a",
            exit1(),
            "cgroups in hybrid mode not supported, drop all controllers from cgroupv2".into(),
        );
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        // A missing bundle file is not a missing command.
        let e = c.classify(
            "creating",
            "a",
            exit1(),
            "open /b/config.json: no such file or directory".into(),
        );
        match e {
            Error::Failed { message, .. } => {
                assert!(message.contains("config.json") && message.contains("exit status: 1"))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn log_lines_become_one_message() {
        let log = "{\"level\":\"warning\",\"msg\":\"meh\"}\n\
                   {\"level\":\"error\",\"msg\":\"container does not exist\",\"time\":\"x\"}\n\
                   not json\n";
        assert_eq!(log_messages(log), "container does not exist; not json");
    }

    #[test]
    fn state_documents() {
        let s = parse_state(
            br#"{"ociVersion":"1.0.2","id":"a","pid":42,"status":"created","bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            State {
                id: "a".into(),
                status: Status::Created,
                pid: Some(42),
                bundle: "/b".into()
            }
        );
        let s = parse_state(br#"{"id":"a","pid":0,"status":"stopped","bundle":"/b"}"#).unwrap();
        assert_eq!((s.status, s.pid), (Status::Stopped, None));
        assert!(parse_state(br#"{"id":"a","status":"weird"}"#).is_err());
        assert!(parse_state(b"nonsense").is_err());
    }

    #[test]
    fn find_checks_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rt");
        fs::write(&file, "#!/bin/sh\n").unwrap();
        let err = OciCli::find(file.to_str().unwrap(), dir.path().into()).unwrap_err();
        assert!(err.to_string().contains("not an executable file"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        let rt = OciCli::find(file.to_str().unwrap(), dir.path().into()).unwrap();
        assert_eq!(rt.binary(), file);
        let err = OciCli::find("berth-no-such-runtime", dir.path().into()).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("PATH"), "{err}");
    }
}
