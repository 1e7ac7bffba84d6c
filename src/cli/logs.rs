//! `berth-logs`: print a detached container's output.

use std::io::Write;

use clap::{CommandFactory, Parser};

use super::{exit, GlobalArgs};
use crate::metadata::{ContainerStatus, Db};
use crate::runtime::container::logs::{self, Entry, Stream};
use crate::Error;

/// Print the output of a container started with berth-run -d.
///
/// Lines the container wrote to stdout go to stdout, stderr to stderr. A
/// container run in the foreground has no log: its output went to the
/// terminal that ran it.
#[derive(Debug, Parser)]
#[command(name = "berth-logs", version, after_help = exit::EXIT_STATUS_HELP)]
pub struct LogsArgs {
    /// Container: id, unique id prefix, or name
    pub container: String,
    /// Keep printing new output until the container stops
    #[arg(short, long)]
    pub follow: bool,
    /// Prefix each line with the time it was written (RFC 3339)
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print only the last N lines
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    LogsArgs::command()
}

pub fn main() -> i32 {
    let args = LogsArgs::parse();
    match run(&args) {
        Ok(()) => exit::SUCCESS,
        Err(e) => super::report("berth-logs", &e),
    }
}

fn print(entry: &Entry, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", entry.time, entry.log)
    } else {
        entry.log.clone()
    };
    // A closed stdout (berth-logs | head) is not an error worth a message.
    let _ = match entry.stream {
        Stream::Stdout => std::io::stdout().write_all(text.as_bytes()),
        Stream::Stderr => std::io::stderr().write_all(text.as_bytes()),
    };
}

fn run(args: &LogsArgs) -> Result<(), Error> {
    let (_, root) = args.global.load()?;
    let mut db = Db::open(&root)?;
    let rec = db.container_reconciled(&args.container)?;
    let path = rec.log_path.clone().ok_or_else(|| {
        Error::Usage(format!(
            "container {} ran in the foreground: it has no log",
            rec.name
        ))
    })?;
    let path = std::path::PathBuf::from(path);
    let mut offset = 0;
    if let Some(n) = args.tail {
        let mut all = Vec::new();
        offset = logs::read_from(&path, 0, |e| all.push(e))?;
        for e in &all[all.len().saturating_sub(n)..] {
            print(e, args.timestamps);
        }
        if !args.follow {
            return Ok(());
        }
    }
    if !args.follow {
        logs::read_from(&path, offset, |e| print(&e, args.timestamps))?;
        return Ok(());
    }
    let id = rec.id.clone();
    let stopped = move || match db.container_reconciled(&id) {
        Ok(r) => r.status == ContainerStatus::Stopped,
        _ => true,
    };
    logs::follow(&path, offset, |e| print(&e, args.timestamps), stopped)?;
    let _ = std::io::stdout().flush();
    Ok(())
}
