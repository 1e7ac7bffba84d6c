//! `berth-ls`: list containers, images, snapshots and content, and check
//! the store (`--check`).
//!
//! Each kind is read with one query (plus, for images, the small manifest
//! and config blobs from the content store); nothing runs a subprocess per
//! row. Snapshot sizes of active snapshots and views are measured only with
//! `--size`: committed snapshots carry the usage measured at commit.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use clap::{CommandFactory, Parser, ValueEnum};
use serde::Serialize;

use super::template::Template;
use super::{exit, GlobalArgs};
use crate::content::{self, Digest};
use crate::image::manifest::{self, DocumentKind, Index, Manifest, Platform};
use crate::image::UNPACKED_LABEL_PREFIX;
use crate::metadata::{ContainerRecord, ContainerStatus, Db, Labels};
use crate::snapshot::{self, SNAPSHOTTERS};
use crate::store_check::{self, CONTENT_REF_PREFIX};
use crate::Error;

const AFTER_HELP: &str = "Examples:
  berth-ls                                  containers, as a table
  berth-ls images --format json             one JSON array
  berth-ls --format '{{.ID}}\\t{{.Status}}'   a Go-style template per row
  berth-ls -q --filter status=stopped       ids of stopped containers
  berth-ls content --filter dangling=true   blobs no image reaches
  berth-ls --check                          verify the store; --repair removes orphans

Fields (JSON keys, and {{.Field}} in templates):
  containers  ID Name Image ImageDigest Command Status State ExitCode OOMKilled
              Created CreatedAt StartedAt FinishedAt Labels Snapshotter Snapshot Runtime Pid
  images      Name Digest MediaType Platforms Size Unpacked Labels Created CreatedAt
  snapshots   Key Parent Kind Size Inodes Snapshotter Labels Created CreatedAt
  content     Digest Size MediaType Labels
Sizes are bytes in JSON and templates, human-readable in tables. ID and
Command are truncated as in the table unless --no-trunc.

Filters (--filter KEY=VALUE, repeatable; the same key ORs, keys AND):
  label=KEY or label=KEY=VALUE   every kind
  status=running|stopped|created containers (exited = stopped)
  name=SUBSTRING                 containers (name), images (name), snapshots (key), content (digest)
  image=NAME                     containers created from the image NAME
  dangling=true|false            images: no container uses it; snapshots: no image,
                                 container or child refers to it; content: no image
                                 reaches it and no lease holds it

--check verifies every blob's digest, that every record's data exists
(content, images and the blobs they reach, snapshots and their parents,
containers' snapshots) and that there are no orphans (snapshot or container
directories, blob files without records). It prints one line per problem
and exits 1 if there is any. --repair removes orphans, never referenced
data, then checks again.";

/// List containers, images, snapshots or content in the berth store.
///
/// Containers are listed when no kind is given. Listing reconciles
/// container state: a container whose supervisor died is shown (and
/// recorded) stopped.
#[derive(Debug, Parser)]
#[command(name = "berth-ls", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct LsArgs {
    /// What to list
    #[arg(value_enum, value_name = "KIND")]
    pub kind: Option<Kind>,
    /// table, json (one array) or a template such as '{{.ID}}\t{{.Name}}'
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    pub format: String,
    /// Print only ids (container ids, image names, snapshot keys, digests)
    #[arg(short, long)]
    pub quiet: bool,
    /// Show only matching rows: label=K[=V], status=S, name=S, image=NAME, dangling=BOOL
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Do not truncate ids, digests, commands and labels
    #[arg(long)]
    pub no_trunc: bool,
    /// Snapshots: measure active snapshots and views (walks their files; committed ones are measured at commit)
    #[arg(short, long)]
    pub size: bool,
    /// Snapshots: only this snapshotter's (default: every compiled-in one)
    #[arg(long, value_name = "NAME")]
    pub snapshotter: Option<String>,
    /// Check the store instead of listing; exit 1 when anything is wrong
    #[arg(long, conflicts_with_all = ["kind", "quiet", "filters"])]
    pub check: bool,
    /// With --check: remove orphans, then check again
    #[arg(long, requires = "check")]
    pub repair: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(aliases = ["container", "ps"])]
    Containers,
    #[value(alias = "image")]
    Images,
    #[value(alias = "snapshot")]
    Snapshots,
    #[value(alias = "blobs")]
    Content,
}

pub fn command() -> clap::Command {
    LsArgs::command()
}

const CONTAINER_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Image",
    "ImageDigest",
    "Command",
    "Status",
    "State",
    "ExitCode",
    "OOMKilled",
    "Created",
    "CreatedAt",
    "StartedAt",
    "FinishedAt",
    "Labels",
    "Snapshotter",
    "Snapshot",
    "Runtime",
    "Pid",
];
const IMAGE_FIELDS: &[&str] = &[
    "Name",
    "Digest",
    "MediaType",
    "Platforms",
    "Size",
    "Unpacked",
    "Labels",
    "Created",
    "CreatedAt",
];
const SNAPSHOT_FIELDS: &[&str] = &[
    "Key",
    "Parent",
    "Kind",
    "Size",
    "Inodes",
    "Snapshotter",
    "Labels",
    "Created",
    "CreatedAt",
];
const CONTENT_FIELDS: &[&str] = &["Digest", "Size", "MediaType", "Labels"];

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerRow {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    image: String,
    image_digest: Option<String>,
    command: String,
    status: String,
    state: &'static str,
    exit_code: Option<i32>,
    #[serde(rename = "OOMKilled")]
    oom_killed: bool,
    created: String,
    created_at: Time,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    labels: Labels,
    snapshotter: String,
    snapshot: String,
    runtime: String,
    pid: Option<i32>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRow {
    name: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    size: Option<u64>,
    unpacked: Vec<String>,
    labels: Labels,
    created: String,
    created_at: Time,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotRow {
    key: String,
    parent: Option<String>,
    kind: &'static str,
    size: Option<u64>,
    inodes: Option<u64>,
    snapshotter: String,
    labels: Labels,
    created: String,
    created_at: Time,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContentRow {
    digest: String,
    size: u64,
    media_type: Option<String>,
    labels: Labels,
}

/// Runs berth-ls and returns its exit code.
pub fn main() -> i32 {
    let args = LsArgs::parse();
    let mut out = std::io::stdout().lock();
    let res = if args.check {
        run_check(&args, &mut out)
    } else {
        run(&args, &mut out)
    };
    let _ = out.flush();
    match res {
        Ok(code) => code,
        Err(e) => super::report("berth-ls", &e),
    }
}

fn run_check(args: &LsArgs, out: &mut impl Write) -> Result<i32, Error> {
    let (_, root) = args.global.load()?;
    let json = match args.format.as_str() {
        "table" => false,
        "json" => true,
        other => {
            return Err(Error::Usage(format!(
                "--check takes --format table or json, not {other:?}"
            )))
        }
    };
    let mut removed = Vec::new();
    if args.repair {
        let first = store_check::check(&root, true)?;
        for path in &first.removed {
            if !json {
                let _ = writeln!(out, "removed {}", path.display());
            }
        }
        removed = first.removed;
    }
    let report = store_check::check(&root, false)?;
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            sound: bool,
            problems: &'a [store_check::Problem],
            removed: &'a [std::path::PathBuf],
        }
        let text = serde_json::to_string_pretty(&Out {
            sound: report.sound(),
            problems: &report.problems,
            removed: &removed,
        })
        .unwrap_or_default();
        let _ = writeln!(out, "{text}");
    } else {
        for p in &report.problems {
            let _ = writeln!(out, "{p}");
        }
    }
    Ok(if report.sound() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}

/// How rows are printed.
enum Output {
    Table,
    Json,
    Template(Template),
}

fn run(args: &LsArgs, out: &mut impl Write) -> Result<i32, Error> {
    let kind = args.kind.unwrap_or(Kind::Containers);
    let fields = match kind {
        Kind::Containers => CONTAINER_FIELDS,
        Kind::Images => IMAGE_FIELDS,
        Kind::Snapshots => SNAPSHOT_FIELDS,
        Kind::Content => CONTENT_FIELDS,
    };
    let output = match args.format.as_str() {
        "table" => Output::Table,
        "json" => Output::Json,
        text => Output::Template(Template::parse(text, fields)?),
    };
    let filters = Filters::parse(&args.filters, kind)?;
    let (_, root) = args.global.load()?;
    let mut db = Db::open(&root)?;
    let trunc = !args.no_trunc;
    match kind {
        Kind::Containers => {
            // A table and ids show a few fields; json and templates all.
            let full = !args.quiet && !matches!(output, Output::Table);
            let recs = containers(&mut db, &filters, full)?;
            if args.quiet {
                // Ids alone need none of the row's formatting.
                let ids = recs.iter().map(|c| {
                    let id = c.id.as_str();
                    if trunc {
                        &id[..id.len().min(12)]
                    } else {
                        id
                    }
                });
                return write_lines(out, ids);
            }
            let now = crate::metadata::now_ns();
            let rows: Vec<ContainerRow> = recs
                .into_iter()
                .map(|c| container_row(c, now, trunc))
                .collect();
            let code = emit(
                out,
                &output,
                args.quiet,
                &rows,
                &[
                    "CONTAINER ID",
                    "NAME",
                    "IMAGE",
                    "COMMAND",
                    "STATUS",
                    "CREATED",
                ],
                |r| {
                    vec![
                        Cow::from(&r.id),
                        Cow::from(&r.name),
                        Cow::from(&r.image),
                        Cow::from(&r.command),
                        Cow::from(&r.status),
                        Cow::from(&r.created),
                    ]
                },
                |r| &r.id,
            );
            // The process ends next, which frees them all at once; freeing
            // ten thousand rows string by string is a tenth of the listing.
            std::mem::forget(rows);
            code
        }
        Kind::Images => {
            let store = content::Store::open(&root)?;
            let rows = images(&db, &store, &filters)?;
            emit(
                out,
                &output,
                args.quiet,
                &rows,
                &["NAME", "DIGEST", "PLATFORM(S)", "SIZE", "UNPACKED"],
                |r| {
                    vec![
                        Cow::from(&r.name),
                        if trunc {
                            Cow::from(short_digest(&r.digest))
                        } else {
                            Cow::from(&r.digest)
                        },
                        Cow::from(join_or_dash(&r.platforms)),
                        r.size.map_or(Cow::from("-"), |s| human_size(s).into()),
                        Cow::from(join_or_dash(&r.unpacked)),
                    ]
                },
                |r| &r.name,
            )
        }
        Kind::Snapshots => {
            let names: Vec<&str> = match &args.snapshotter {
                Some(n) => {
                    if !SNAPSHOTTERS.contains(&n.as_str()) {
                        return Err(snapshot::Error::UnknownSnapshotter { name: n.clone() }.into());
                    }
                    vec![n.as_str()]
                }
                None => SNAPSHOTTERS.to_vec(),
            };
            let measure = args.size && !args.quiet;
            let rows = snapshots(&root, &db, &names, &filters, measure)?;
            emit(
                out,
                &output,
                args.quiet,
                &rows,
                &["KEY", "PARENT", "KIND", "SIZE", "SNAPSHOTTER"],
                |r| {
                    vec![
                        Cow::from(&r.key),
                        Cow::from(r.parent.as_deref().unwrap_or_default()),
                        Cow::from(r.kind.to_string()),
                        r.size.map_or(Cow::from("-"), |s| human_size(s).into()),
                        Cow::from(&r.snapshotter),
                    ]
                },
                |r| &r.key,
            )
        }
        Kind::Content => {
            let rows = contents(&db, &filters)?;
            emit(
                out,
                &output,
                args.quiet,
                &rows,
                &["DIGEST", "SIZE", "MEDIA TYPE", "LABELS"],
                |r| {
                    let labels = labels_text(&r.labels);
                    vec![
                        if trunc {
                            Cow::from(short_digest(&r.digest))
                        } else {
                            Cow::from(&r.digest)
                        },
                        Cow::from(human_size(r.size)),
                        Cow::from(r.media_type.as_deref().unwrap_or("-")),
                        Cow::from(if trunc { truncate(labels, 40) } else { labels }),
                    ]
                },
                |r| &r.digest,
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit<T: Serialize>(
    out: &mut impl Write,
    output: &Output,
    quiet: bool,
    rows: &[T],
    headers: &[&str],
    cells: impl for<'a> Fn(&'a T) -> Vec<Cow<'a, str>>,
    id: impl Fn(&T) -> &str,
) -> Result<i32, Error> {
    let io = |e: std::io::Error| Error::Usage(format!("writing output: {e}"));
    if quiet {
        return write_lines(out, rows.iter().map(id));
    }
    match output {
        Output::Json => {
            // Straight out in large writes: thousands of rows make megabytes.
            let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
            serde_json::to_writer(&mut w, rows).map_err(|e| {
                if e.is_io() {
                    Error::Usage(format!("writing output: {e}"))
                } else {
                    Error::Usage(format!("encoding JSON: {e}"))
                }
            })?;
            writeln!(w).and_then(|()| w.flush()).map_err(io)?;
        }
        Output::Template(t) => {
            let mut text = String::new();
            for r in rows {
                let value = serde_json::to_value(r)
                    .map_err(|e| Error::Usage(format!("encoding row: {e}")))?;
                t.render(&value, &mut text);
                text.push('\n');
            }
            out.write_all(text.as_bytes()).map_err(io)?;
        }
        Output::Table => {
            let table: Vec<Vec<Cow<str>>> = rows.iter().map(&cells).collect();
            out.write_all(render_table(headers, &table).as_bytes())
                .map_err(io)?;
        }
    }
    Ok(exit::SUCCESS)
}

fn write_lines<'a>(
    out: &mut impl Write,
    lines: impl Iterator<Item = &'a str>,
) -> Result<i32, Error> {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .map_err(|e| Error::Usage(format!("writing output: {e}")))?;
    Ok(exit::SUCCESS)
}

/// Columns padded to their widest cell, three spaces apart, as docker's.
pub(super) fn render_table<S: AsRef<str>>(headers: &[&str], rows: &[Vec<S>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }
    let line: usize = widths.iter().map(|w| w + 3).sum();
    let mut text = String::with_capacity(line * (rows.len() + 1));
    push_line(&mut text, &widths, headers);
    for row in rows {
        push_line(&mut text, &widths, row);
    }
    text
}

fn push_line<S: AsRef<str>>(text: &mut String, widths: &[usize], cells: &[S]) {
    let start = text.len();
    for (i, cell) in cells.iter().enumerate() {
        let cell = cell.as_ref();
        text.push_str(cell);
        if i + 1 < cells.len() {
            let mut pad = widths[i].saturating_sub(cell.chars().count()) + 3;
            const SPACES: &str = "                                ";
            while pad > 0 {
                let n = pad.min(SPACES.len());
                text.push_str(&SPACES[..n]);
                pad -= n;
            }
        }
    }
    let trimmed = text[start..].trim_end().len();
    text.truncate(start + trimmed);
    text.push('\n');
}

// ---------------------------------------------------------------- filters

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Label(String, Option<String>),
    Status(ContainerStatus),
    Name(String),
    Image(String),
    Dangling(bool),
}

impl Filter {
    fn key(&self) -> &'static str {
        match self {
            Filter::Label(..) => "label",
            Filter::Status(_) => "status",
            Filter::Name(_) => "name",
            Filter::Image(_) => "image",
            Filter::Dangling(_) => "dangling",
        }
    }
}

/// Parsed `--filter`s, grouped by key: a row must match one filter of
/// every key given.
#[derive(Debug, Default)]
struct Filters {
    groups: BTreeMap<&'static str, Vec<Filter>>,
}

impl Filters {
    fn parse(specs: &[String], kind: Kind) -> Result<Filters, Error> {
        let mut groups: BTreeMap<&'static str, Vec<Filter>> = BTreeMap::new();
        for spec in specs {
            let (key, value) = spec
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--filter {spec:?}: expected KEY=VALUE")))?;
            let filter = match key {
                "label" => match value.split_once('=') {
                    Some((k, v)) => Filter::Label(k.into(), Some(v.into())),
                    None => Filter::Label(value.into(), None),
                },
                "status" => Filter::Status(match value {
                    "running" => ContainerStatus::Running,
                    "stopped" | "exited" => ContainerStatus::Stopped,
                    "created" => ContainerStatus::Created,
                    _ => {
                        return Err(Error::Usage(format!(
                            "--filter status={value}: expected running, stopped or created"
                        )))
                    }
                }),
                "name" => Filter::Name(value.into()),
                "image" => Filter::Image(value.into()),
                "dangling" => Filter::Dangling(match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(Error::Usage(format!(
                            "--filter dangling={value}: expected true or false"
                        )))
                    }
                }),
                _ => {
                    return Err(Error::Usage(format!(
                        "--filter {key}: unknown filter (label, status, name, image, dangling)"
                    )))
                }
            };
            let allowed = match (&filter, kind) {
                (Filter::Status(_) | Filter::Image(_), Kind::Containers) => true,
                (Filter::Status(_) | Filter::Image(_), _) => false,
                (Filter::Dangling(_), Kind::Containers) => false,
                _ => true,
            };
            if !allowed {
                return Err(Error::Usage(format!(
                    "--filter {key}: does not apply to {}",
                    kind_name(kind)
                )));
            }
            groups.entry(filter.key()).or_default().push(filter);
        }
        Ok(Filters { groups })
    }

    fn wants_dangling(&self) -> bool {
        self.groups.contains_key("dangling")
    }

    /// Whether a row passes: `test` says whether it matches one filter.
    fn pass(&self, test: impl Fn(&Filter) -> bool) -> bool {
        self.groups.values().all(|group| group.iter().any(&test))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Containers => "containers",
        Kind::Images => "images",
        Kind::Snapshots => "snapshots",
        Kind::Content => "content",
    }
}

fn label_matches(labels: &Labels, key: &str, value: &Option<String>) -> bool {
    match (labels.get(key), value) {
        (Some(have), Some(want)) => have == want,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Whether the image name `want`, as given on the command line, names
/// `have` (a normalised stored name).
pub(crate) fn image_matches(have: &str, want: &str) -> bool {
    if have == want {
        return true;
    }
    match want.parse::<crate::distribution::Reference>() {
        Ok(r) => crate::image::stored_name(&r) == have,
        Err(_) => false,
    }
}

// ------------------------------------------------------------- containers

/// The containers that pass `filters`, newest first as docker ps.
fn containers(db: &mut Db, filters: &Filters, full: bool) -> Result<Vec<ContainerRecord>, Error> {
    let mut recs = db.containers_listing(full || filters.groups.contains_key("label"))?;
    recs.retain(|c| {
        filters.pass(|f| match f {
            Filter::Label(k, v) => label_matches(&c.labels, k, v),
            Filter::Status(s) => c.status == *s,
            Filter::Name(n) => c.name.contains(n.as_str()),
            Filter::Image(i) => image_matches(&c.image, i),
            Filter::Dangling(_) => false,
        })
    });
    recs.reverse();
    Ok(recs)
}

fn container_row(c: ContainerRecord, now: i64, trunc: bool) -> ContainerRow {
    let status = container_status(&c, now);
    let command = quote_command(&c.command);
    ContainerRow {
        id: if trunc {
            c.id[..c.id.len().min(12)].to_string()
        } else {
            c.id
        },
        command: if trunc {
            truncate(command, 20)
        } else {
            command
        },
        status,
        state: c.status.as_str(),
        exit_code: c.exit_code,
        oom_killed: c.oom_killed,
        created: ago(now, c.created_ns),
        created_at: Time(c.created_ns),
        started_at: c.started_ns.map(Time),
        finished_at: c.finished_ns.map(Time),
        name: c.name,
        image: c.image,
        image_digest: c.image_digest,
        labels: c.labels,
        snapshotter: c.snapshotter,
        snapshot: c.snapshot_key,
        runtime: c.runtime,
        pid: (c.status == ContainerStatus::Running)
            .then_some(c.pid)
            .flatten(),
    }
}

/// `Created`, `Up 5 minutes`, `Exited (137) 2 minutes ago (OOM)`.
fn container_status(c: &ContainerRecord, now: i64) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(40);
    // Writing into a String cannot fail.
    let _ = match c.status {
        ContainerStatus::Created => write!(text, "Created"),
        ContainerStatus::Running => write!(
            text,
            "Up {}",
            HumanDuration(now - c.started_ns.unwrap_or(c.created_ns))
        ),
        ContainerStatus::Stopped => {
            let when = c.finished_ns.or(c.started_ns).unwrap_or(c.created_ns);
            let oom = if c.oom_killed { " (OOM)" } else { "" };
            match c.exit_code {
                Some(code) => write!(
                    text,
                    "Exited ({code}) {} ago{oom}",
                    HumanDuration(now - when)
                ),
                None => write!(
                    text,
                    "Exited (unknown) {} ago{oom}",
                    HumanDuration(now - when)
                ),
            }
        }
    };
    text
}

/// The command as one double-quoted string, docker's way.
fn quote_command(args: &[String]) -> String {
    let mut text = String::with_capacity(2 + args.iter().map(|a| a.len() + 1).sum::<usize>());
    text.push('"');
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        if a.is_empty()
            || a.chars()
                .any(|ch| ch.is_whitespace() || "'\"\\$`".contains(ch))
        {
            text.push('\'');
            text.push_str(&a.replace('\'', "'\\''"));
            text.push('\'');
        } else {
            text.push_str(a);
        }
    }
    text.push('"');
    text
}

// ----------------------------------------------------------------- images

fn images(db: &Db, store: &content::Store, filters: &Filters) -> Result<Vec<ImageRow>, Error> {
    let now = crate::metadata::now_ns();
    let known: HashSet<String> = db.read(|c| {
        let mut stmt = c.prepare("SELECT digest FROM content")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })?;
    let used: HashSet<String> = if filters.wants_dangling() {
        db.containers()?.into_iter().map(|c| c.image).collect()
    } else {
        HashSet::new()
    };
    let host = Platform::host();
    let mut rows = Vec::new();
    for img in db.images()? {
        let keep = filters.pass(|f| match f {
            Filter::Label(k, v) => label_matches(&img.labels, k, v),
            Filter::Name(n) => img.name.contains(n.as_str()),
            Filter::Dangling(d) => *d != used.contains(&img.name),
            Filter::Status(_) | Filter::Image(_) => false,
        });
        if !keep {
            continue;
        }
        let (platforms, size) = image_details(store, &known, &host, &img.media_type, &img.digest);
        let unpacked = img
            .labels
            .keys()
            .filter_map(|k| k.strip_prefix(UNPACKED_LABEL_PREFIX))
            .map(str::to_string)
            .collect();
        rows.push(ImageRow {
            created: ago(now, img.created_ns),
            created_at: Time(img.created_ns),
            name: img.name,
            digest: img.digest.to_string(),
            media_type: img.media_type,
            platforms,
            size,
            unpacked,
            labels: img.labels,
        });
    }
    Ok(rows)
}

fn platform_text(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// The platforms an image holds (the manifests of an index that are in
/// the store) and the size of the host platform's manifest: its config and
/// layers. Unreadable documents leave both empty rather than failing the
/// listing; `--check` is where damage is reported.
fn image_details(
    store: &content::Store,
    known: &HashSet<String>,
    host: &Platform,
    media_type: &str,
    digest: &Digest,
) -> (Vec<String>, Option<u64>) {
    let manifest_size = |m: &Manifest| m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    let read_manifest =
        |d: &Digest| -> Option<Manifest> { serde_json::from_slice(&store.read(d).ok()?).ok() };
    match manifest::classify(media_type) {
        Ok(DocumentKind::Index) => {
            let Some(index) = store
                .read(digest)
                .ok()
                .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
            else {
                return (Vec::new(), None);
            };
            let present: Vec<_> = index
                .manifests
                .iter()
                .filter(|d| known.contains(&d.digest.to_string()))
                .collect();
            let platforms = present
                .iter()
                .filter_map(|d| d.platform.as_ref().map(platform_text))
                .collect();
            let chosen = present
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
                .or(present.first());
            let size = chosen
                .and_then(|d| read_manifest(&d.digest))
                .map(|m| manifest_size(&m));
            (platforms, size)
        }
        Ok(DocumentKind::Manifest) => {
            let Some(m) = read_manifest(digest) else {
                return (Vec::new(), None);
            };
            let platform = store
                .read(&m.config.digest)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    let os = v.get("os")?.as_str()?.to_string();
                    let architecture = v.get("architecture")?.as_str()?.to_string();
                    let variant = v
                        .get("variant")
                        .and_then(|x| x.as_str())
                        .map(str::to_string);
                    Some(platform_text(&Platform {
                        architecture,
                        os,
                        variant,
                    }))
                });
            (platform.into_iter().collect(), Some(manifest_size(&m)))
        }
        Err(_) => (Vec::new(), None),
    }
}

// -------------------------------------------------------------- snapshots

fn snapshots(
    root: &std::path::Path,
    db: &Db,
    names: &[&str],
    filters: &Filters,
    measure: bool,
) -> Result<Vec<SnapshotRow>, Error> {
    let now = crate::metadata::now_ns();
    // What refers to a snapshot, for dangling=: containers, images'
    // unpacked labels, content's gc.ref.snapshot labels, children.
    let mut referenced: HashSet<(String, String)> = HashSet::new();
    if filters.wants_dangling() {
        for c in db.containers()? {
            referenced.insert((c.snapshotter, c.snapshot_key));
        }
        for img in db.images()? {
            for (k, v) in &img.labels {
                if let Some(sn) = k.strip_prefix(UNPACKED_LABEL_PREFIX) {
                    referenced.insert((sn.to_string(), v.clone()));
                }
            }
        }
        for rec in db.contents()? {
            for (k, v) in &rec.labels {
                if let Some(sn) = k.strip_prefix("containerd.io/gc.ref.snapshot.") {
                    referenced.insert((sn.to_string(), v.clone()));
                }
            }
        }
    }
    let mut rows = Vec::new();
    for &name in names {
        let recs = db.snapshots(name)?;
        if filters.wants_dangling() {
            for r in &recs {
                if let Some(p) = &r.parent {
                    referenced.insert((name.to_string(), p.clone()));
                }
            }
        }
        let opened = if measure && recs.iter().any(|r| r.usage.is_none()) {
            Some(snapshot::open(root, name)?)
        } else {
            None
        };
        for rec in recs {
            let keep = filters.pass(|f| match f {
                Filter::Label(k, v) => label_matches(&rec.labels, k, v),
                Filter::Name(n) => rec.key.contains(n.as_str()),
                Filter::Dangling(d) => {
                    *d != referenced.contains(&(name.to_string(), rec.key.clone()))
                }
                Filter::Status(_) | Filter::Image(_) => false,
            });
            if !keep {
                continue;
            }
            let usage = match (rec.usage, &opened) {
                (Some(u), _) => Some(u),
                (None, Some(s)) => s.usage(&rec.key).ok(),
                (None, None) => None,
            };
            rows.push(SnapshotRow {
                created: ago(now, rec.created_ns),
                created_at: Time(rec.created_ns),
                key: rec.key,
                parent: rec.parent,
                kind: rec.kind.as_str(),
                size: usage.map(|u| u.size),
                inodes: usage.map(|u| u.inodes),
                snapshotter: name.to_string(),
                labels: rec.labels,
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------- content

fn contents(db: &Db, filters: &Filters) -> Result<Vec<ContentRow>, Error> {
    let recs = db.contents()?;
    let mut reachable: HashSet<String> = HashSet::new();
    if filters.wants_dangling() {
        let by_digest: HashMap<String, &crate::metadata::ContentRecord> =
            recs.iter().map(|r| (r.digest.to_string(), r)).collect();
        let mut queue: Vec<String> = db
            .images()?
            .into_iter()
            .map(|i| i.digest.to_string())
            .collect();
        for (kind, key) in db.leased_all()? {
            if kind == "content" {
                queue.push(key);
            }
        }
        while let Some(d) = queue.pop() {
            if !reachable.insert(d.clone()) {
                continue;
            }
            if let Some(rec) = by_digest.get(&d) {
                for (k, v) in &rec.labels {
                    if k.starts_with(CONTENT_REF_PREFIX) {
                        queue.push(v.clone());
                    }
                }
            }
        }
    }
    Ok(recs
        .into_iter()
        .filter(|r| {
            let digest = r.digest.to_string();
            filters.pass(|f| match f {
                Filter::Label(k, v) => label_matches(&r.labels, k, v),
                Filter::Name(n) => digest.contains(n.as_str()),
                Filter::Dangling(d) => *d != reachable.contains(&digest),
                Filter::Status(_) | Filter::Image(_) => false,
            })
        })
        .map(|r| ContentRow {
            digest: r.digest.to_string(),
            size: r.size,
            media_type: r.media_type,
            labels: r.labels,
        })
        .collect())
}

// ---------------------------------------------------------------- helpers

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => d.to_string(),
    }
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` cut to `max` characters, the last being `…`.
fn truncate(text: String, max: usize) -> String {
    // Byte length bounds the character count: most cells need no count.
    if text.len() <= max {
        return text;
    }
    match text.char_indices().nth(max) {
        None => text,
        Some(_) => {
            let cut = text
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(0, |(i, _)| i);
            let mut t = String::with_capacity(cut + '…'.len_utf8());
            t.push_str(&text[..cut]);
            t.push('…');
            t
        }
    }
}

/// Sizes in SI units with three significant digits, as docker prints them.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if v < 10.0 {
        format!("{v:.2}{}", UNITS[unit])
    } else if v < 100.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// `3 minutes ago`.
fn ago(now_ns: i64, then_ns: i64) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(24);
    // Writing into a String cannot fail.
    let _ = write!(text, "{} ago", HumanDuration(now_ns - then_ns));
    text
}

/// Docker's human durations, written straight into their destination (a
/// listing writes one per row): `Less than a second`, `5 seconds`, `About
/// a minute`, `3 minutes`, `About an hour`, `5 hours`, `2 days`, …
struct HumanDuration(i64);

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = (self.0.max(0) / 1_000_000_000) as u64;
        let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
        if secs < 1 {
            f.write_str("Less than a second")
        } else if secs == 1 {
            f.write_str("1 second")
        } else if secs < 60 {
            write!(f, "{secs} seconds")
        } else if m == 1 {
            f.write_str("About a minute")
        } else if m < 60 {
            write!(f, "{m} minutes")
        } else if h == 1 {
            f.write_str("About an hour")
        } else if h < 48 {
            write!(f, "{h} hours")
        } else if d < 14 {
            write!(f, "{d} days")
        } else if d < 7 * 8 {
            write!(f, "{} weeks", d / 7)
        } else if d < 365 * 2 {
            write!(f, "{} months", d / 30)
        } else {
            write!(f, "{} years", d / 365)
        }
    }
}

/// A time as nanoseconds since the epoch, shown (and serialized) in
/// RFC 3339 UTC; kept as a number until then because a listing of many
/// rows may never show it.
#[derive(Debug, Clone, Copy)]
struct Time(i64);

impl Time {
    /// `YYYY-MM-DDTHH:MM:SSZ` in ASCII, without the formatting machinery:
    /// a JSON listing writes three per row.
    fn text(self) -> [u8; 20] {
        let secs = self.0.div_euclid(1_000_000_000);
        let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
        let (year, month, day) = crate::runtime::container::logs::civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year.clamp(0, 9999));
        put(5, 2, month.into());
        put(8, 2, day.into());
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        b
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

/// RFC 3339 UTC timestamp of nanoseconds since the epoch.
pub(super) fn timestamp(ns: i64) -> String {
    Time(ns).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_match_the_json_keys() {
        let check = |v: serde_json::Value, fields: &[&str]| {
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            let mut want = fields.to_vec();
            keys.sort();
            want.sort();
            assert_eq!(keys, want);
        };
        let c = ContainerRecord {
            id: "a".repeat(64),
            name: "n".into(),
            image: "i".into(),
            image_digest: None,
            snapshotter: "native".into(),
            snapshot_key: "k".into(),
            runtime: "runc".into(),
            spec: "{}".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            status: ContainerStatus::Stopped,
            pid: None,
            pid_start: None,
            supervisor_pid: None,
            supervisor_start: None,
            exit_code: Some(137),
            oom_killed: true,
            created_ns: 0,
            started_ns: Some(0),
            finished_ns: Some(60_000_000_000),
            labels: Labels::new(),
            auto_remove: false,
            cgroup_path: None,
            log_path: None,
        };
        let row = container_row(c, 180_000_000_000, true);
        assert_eq!(row.id.len(), 12);
        assert_eq!(row.status, "Exited (137) 2 minutes ago (OOM)");
        assert_eq!(row.command, "\"sh -c 'echo hi'\"");
        assert_eq!(row.created, "3 minutes ago");
        check(serde_json::to_value(&row).unwrap(), CONTAINER_FIELDS);
        check(
            serde_json::to_value(ImageRow {
                name: String::new(),
                digest: String::new(),
                media_type: String::new(),
                platforms: vec![],
                size: None,
                unpacked: vec![],
                labels: Labels::new(),
                created: String::new(),
                created_at: Time(0),
            })
            .unwrap(),
            IMAGE_FIELDS,
        );
        check(
            serde_json::to_value(SnapshotRow {
                key: String::new(),
                parent: None,
                kind: "active",
                size: None,
                inodes: None,
                snapshotter: String::new(),
                labels: Labels::new(),
                created: String::new(),
                created_at: Time(0),
            })
            .unwrap(),
            SNAPSHOT_FIELDS,
        );
        check(
            serde_json::to_value(ContentRow {
                digest: String::new(),
                size: 0,
                media_type: None,
                labels: Labels::new(),
            })
            .unwrap(),
            CONTENT_FIELDS,
        );
    }

    #[test]
    fn human_formats() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(HumanDuration(0).to_string(), "Less than a second");
        assert_eq!(HumanDuration(5_000_000_000).to_string(), "5 seconds");
        assert_eq!(HumanDuration(300_000_000_000).to_string(), "5 minutes");
        assert_eq!(Time(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Time(1_700_000_000_000_000_000).to_string(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(truncate("abcdef".into(), 4), "abc…");
        assert_eq!(truncate("abcé".into(), 4), "abcé");
        assert_eq!(truncate("abcdé".into(), 4), "abc…");
        assert_eq!(truncate("ééééé".into(), 4), "ééé…");
        assert_eq!(truncate("ab".into(), 0), "…");
        assert_eq!(
            short_digest(&format!("sha256:{}", "a".repeat(64))).len(),
            19
        );
    }

    #[test]
    fn filters_group_and_check_kind() {
        let f = Filters::parse(
            &[
                "status=running".into(),
                "status=created".into(),
                "label=a=b".into(),
            ],
            Kind::Containers,
        )
        .unwrap();
        assert_eq!(f.groups.len(), 2);
        assert!(
            f.pass(|x| matches!(x, Filter::Status(ContainerStatus::Created))
                || matches!(x, Filter::Label(..)))
        );
        assert!(!f.pass(|x| matches!(x, Filter::Label(..))));
        assert!(Filters::parse(&["status=running".into()], Kind::Images).is_err());
        assert!(Filters::parse(&["dangling=true".into()], Kind::Containers).is_err());
        assert!(Filters::parse(&["bogus=1".into()], Kind::Content).is_err());
        assert!(Filters::parse(&["dangling=maybe".into()], Kind::Content).is_err());
    }
}
