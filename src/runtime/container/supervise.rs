//! The supervisor a detached container leaves behind: the same `berth-run`
//! binary in a hidden mode, one per container, living exactly as long as
//! the container does (as podman's conmon does; there is no daemon).
//!
//! `berth-run -d` prepares the container, then [`spawn`]s the supervisor in
//! a new session and waits on a pipe for one line: `ok`, or `err <code>`
//! and a message. The supervisor ([`run`]) launches the container with its
//! output going to the log, reports, then reaps the container and records
//! its end. It inherits `berth-run`'s private mount namespace, so the root
//! filesystem mount lives on with it and goes when it goes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{attach, discard, finish, launch, start, Context, Io};
use crate::metadata::ContainerRecord;
use crate::Error;

/// The fd the supervisor reports on.
pub const READY_FD: i32 = 3;

/// What the supervisor reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    Started,
    Failed { code: i32, message: String },
}

/// Starts `exe args…` as the supervisor, in its own session, with its
/// stdio on `/dev/null` and the report pipe as fd [`READY_FD`]; returns
/// what it reported.
pub fn spawn(exe: &Path, args: &[String]) -> Result<Ready, Error> {
    let os =
        |action: &'static str, source: std::io::Error| crate::runtime::Error::Os { action, source };
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| os("creating supervisor pipe", e.into()))?;
    let w_raw = w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec this only makes async-signal-safe
    // calls (setsid, dup2) on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(w_raw, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| os("starting the container's supervisor", e))?;
    drop(w);
    // The supervisor outlives us; it is not ours to wait for beyond its
    // report. Its exit status, if it dies first, is collected by init.
    std::mem::forget(child);
    let mut text = String::new();
    File::from(r)
        .read_to_string(&mut text)
        .map_err(|e| os("reading the supervisor's report", e))?;
    Ok(parse_report(&text))
}

fn parse_report(text: &str) -> Ready {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    if first == "ok" {
        return Ready::Started;
    }
    match first.strip_prefix("err ").and_then(|c| c.parse().ok()) {
        Some(code) => Ready::Failed {
            code,
            message: rest.trim_end().to_string(),
        },
        None => Ready::Failed {
            code: 125,
            message: "the container's supervisor exited without reporting".into(),
        },
    }
}

/// The supervisor's work, given the container `berth-run -d` created.
/// `code_for` maps a launch error to `berth-run`'s exit code for the
/// report. Returns how the container ended.
pub fn run(
    ctx: &mut Context,
    mut rec: ContainerRecord,
    tty: bool,
    code_for: impl Fn(&Error) -> i32,
) -> Result<Option<attach::Exit>, Error> {
    // SAFETY: fd 3 was set up by `spawn` for us alone; if it is not open
    // the writes below fail harmlessly.
    let mut ready = File::from(unsafe { OwnedFd::from_raw_fd(READY_FD) });
    // Nothing we start may hold the report pipe open: berth-run reads it
    // to its end.
    let _ = nix::fcntl::fcntl(
        &ready,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut report = move |r: Result<(), &Error>| {
        let text = match r {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("err {}\n{}\n", code_for(e), crate::cli::message(e)),
        };
        let _ = ready.write_all(text.as_bytes());
    };
    let launched = match launch(ctx, &mut rec, Io::Log { tty }) {
        Ok(l) => l,
        Err(e) => {
            report(Err(&e));
            let _ = discard(ctx, &rec);
            return Err(e);
        }
    };
    let signals = match attach::block_signals(attach::FORWARDED)
        .map_err(Error::from)
        .and_then(|s| start(ctx, &mut rec).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            report(Err(&e));
            let _ = discard(ctx, &rec);
            return Err(e);
        }
    };
    report(Ok(()));
    drop(report);
    let (exit, oom_recorded) = super::wait(ctx, &rec, launched, &signals);
    let exit = match exit {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("berth: container {}: {e}", rec.id);
            None
        }
    };
    finish(ctx, &rec, exit, oom_recorded)?;
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports() {
        assert_eq!(parse_report("ok\n"), Ready::Started);
        assert_eq!(
            parse_report("err 127\nno such file\n"),
            Ready::Failed {
                code: 127,
                message: "no such file".into()
            }
        );
        assert!(matches!(parse_report(""), Ready::Failed { code: 125, .. }));
    }
}
