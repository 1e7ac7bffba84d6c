//! `berth-kill`: send a signal to running containers.

use clap::{CommandFactory, Parser};

use super::{exit, GlobalArgs};
use crate::metadata::{self, ContainerStatus, Db};
use crate::runtime::Signal;
use crate::Error;

/// Send a signal to the init process of running containers.
///
/// The default signal is SIGKILL, as with docker kill. The container's
/// process is checked against the start time recorded when it started, so
/// a reused pid is never signalled.
#[derive(Debug, Parser)]
#[command(name = "berth-kill", version, after_help = exit::EXIT_STATUS_HELP)]
pub struct KillArgs {
    /// Containers: id, unique id prefix, or name
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
    /// Signal: a name (KILL, SIGTERM, term) or a number
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    KillArgs::command()
}

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> Result<Signal, Error> {
    let bad = || Error::Usage(format!("--signal {s}: not a signal name or number"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

pub fn main() -> i32 {
    let args = KillArgs::parse();
    let prog = "berth-kill";
    let signal = match parse_signal(&args.signal) {
        Ok(s) => s,
        Err(e) => return super::report(prog, &e),
    };
    let mut db = match args
        .global
        .load()
        .and_then(|(_, root)| Ok(Db::open(&root)?))
    {
        Ok(db) => db,
        Err(e) => return super::report(prog, &e),
    };
    let mut code = exit::SUCCESS;
    for name in &args.containers {
        match kill_one(&mut db, name, signal) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                let c = super::report(prog, &e);
                if code == exit::SUCCESS {
                    code = c;
                }
            }
        }
    }
    code
}

fn kill_one(db: &mut Db, name: &str, signal: Signal) -> Result<(), Error> {
    let rec = db.container_reconciled(name)?;
    let not_running = || {
        Error::from(crate::runtime::Error::State {
            runtime: rec.runtime.clone(),
            id: rec.id.clone(),
            message: format!("container {} is not running", rec.name),
        })
    };
    if rec.status != ContainerStatus::Running {
        return Err(not_running());
    }
    let (pid, start) = match (rec.pid, rec.pid_start) {
        (Some(p), Some(s)) => (p, s),
        _ => return Err(not_running()),
    };
    if metadata::process_start_time(pid) != Some(start) {
        return Err(not_running());
    }
    // Recorded before it is sent, so it comes before the `die` it causes.
    crate::runtime::container::record_kill(db, &rec, signal as i32)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
        crate::runtime::Error::Os {
            action: "signalling the container",
            source: e.into(),
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
