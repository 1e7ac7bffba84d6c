//! Waiting for a container while moving its output: the event loop shared
//! by a foreground `berth-run` and a detached container's supervisor.
//!
//! One `poll` over a signalfd, the terminal master or output pipes, and
//! (interactive terminal) our stdin. Signals are taken synchronously from
//! the signalfd, so nothing runs in a signal handler: `SIGCHLD` reaps (as a
//! child subreaper we also collect the runtime's orphans), `SIGWINCH`
//! copies our terminal's size to the container's, and the others are
//! forwarded to the container's init. A [`Watcher`] adds one descriptor of
//! the caller's own (the container's OOM watch) with what to do when it is
//! readable.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::logs::{LogWriter, Stream};
use crate::runtime::{Error, Result};

/// Signals a foreground `berth-run` passes on to the container.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Where the container's output goes while we wait.
pub enum Output {
    /// The container writes to descriptors it was given; nothing to move.
    Direct,
    /// A terminal: its master end, copied to our stdout; `stdin` copies our
    /// stdin into it.
    Terminal { master: OwnedFd, stdin: bool },
    /// A detached terminal: the master's output goes to the log.
    TerminalToLog { master: OwnedFd, log: LogWriter },
    /// Detached without a terminal: both pipes go to the log.
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
        log: LogWriter,
    },
}

/// A descriptor the wait loop polls beside its own, and what to do when
/// it is readable. `on_ready` must drain it (or stop offering it), or the
/// loop spins.
pub trait Watcher {
    /// The descriptor to poll, while there is one.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    /// How soon to call `on_ready` even if the descriptor stays quiet
    /// (something announced is not visible yet); `None` to wait for it.
    fn recheck(&self) -> Option<Duration> {
        None
    }
    fn on_ready(&mut self);
}

/// No extra descriptor.
pub struct NoWatcher;

impl Watcher for NoWatcher {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    fn on_ready(&mut self) {}
}

/// How the container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention, which docker follows: 128 + N for signal N.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Blocks the signals the loop takes from its signalfd. Call after the
/// runtime created the container (its init must not inherit the mask).
pub fn block_signals(forward: &[Signal]) -> Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    for s in forward {
        set.add(*s);
    }
    let os = |action, e: Errno| Error::Os {
        action,
        source: e.into(),
    };
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| os("blocking signals", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| os("creating signalfd", e))
}

/// Our terminal in raw mode for as long as this lives.
pub struct RawMode {
    saved: termios::Termios,
}

impl RawMode {
    /// Puts stdin in raw mode when it is a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(
            std::io::stdin().as_fd(),
            termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Gives the container's terminal our terminal's size, or 24x80 when we
/// have none.
pub fn copy_window_size(master: BorrowedFd<'_>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call.
    let ours = unsafe { get_winsize(libc::STDIN_FILENO, &mut ws) };
    if ours.is_err() || ws.ws_row == 0 {
        ws.ws_row = 24;
        ws.ws_col = 80;
    }
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`.
    let _ = unsafe { set_winsize(master.as_raw_fd(), &ws) };
}

/// How long output may keep flowing after the init exited (its last
/// writes, or descendants that still hold the pipe).
const DRAIN: Duration = Duration::from_secs(2);

/// Waits for `pid` to exit, moving output and handling signals as the
/// module doc says. `forward` lists the signals passed on; `watcher` is
/// polled until the init exits.
pub fn wait(
    pid: i32,
    signals: &SignalFd,
    forward: &[Signal],
    mut out: Output,
    watcher: &mut dyn Watcher,
) -> Result<Exit> {
    let mut exit: Option<Exit> = None;
    // A SIGCHLD that came before the mask was set is gone: look once.
    reap(pid, &mut exit);
    let mut exited_at: Option<Instant> = exit.map(|_| Instant::now());
    let mut stdin_open = matches!(out, Output::Terminal { stdin: true, .. });
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        let (a, b): (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>) = match &out {
            Output::Direct => (None, None),
            Output::Terminal { master, .. } | Output::TerminalToLog { master, .. } => {
                (open[0].then(|| master.as_fd()), None)
            }
            Output::Pipes { stdout, stderr, .. } => (
                open[0].then(|| stdout.as_fd()),
                open[1].then(|| stderr.as_fd()),
            ),
        };
        if let Some(t) = exited_at {
            if (a.is_none() && b.is_none()) || t.elapsed() > DRAIN {
                break;
            }
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let slot_a = a.map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let slot_b = b.map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let slot_in = (stdin_open && exit.is_none()).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let slot_watch = exit.is_none().then(|| watcher.fd()).flatten().map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let recheck = exit.is_none().then(|| watcher.recheck()).flatten();
        let timeout = if exit.is_some() {
            PollTimeout::from(100u16)
        } else if let Some(d) = recheck {
            PollTimeout::from(u16::try_from(d.as_millis()).unwrap_or(u16::MAX))
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::Os {
                    action: "waiting for the container",
                    source: e.into(),
                })
            }
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, a_ready, b_ready, in_ready) =
            (ready(Some(0)), ready(slot_a), ready(slot_b), ready(slot_in));
        let watch_ready = ready(slot_watch);
        drop(fds);

        if watch_ready || recheck.is_some() {
            watcher.on_ready();
        }

        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    reap(pid, &mut exit);
                    if exit.is_some() && exited_at.is_none() {
                        exited_at = Some(Instant::now());
                    }
                } else if signo == libc::SIGWINCH {
                    if let Output::Terminal { master, .. } = &out {
                        copy_window_size(master.as_fd());
                    }
                } else if exit.is_none() && forward.iter().any(|s| *s as i32 == signo) {
                    if let Ok(s) = Signal::try_from(signo) {
                        let _ = signal::kill(Pid::from_raw(pid), s);
                    }
                }
            }
        }
        if a_ready {
            let src = match &out {
                Output::Terminal { master, .. } | Output::TerminalToLog { master, .. } => {
                    master.as_fd()
                }
                Output::Pipes { stdout, .. } => stdout.as_fd(),
                Output::Direct => unreachable!("no descriptor polled for direct output"),
            };
            match nix::unistd::read(src, &mut buf) {
                Ok(0) | Err(Errno::EIO) => open[0] = false,
                Ok(n) => match &mut out {
                    Output::Terminal { .. } => {
                        let _ = stdout.write_all(&buf[..n]).and_then(|_| stdout.flush());
                    }
                    Output::TerminalToLog { log, .. } | Output::Pipes { log, .. } => {
                        log.write(Stream::Stdout, &buf[..n])
                    }
                    Output::Direct => {}
                },
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => open[0] = false,
            }
        }
        if b_ready {
            if let Output::Pipes { stderr, log, .. } = &mut out {
                match nix::unistd::read(stderr.as_fd(), &mut buf) {
                    Ok(0) | Err(Errno::EIO) => open[1] = false,
                    Ok(n) => log.write(Stream::Stderr, &buf[..n]),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => open[1] = false,
                }
            }
        }
        if in_ready {
            if let Output::Terminal { master, .. } = &out {
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) => stdin_open = false,
                    Ok(n) => write_all(master.as_fd(), &buf[..n]),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => stdin_open = false,
                }
            }
        }
    }
    if let Output::TerminalToLog { log, .. } | Output::Pipes { log, .. } = &mut out {
        log.flush();
    }
    exit.ok_or_else(|| Error::Os {
        action: "waiting for the container",
        source: std::io::Error::other("the loop ended before the container exited"),
    })
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

/// Reaps every exited child; records `pid`'s end in `exit`.
fn reap(pid: i32, exit: &mut Option<Exit>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => *exit = Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                *exit = Some(Exit::Signal(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
