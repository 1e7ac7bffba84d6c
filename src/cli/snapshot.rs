//! `berth-snapshot`: prepare, mount, commit and remove snapshots by hand,
//! like `ctr snapshots`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;

use super::{exit, Format, GlobalArgs};
use crate::snapshot::{self, mount, Filter, Info, Kind, Labels, Mount, Snapshotter, Usage};
use crate::Error;

const PROG: &str = "berth-snapshot";

const AFTER_HELP: &str = "Examples:
  berth-snapshot prepare work                  an empty writable snapshot
  berth-snapshot mount /mnt work               mount it; write files under /mnt
  berth-snapshot unmount /mnt
  berth-snapshot commit base work              freeze it as the layer `base`
  berth-snapshot prepare work2 base            a writable snapshot on top of `base`
  berth-snapshot mounts /mnt work2             print the mount command instead of mounting
  berth-snapshot --format json ls | jq .       machine-readable listing
  berth-snapshot rm work2 base                 remove (children first)

Snapshots are per snapshotter: --snapshotter native sees none of overlayfs's.";

/// Manage snapshots: the layered trees container roots are made of.
///
/// A snapshot is active (writable, from `prepare`), a view (read-only, from
/// `view`), or committed (immutable, from `commit`); only committed
/// snapshots can be parents, and a snapshot with children cannot be
/// removed. Keys and names share one namespace per snapshotter.
#[derive(Debug, Parser)]
#[command(name = "berth-snapshot", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct SnapshotArgs {
    /// Snapshotter to use [default: default_snapshotter from the config
    /// (overlayfs); native, with a note, when overlay mounts do not work
    /// here]
    #[arg(long, global = true, value_name = "NAME")]
    pub snapshotter: Option<String>,
    /// Output format on stdout
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Create the writable snapshot KEY, empty or on the committed PARENT
    Prepare {
        key: String,
        parent: Option<String>,
        /// Label to set, KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Create the read-only snapshot KEY of the committed PARENT
    View {
        key: String,
        parent: Option<String>,
        /// Label to set, KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Turn the active snapshot KEY into the committed snapshot NAME
    Commit {
        name: String,
        key: String,
        /// Label of the committed snapshot, KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Remove snapshots (children before their parents)
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List snapshots: KEY, PARENT, KIND
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the keys
        #[arg(short, long)]
        quiet: bool,
        /// Only snapshots of this kind: active, view or committed
        #[arg(long, value_parser = parse_kind)]
        kind: Option<Kind>,
        /// Only snapshots with this label, KEY or KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY[=VALUE]")]
        labels: Vec<String>,
    },
    /// Show one snapshot's key, parent, kind, id, times and labels
    Info { key: String },
    /// Print how to mount snapshot KEY at TARGET (a mount command line, or
    /// JSON)
    Mounts { target: PathBuf, key: String },
    /// Show the disk space and inodes snapshots use themselves
    Usage { key: Option<String> },
    /// Show snapshots as a tree of parents and children
    Tree,
    /// Mount snapshot KEY at the existing directory TARGET
    Mount { target: PathBuf, key: String },
    /// Unmount what is mounted at TARGET
    Unmount { target: PathBuf },
    /// Set labels on KEY; KEY= (empty value) removes that label
    Label {
        key: String,
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Remove what crashed processes left behind
    Cleanup,
}

/// The clap definition, with the store flags usable after the subcommand
/// as well (`berth-snapshot ls --root DIR`).
pub fn command() -> clap::Command {
    let mut cmd = SnapshotArgs::command();
    for id in ["root", "config", "debug"] {
        cmd = cmd.mut_arg(id, |arg| arg.global(true));
    }
    cmd
}

/// Runs berth-snapshot and returns its exit code.
pub fn main() -> i32 {
    let matches = command().get_matches();
    let args = match SnapshotArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => super::report(PROG, &e),
    }
}

fn run(args: &SnapshotArgs) -> Result<i32, Error> {
    if let SnapshotCommand::Unmount { target } = &args.command {
        snapshot::unmount(target)?;
        return Ok(exit::SUCCESS);
    }
    let sn = open(args)?;
    let json = args.format == Format::Json;
    match &args.command {
        SnapshotCommand::Prepare {
            key,
            parent,
            labels,
        }
        | SnapshotCommand::View {
            key,
            parent,
            labels,
        } => {
            let labels = to_labels(labels);
            let mounts = if matches!(args.command, SnapshotCommand::Prepare { .. }) {
                sn.prepare(key, parent.as_deref(), &labels)?
            } else {
                sn.view(key, parent.as_deref(), &labels)?
            };
            if json {
                #[derive(Serialize)]
                struct Created {
                    #[serde(flatten)]
                    info: Info,
                    mounts: Vec<Mount>,
                }
                print_json(&Created {
                    info: sn.stat(key)?,
                    mounts,
                })?;
            }
        }
        SnapshotCommand::Commit { name, key, labels } => {
            let info = sn.commit(name, key, &to_labels(labels))?;
            if json {
                print_json(&info)?;
            }
        }
        SnapshotCommand::Rm { keys } => return remove(sn.as_ref(), keys, json),
        SnapshotCommand::Ls {
            quiet,
            kind,
            labels,
        } => {
            let filter = Filter {
                kind: *kind,
                parent: None,
                labels: labels
                    .iter()
                    .map(|l| match l.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (l.clone(), None),
                    })
                    .collect(),
            };
            let infos = sn.walk(&filter)?;
            if json {
                print_json(&infos)?;
            } else if *quiet {
                for info in &infos {
                    println!("{}", info.key);
                }
            } else {
                let rows = infos.iter().map(|i| {
                    vec![
                        i.key.clone(),
                        i.parent.clone().unwrap_or_default(),
                        i.kind.to_string(),
                    ]
                });
                print!("{}", table(&["KEY", "PARENT", "KIND"], rows));
            }
        }
        SnapshotCommand::Info { key } => {
            let info = sn.stat(key)?;
            if json {
                print_json(&info)?;
            } else {
                print!("{}", describe(&info));
            }
        }
        SnapshotCommand::Mounts { target, key } => {
            let mut mounts = sn.mounts(key)?;
            if json {
                for m in &mut mounts {
                    m.target = Some(target.clone());
                }
                print_json(&mounts)?;
            } else {
                for m in &mounts {
                    println!("{}", m.command_line(target));
                }
            }
        }
        SnapshotCommand::Usage { key } => usage(sn.as_ref(), key.as_deref(), json)?,
        SnapshotCommand::Tree => tree(sn.as_ref(), json)?,
        SnapshotCommand::Mount { target, key } => {
            mount::mount_all(&sn.mounts(key)?, target)?;
        }
        SnapshotCommand::Unmount { .. } => unreachable!("handled before opening the store"),
        SnapshotCommand::Label { key, labels } => {
            let info = sn.update(key, &to_labels(labels))?;
            if json {
                print_json(&info)?;
            } else {
                for (k, v) in &info.labels {
                    println!("{k}={v}");
                }
            }
        }
        SnapshotCommand::Cleanup => {
            let report = sn.cleanup()?;
            if json {
                print_json(&report)?;
            } else {
                for dir in &report.orphan_dirs {
                    println!("removed orphan directory {}", dir.display());
                }
                for key in &report.stale_snapshots {
                    println!("removed stale snapshot {key}");
                }
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn open(args: &SnapshotArgs) -> Result<Box<dyn Snapshotter>, Error> {
    let (config, root) = args.global.load()?;
    super::open_snapshotter(
        PROG,
        args.snapshotter.as_deref(),
        &config,
        &root,
        args.global.debug_enabled(),
    )
}

fn remove(sn: &dyn Snapshotter, keys: &[String], json: bool) -> Result<i32, Error> {
    let mut code = exit::SUCCESS;
    let mut removed = Vec::new();
    for key in keys {
        match sn.remove(key) {
            Ok(()) => removed.push(key.as_str()),
            Err(e) => {
                let c = super::report(PROG, &e.into());
                if code == exit::SUCCESS {
                    code = c;
                }
            }
        }
    }
    if json {
        print_json(&removed)?;
    }
    Ok(code)
}

fn usage(sn: &dyn Snapshotter, key: Option<&str>, json: bool) -> Result<(), Error> {
    #[derive(Serialize)]
    struct Row {
        key: String,
        #[serde(flatten)]
        usage: Usage,
    }
    let keys = match key {
        Some(key) => vec![key.to_string()],
        None => sn
            .walk(&Filter::default())?
            .into_iter()
            .map(|i| i.key)
            .collect(),
    };
    let mut rows = Vec::new();
    for key in keys {
        let usage = sn.usage(&key)?;
        rows.push(Row { key, usage });
    }
    if json {
        match (key, rows.pop()) {
            (Some(_), Some(row)) => print_json(&row)?,
            (_, last) => {
                rows.extend(last);
                print_json(&rows)?;
            }
        }
    } else {
        let cells = rows.iter().map(|r| {
            vec![
                r.key.clone(),
                super::human_size(r.usage.size),
                r.usage.inodes.to_string(),
            ]
        });
        print!("{}", table(&["KEY", "SIZE", "INODES"], cells));
    }
    Ok(())
}

fn tree(sn: &dyn Snapshotter, json: bool) -> Result<(), Error> {
    #[derive(Serialize)]
    struct Node {
        key: String,
        kind: Kind,
        children: Vec<Node>,
    }
    let infos = sn.walk(&Filter::default())?;
    let known: Vec<&str> = infos.iter().map(|i| i.key.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&Info>> = BTreeMap::new();
    for info in &infos {
        // A parent not listed (removed meanwhile) makes its child a root.
        let parent = info.parent.as_deref().filter(|p| known.contains(p));
        children.entry(parent).or_default().push(info);
    }
    fn build(info: &Info, children: &BTreeMap<Option<&str>, Vec<&Info>>) -> Node {
        Node {
            key: info.key.clone(),
            kind: info.kind,
            children: children
                .get(&Some(info.key.as_str()))
                .map(|c| c.iter().map(|i| build(i, children)).collect())
                .unwrap_or_default(),
        }
    }
    let roots: Vec<Node> = children
        .get(&None)
        .map(|r| r.iter().map(|i| build(i, &children)).collect())
        .unwrap_or_default();
    if json {
        return print_json(&roots);
    }
    fn render(node: &Node, depth: usize, out: &mut String) {
        let indent = match depth {
            0 => String::new(),
            d => format!("{}\\_ ", " ".repeat(3 * d - 2)),
        };
        out.push_str(&format!("{indent}{} ({})\n", node.key, node.kind));
        for child in &node.children {
            render(child, depth + 1, out);
        }
    }
    let mut out = String::new();
    for root in &roots {
        render(root, 0, &mut out);
    }
    print!("{out}");
    Ok(())
}

fn describe(info: &Info) -> String {
    let mut out = format!(
        "key:      {}\nparent:   {}\nkind:     {}\nid:       {}\ncreated:  {}\nupdated:  {}\n",
        info.key,
        info.parent.as_deref().unwrap_or("-"),
        info.kind,
        info.id,
        rfc3339(info.created_ns),
        rfc3339(info.updated_ns)
    );
    if info.labels.is_empty() {
        out.push_str("labels:   -\n");
    } else {
        out.push_str("labels:\n");
        for (k, v) in &info.labels {
            out.push_str(&format!("  {k}={v}\n"));
        }
    }
    out
}

/// UTC time of `ns` nanoseconds since the epoch, e.g. 2024-05-01T12:00:00.123Z.
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Space-aligned columns under `header`.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Usage(format!("encoding JSON output: {e}")))?;
    println!("{text}");
    Ok(())
}

fn to_labels(pairs: &[(String, String)]) -> Labels {
    pairs.iter().cloned().collect()
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got \"{text}\"")),
    }
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_709_210_096_123_000_000),
            "2024-02-29T12:34:56.123Z"
        );
    }

    #[test]
    fn labels_and_tables() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_label("a="), Ok(("a".into(), String::new())));
        assert!(parse_label("=b").is_err() && parse_label("ab").is_err());
        let text = table(
            &["KEY", "KIND"],
            [vec!["long-key".into(), "active".into()]].into_iter(),
        );
        assert_eq!(text, "KEY        KIND\nlong-key   active\n");
    }

    #[test]
    fn store_flags_work_after_the_subcommand() {
        let m = command()
            .try_get_matches_from(["berth-snapshot", "ls", "--root", "/x", "--format", "json"])
            .unwrap();
        let args = SnapshotArgs::from_arg_matches(&m).unwrap();
        assert_eq!(args.global.store.root, Some(PathBuf::from("/x")));
        assert_eq!(args.format, Format::Json);
    }
}
