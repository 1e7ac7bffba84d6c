//! `berth-rm`: remove containers, images, snapshots and content, and
//! collect what no longer has a use.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use serde::Serialize;

use super::{exit, Format, GlobalArgs};
use crate::gc::{self, Node, Pretend, Report};
use crate::metadata::{self, events::action, ContainerRecord, ContainerStatus, Db, EventType};
use crate::runtime::container::{self, Context};
use crate::{runtime, snapshot, Error};
use rusqlite::OptionalExtension;

const AFTER_HELP: &str = "\
Kinds:
  container (default)  refused while running unless -f, which kills it first
  image                the name is removed, then garbage collection frees the
                       blobs and snapshots nothing else reaches
  snapshot, content    refused while anything references them

--prune removes stopped containers, then collects every snapshot and blob
that no image, container, live lease or live process reaches. Images always
have a name in berth, so there are no dangling images to prune: an image
goes only when its name is removed.

Garbage collection roots: image records, container records, unexpired
leases (pulls and imports in flight) and work snapshots of live processes.
--dry-run --format json prints what would be freed and, for each object
kept, the root that keeps it.

Examples:
  berth-rm web                          remove a stopped container
  berth-rm -f web                       kill and remove a running one
  berth-rm image busybox:latest
  berth-rm --prune
  berth-rm --prune --dry-run --format json";

/// Remove containers, images, snapshots or content blobs.
#[derive(Debug, Parser)]
#[command(name = "berth-rm", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct RmArgs {
    /// [container|image|snapshot|content] then ids: container ids, unique
    /// id prefixes or names; image names; snapshot keys; content digests
    #[arg(value_name = "ID")]
    pub args: Vec<String>,
    /// Kill running containers first
    #[arg(short, long)]
    pub force: bool,
    /// Remove stopped containers and everything unreachable
    #[arg(long)]
    pub prune: bool,
    /// Remove nothing; say what would be freed and why the rest is kept
    #[arg(long)]
    pub dry_run: bool,
    /// Snapshotter of the snapshots named (default: whichever has the key)
    #[arg(long)]
    pub snapshotter: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    RmArgs::command()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Container,
    Image,
    Snapshot,
    Content,
}

impl ObjectKind {
    fn parse(s: &str) -> Option<ObjectKind> {
        match s {
            "container" | "containers" => Some(ObjectKind::Container),
            "image" | "images" => Some(ObjectKind::Image),
            "snapshot" | "snapshots" => Some(ObjectKind::Snapshot),
            "content" => Some(ObjectKind::Content),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize)]
struct Named {
    kind: ObjectKind,
    id: String,
}

#[derive(Debug, Serialize)]
struct Failure {
    kind: ObjectKind,
    id: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct Output {
    dry_run: bool,
    /// The objects named (or pruned) that were removed, or would be.
    removed: Vec<Named>,
    failed: Vec<Failure>,
    /// What garbage collection freed or would free, and kept.
    gc: Option<Report>,
}

pub fn main() -> i32 {
    let args = RmArgs::parse();
    let prog = "berth-rm";
    let (kind, ids) = match args.args.first().and_then(|a| ObjectKind::parse(a)) {
        Some(k) => (k, &args.args[1..]),
        None => (ObjectKind::Container, &args.args[..]),
    };
    if ids.is_empty() && !args.prune {
        return super::report(
            prog,
            &Error::Usage("name what to remove, or give --prune".into()),
        );
    }
    let root = match args.global.load() {
        Ok((_, root)) => root,
        Err(e) => return super::report(prog, &e),
    };
    let mut db = match Db::open(&root) {
        Ok(db) => db,
        Err(e) => return super::report(prog, &e.into()),
    };
    let mut out = Output {
        dry_run: args.dry_run,
        removed: Vec::new(),
        failed: Vec::new(),
        gc: None,
    };
    let mut code = exit::SUCCESS;
    let mut fail = |out: &mut Output, id: &str, err: Error| {
        eprintln!("{prog}: error: {id}: {}", super::message(&err));
        let c = exit::code(err.kind());
        if code == exit::SUCCESS {
            code = c;
        }
        out.failed.push(Failure {
            kind,
            id: id.to_string(),
            error: super::message(&err),
        });
    };
    let mut pretend = Pretend::default();
    // Writable snapshots that went with their containers: the collector
    // never sees them, but they are what a prune frees most of.
    let mut freed = Vec::new();
    let mut run_gc = args.prune;
    for id in ids {
        let result = match kind {
            ObjectKind::Container => {
                remove_container(&root, &mut db, id, args.force, args.dry_run, &mut freed).map(
                    |rec| {
                        pretend.containers.push(rec.id.clone());
                        run_gc = true;
                        rec.id
                    },
                )
            }
            ObjectKind::Image => remove_image(&mut db, id, args.dry_run).inspect(|name| {
                pretend.images.push(name.clone());
                run_gc = true;
            }),
            ObjectKind::Snapshot => {
                remove_snapshot(&root, &db, id, args.snapshotter.as_deref(), args.dry_run)
            }
            ObjectKind::Content => remove_content(&root, &db, id, args.dry_run),
        };
        match result {
            Ok(id) => out.removed.push(Named { kind, id }),
            Err(e) => fail(&mut out, id, e),
        }
    }
    if args.prune {
        match prune_containers(&root, &mut db, args.dry_run, &mut freed) {
            Ok(ids) => {
                for id in ids {
                    pretend.containers.push(id.clone());
                    out.removed.push(Named {
                        kind: ObjectKind::Container,
                        id,
                    });
                }
            }
            Err(e) => fail(&mut out, "--prune", e),
        }
    }
    if run_gc {
        match gc::collect(&root, args.dry_run, &pretend) {
            Ok(mut report) => {
                // A dry run's collector already counts them (it pretends
                // the containers are gone).
                for f in freed {
                    report.freed_bytes += f.size;
                    report.removed.push(f);
                }
                out.gc = Some(report)
            }
            Err(e) => fail(&mut out, "garbage collection", e.into()),
        }
    }
    // Events are pruned on insert too; a prune is the natural moment to
    // apply the retention now rather than at the next few hundredth event.
    if args.prune && !args.dry_run {
        if let Err(e) = db.prune_events(metadata::events::retention()) {
            fail(&mut out, "pruning events", e.into());
        }
    }
    print(&out, args.format);
    code
}

fn print(out: &Output, format: Format) {
    match format {
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(out).unwrap_or_else(|_| "{}".into())
            );
        }
        Format::Table if out.dry_run => {
            for n in &out.removed {
                println!("would remove {} {}", kind_str(n.kind), n.id);
            }
            if let Some(r) = &out.gc {
                for f in &r.removed {
                    println!("would free {} ({} bytes)", f.node, f.size);
                }
                for k in &r.kept {
                    println!("keep {}: {}", k.node, k.reason);
                }
                println!("would free {} bytes", r.freed_bytes);
            }
        }
        Format::Table => {
            for n in &out.removed {
                println!("{}", n.id);
            }
            if let Some(r) = &out.gc {
                if !r.removed.is_empty() {
                    eprintln!(
                        "garbage collection freed {} bytes: {} object(s)",
                        r.freed_bytes,
                        r.removed.len()
                    );
                }
            }
        }
    }
}

fn kind_str(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Container => "container",
        ObjectKind::Image => "image",
        ObjectKind::Snapshot => "snapshot",
        ObjectKind::Content => "content",
    }
}

fn state_error(rec: &ContainerRecord, message: String) -> Error {
    runtime::Error::State {
        runtime: rec.runtime.clone(),
        id: rec.id.clone(),
        message,
    }
    .into()
}

/// Removes container `query`, killing it first with `force`. Returns its
/// record (as it was).
fn remove_container(
    root: &Path,
    db: &mut Db,
    query: &str,
    force: bool,
    dry_run: bool,
    freed: &mut Vec<gc::Freed>,
) -> Result<ContainerRecord, Error> {
    let rec = db.container_reconciled(query)?;
    if rec.status == ContainerStatus::Running {
        if !force {
            return Err(state_error(
                &rec,
                format!("container {} is running; stop it first or use -f", rec.name),
            ));
        }
        if dry_run {
            return Ok(rec);
        }
        if let (Some(pid), Some(start)) = (rec.pid, rec.pid_start) {
            if metadata::process_start_time(pid) == Some(start) {
                container::record_kill(db, &rec, libc::SIGKILL)?;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // The supervisor records the stop (and, for --rm, removes it).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match db.container_reconciled(&rec.id) {
                Ok(now) if now.status != ContainerStatus::Running => break,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(_) => {
                    return Err(state_error(
                        &rec,
                        format!("container {} did not stop after SIGKILL", rec.name),
                    ))
                }
                Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(rec),
                Err(e) => return Err(e.into()),
            }
        }
    }
    if dry_run {
        return Ok(rec);
    }
    let mut ctx = Context {
        root: root.to_path_buf(),
        db: Db::open(root)?,
        snapshotter: snapshot::open(root, &rec.snapshotter)?,
        runtime: runtime::open(root, &rec.runtime)?,
    };
    match ctx.runtime.delete(&rec.id, true) {
        Ok(()) => {}
        Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let size = ctx.snapshotter.usage(&rec.snapshot_key).map(|u| u.size);
    container::discard(&mut ctx, &rec)?;
    if let Ok(size) = size {
        freed.push(gc::Freed {
            node: Node::snapshot(&rec.snapshotter, &rec.snapshot_key),
            size,
        });
    }
    Ok(rec)
}

/// Stopped containers, removed (or, in a dry run, listed).
fn prune_containers(
    root: &Path,
    db: &mut Db,
    dry_run: bool,
    freed: &mut Vec<gc::Freed>,
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for rec in db.containers_reconciled()? {
        if rec.status != ContainerStatus::Stopped {
            continue;
        }
        match remove_container(root, db, &rec.id, false, dry_run, freed) {
            Ok(rec) => out.push(rec.id),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Removes the image name `query` (as given, or normalised as a pull
/// records it). Returns the recorded name.
fn remove_image(db: &mut Db, query: &str, dry_run: bool) -> Result<String, Error> {
    let mut names = vec![query.to_string()];
    if let Ok(reference) = query.parse::<crate::distribution::Reference>() {
        names.push(crate::image::stored_name(&reference));
    }
    for name in names {
        if db.image(&name)?.is_none() {
            continue;
        }
        if dry_run {
            return Ok(name);
        }
        let removed = db.write(|tx| {
            let digest = tx
                .query_row("SELECT digest FROM images WHERE name = ?1", [&name], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?;
            let Some(digest) = digest else {
                return Ok(false);
            };
            metadata::delete_image(tx, &name)?;
            let attrs = metadata::Labels::from([("digest".to_string(), digest)]);
            metadata::record_event(tx, EventType::Image, action::REMOVE, &name, &attrs)?;
            Ok(true)
        })?;
        if removed {
            return Ok(name);
        }
    }
    Err(metadata::Error::NotFound {
        what: format!("image {query}"),
    }
    .into())
}

fn in_use(what: String, why: String) -> Error {
    gc::Error::InUse { what, why }.into()
}

fn remove_snapshot(
    root: &Path,
    db: &Db,
    key: &str,
    explicit: Option<&str>,
    dry_run: bool,
) -> Result<String, Error> {
    let names: Vec<&str> = match explicit {
        Some(n) => vec![n],
        None => snapshot::SNAPSHOTTERS
            .iter()
            .copied()
            .filter(|n| matches!(db.snapshot(n, key), Ok(Some(_))))
            .collect(),
    };
    let name = match names.as_slice() {
        [] => {
            return Err(metadata::Error::NotFound {
                what: format!("snapshot {key}"),
            }
            .into())
        }
        [one] => *one,
        _ => {
            return Err(Error::Usage(format!(
                "snapshot {key} exists in {}; pick one with --snapshotter",
                names.join(" and ")
            )))
        }
    };
    let node = Node::snapshot(name, key);
    if let Some(why) = gc::referenced_by(db, &node)? {
        return Err(snapshot_in_use(name, key, why));
    }
    if dry_run {
        return Ok(key.to_string());
    }
    let _lock = gc::GcLock::acquire(root)?;
    let s = snapshot::open(root, name)?;
    let keep = |c: &rusqlite::Connection| -> rusqlite::Result<Option<String>> {
        Ok(gc::mark(c)?.reached.get(&node).cloned())
    };
    match s.remove_unless(key, &keep) {
        Ok(()) => Ok(key.to_string()),
        Err(snapshot::Error::Kept { reason, .. }) => Err(snapshot_in_use(name, key, reason)),
        Err(e) => Err(e.into()),
    }
}

fn snapshot_in_use(snapshotter: &str, key: &str, why: String) -> Error {
    in_use(format!("snapshot {snapshotter}/{key}"), why)
}

fn remove_content(root: &Path, db: &Db, digest: &str, dry_run: bool) -> Result<String, Error> {
    let d: crate::content::Digest = digest
        .parse()
        .map_err(|e| Error::Usage(format!("{digest}: not a digest: {e}")))?;
    let digest = d.to_string();
    if dry_run {
        if let Some(why) = gc::referenced_by(db, &Node::content(&digest))? {
            return Err(in_use(format!("content {digest}"), why));
        }
        if db.content(&d)?.is_none() {
            return Err(metadata::Error::NotFound {
                what: format!("content {digest}"),
            }
            .into());
        }
        return Ok(digest);
    }
    match gc::remove_content(root, &digest)? {
        Ok(_) => Ok(digest),
        Err(why) if why == "not found" => Err(metadata::Error::NotFound {
            what: format!("content {digest}"),
        }
        .into()),
        Err(why) => Err(in_use(format!("content {digest}"), why)),
    }
}
