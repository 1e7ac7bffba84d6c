//! What every berth binary shares: global flags, exit codes, output
//! formats, progress on stderr, and the one place errors become messages.
//!
//! Binaries stay thin: each parses its clap struct from here and calls one
//! library function.

pub mod events;
pub mod exit;
pub mod export;
pub mod import;
pub mod kill;
pub mod logs;
pub mod ls;
pub mod progress;
pub mod pull;
pub mod push;
pub mod registry;
pub mod rm;
pub mod run;
pub mod snapshot;
pub mod stats;
pub mod tag;
pub mod template;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::config::{Config, ConfigArgs};

/// Flags every binary takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    #[command(flatten)]
    pub store: ConfigArgs,
    /// Log each registry request and decision to stderr (also BERTH_LOG=debug)
    #[arg(long)]
    pub debug: bool,
}

impl GlobalArgs {
    pub fn debug_enabled(&self) -> bool {
        self.debug || std::env::var("BERTH_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug"))
    }

    /// Loads the config file and works out the store root from flag,
    /// environment, config and defaults, in that order.
    pub fn load(&self) -> Result<(Config, PathBuf), crate::Error> {
        let config = self.store.load()?;
        let root = self.store.root(&config);
        // Whatever this process records prunes the log to the configured
        // bounds (see `metadata::events`).
        crate::metadata::events::set_retention(config.events);
        Ok((config, root))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// How progress is shown: bars on a terminal, one line per event in logs,
/// nothing when asked to be quiet. Never on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bars,
    Lines,
    Silent,
}

impl ProgressMode {
    pub fn detect(quiet: bool) -> ProgressMode {
        if quiet {
            ProgressMode::Silent
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// Every binary's clap definition by program name, for the man pages in
/// `man/` (generated and checked by `tests/man.rs`).
pub fn man_pages() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("berth", crate::plugin::dispatch::command()),
        ("berth-events", events::command()),
        ("berth-export", export::command()),
        ("berth-import", import::command()),
        ("berth-kill", kill::command()),
        ("berth-logs", logs::command()),
        ("berth-ls", ls::command()),
        ("berth-pull", pull::command()),
        ("berth-push", push::command()),
        ("berth-rm", rm::command()),
        ("berth-run", run::command()),
        ("berth-snapshot", snapshot::command()),
        ("berth-stats", stats::command()),
        ("berth-tag", tag::command()),
    ]
}

/// The snapshotter `explicit` or the config names, checked with its probe.
/// When none is named and the default cannot work here (no overlay mounts),
/// native stands in, with a note on stderr.
pub fn open_snapshotter(
    prog: &str,
    explicit: Option<&str>,
    config: &Config,
    root: &std::path::Path,
    debug: bool,
) -> Result<Box<dyn crate::snapshot::Snapshotter>, crate::Error> {
    use crate::plugin::{self, PluginKind};
    use crate::snapshot;
    let name = explicit.unwrap_or(&config.default_snapshotter).to_string();
    let probe = |name: &str| -> Result<Option<String>, crate::Error> {
        let spec = plugin::find(PluginKind::Snapshotter, name).ok_or_else(|| {
            snapshot::Error::UnknownSnapshotter {
                name: name.to_string(),
            }
        })?;
        Ok(spec.probe(root, config).error)
    };
    let mut chosen = name.clone();
    if let Some(reason) = probe(&name)? {
        if explicit.is_some() || name == "native" {
            return Err(snapshot::Error::Unavailable { name, reason }.into());
        }
        eprintln!("{prog}: note: snapshotter {name} cannot work here ({reason}); using native");
        if let Some(reason) = probe("native")? {
            return Err(snapshot::Error::Unavailable {
                name: "native".into(),
                reason,
            }
            .into());
        }
        chosen = "native".into();
    }
    if debug {
        eprintln!("{prog}: snapshotter {chosen}, store {}", root.display());
    }
    Ok(snapshot::open(root, &chosen)?)
}

/// Prints `prog: error: <message>` with the error's cause chain and returns
/// the exit code for it.
pub fn report(prog: &str, err: &crate::Error) -> i32 {
    eprintln!("{prog}: error: {}", message(err));
    exit::code(err.kind())
}

/// An error's message with its cause chain, each cause once.
pub fn message(err: &crate::Error) -> String {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        // thiserror's transparent and "{source}" formats already include it.
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

/// Human-readable byte counts for progress and tables (decimal units, as
/// docker prints them).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human_size(999), "999 B");
        assert_eq!(super::human_size(1500), "1.5 kB");
        assert_eq!(super::human_size(157_286_400), "157.3 MB");
    }
}
