//! Containers: from a stored image to a running process and back.
//!
//! This is the lifecycle `berth-run` drives, written once for every
//! runtime plugin:
//!
//! 1. [`private_mounts`]: the calling process moves into a mount namespace
//!    of its own, slave to the host's. The container's root filesystem is
//!    mounted there, so it is visible to the runtime (a child process) and
//!    to nobody else, and it vanishes with the last process using it: a
//!    `berth-run` or supervisor killed at any instant leaves no mount on
//!    the host.
//! 2. [`create`]: a writable snapshot on the image's top layer (labelled
//!    as owned by this process until the container record holds it), its
//!    mount at `<root>/containers/<id>/rootfs`, the spec in
//!    `<root>/containers/<id>/config.json`, and the container record
//!    (status `created`). A failure undoes every step.
//! 3. [`launch`]: the runtime creates the container; the record gets the
//!    container's pid and the pid of the process that waits for it (the
//!    foreground `berth-run`, or the supervisor a detached run leaves
//!    behind). [`start`]: the runtime starts it; the record becomes
//!    `running`.
//! 4. [`finish`]: after the container's init is reaped, the record becomes
//!    `stopped` with the exit code and whether the kernel's OOM killer
//!    struck; the runtime forgets the container; the root filesystem is
//!    unmounted; with `--rm`, the snapshot, the record and the directory go.
//!
//! Each step records its event (`create`, `start`, `die`, `remove`) in the
//! transaction that changes the record. While the container runs, its
//! waiter records `oom` events as its cgroup's OOM kill count grows
//! ([`OomWatcher`], polled by the wait loop); [`finish`] records kills the
//! watcher did not see, before the `die` event.
//!
//! Readers reconcile: a record still `running` whose waiting process is gone
//! is shown `stopped` (see `metadata::containers`).

pub mod attach;
pub mod logs;
pub mod supervise;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{build_spec, ImageConfig, RunOptions, Runtime};
use crate::image::LocalImage;
use crate::metadata::{self, events::action, ContainerRecord, ContainerStatus, Db, Labels};
use crate::snapshot::{self, mount, Snapshotter};
use crate::Error;

/// Label on a container's writable snapshot naming the container.
pub const CONTAINER_LABEL: &str = "berth.io/container";

/// Where the container's cgroup goes, relative to each hierarchy's root.
pub fn cgroup_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// What the store and the plugins give a container operation.
pub struct Context {
    pub root: PathBuf,
    pub db: Db,
    pub snapshotter: Box<dyn Snapshotter>,
    pub runtime: Box<dyn Runtime>,
}

impl Context {
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}

/// A container's files: `<root>/containers/<id>/`.
pub fn bundle_rootfs(dir: &Path) -> PathBuf {
    dir.join("rootfs")
}

/// The log a detached container's output goes to.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

/// Moves the calling process into its own mount namespace whose mounts
/// receive the host's but never propagate back. Must run while the process
/// has one thread.
pub fn private_mounts() -> Result<(), Error> {
    let os = |action: &'static str, e: nix::errno::Errno| super::Error::Os {
        action,
        source: e.into(),
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| os("entering a private mount namespace", e))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| os("making the mount namespace a slave of the host's", e))?;
    Ok(())
}

/// A fresh container id: 64 hex characters from the kernel's random pool.
pub fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| super::Error::Io {
            action: "reading",
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "swift", "tidy", "vivid",
];
const NOUNS: &[&str] = &[
    "anchor", "buoy", "cove", "dock", "ferry", "galley", "harbor", "jetty", "keel", "lagoon",
    "mast", "pier", "quay", "reef", "sloop", "wharf",
];

/// A docker-style name derived from the id (`swift_harbor_3fa2`).
fn generated_name(id: &str) -> String {
    let b = |i: usize| usize::from_str_radix(&id[i..i + 2], 16).unwrap_or(0);
    format!(
        "{}_{}_{}",
        ADJECTIVES[b(0) % ADJECTIVES.len()],
        NOUNS[b(2) % NOUNS.len()],
        &id[4..8]
    )
}

/// What `berth-run` asks for, beyond the spec flags.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The name the image was asked for by, as recorded.
    pub image_name: String,
    pub options: RunOptions,
    /// Explicit `--name`; a generated one otherwise.
    pub name: Option<String>,
    pub auto_remove: bool,
    pub detach: bool,
}

/// Checks a `--name` the way docker does.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(super::Error::flag(
            "--name",
            name,
            "must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 128 characters)",
        )
        .into())
    }
}

/// Steps 2 of the lifecycle: snapshot, mount, spec, record. Nothing is left
/// behind on failure.
pub fn create(
    ctx: &mut Context,
    image: &LocalImage,
    req: &CreateRequest,
) -> Result<ContainerRecord, Error> {
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    let image_config = ImageConfig::from_json(&image.config)?;
    let id = new_id()?;
    let name = req.name.clone().unwrap_or_else(|| generated_name(&id));
    let dir = ctx.container_dir(&id);
    let mut undo = Undo {
        dir: Some(dir.clone()),
        mounted: None,
        snapshot: None,
        snapshotter: &*ctx.snapshotter,
    };
    fs::create_dir_all(bundle_rootfs(&dir)).map_err(|source| super::Error::Io {
        action: "creating container directory",
        path: dir.clone(),
        source,
    })?;

    let key = snapshot_key(&id);
    let mut labels = Labels::new();
    labels.insert(CONTAINER_LABEL.into(), id.clone());
    labels.insert(snapshot::OWNER_LABEL.into(), snapshot::process_owner());
    let mounts = ctx
        .snapshotter
        .prepare(&key, image.top_chain_id.as_deref(), &labels)?;
    undo.snapshot = Some(key.clone());
    let rootfs = bundle_rootfs(&dir);
    mount::mount_all(&mounts, &rootfs)?;
    undo.mounted = Some(rootfs.clone());

    let mut options = req.options.clone();
    options.name = id.clone();
    if options.hostname.is_none() {
        options.hostname = Some(id[..12].to_string());
    }
    let mut spec = build_spec(&image_config, &options, &rootfs, &dir)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(cgroup_path(&id))));
    }
    let spec_path = dir.join("config.json");
    let spec_text =
        serde_json::to_string_pretty(&spec).map_err(|e| super::Error::Spec(e.to_string()))?;
    write_atomic(&spec_path, spec_text.as_bytes())?;

    let now = metadata::now_ns();
    let record = ContainerRecord {
        id: id.clone(),
        name,
        image: req.image_name.clone(),
        image_digest: Some(image.record.digest.to_string()),
        snapshotter: ctx.snapshotter.name().to_string(),
        snapshot_key: key.clone(),
        runtime: ctx.runtime.name().to_string(),
        spec: spec_text,
        command: spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default(),
        status: ContainerStatus::Created,
        pid: None,
        pid_start: None,
        supervisor_pid: None,
        supervisor_start: None,
        exit_code: None,
        oom_killed: false,
        created_ns: now,
        started_ns: None,
        finished_ns: None,
        labels: options.labels.clone(),
        auto_remove: req.auto_remove,
        cgroup_path: Some(cgroup_path(&id)),
        log_path: req.detach.then(|| log_path(&dir).display().to_string()),
    };
    ctx.db.write(|tx| {
        Ok(match metadata::insert_container(tx, &record)? {
            Ok(()) => {
                metadata::record_container_event(tx, &record, action::CREATE, &[])?;
                Ok(())
            }
            refused => refused,
        })
    })??;
    // The record holds the snapshot now; it must outlive this process.
    // (`update` merges: an empty value is what removes a label.)
    let clear = Labels::from([(snapshot::OWNER_LABEL.to_string(), String::new())]);
    ctx.snapshotter.update(&key, &clear)?;
    undo.disarm();
    Ok(record)
}

/// The writable snapshot's key.
pub fn snapshot_key(id: &str) -> String {
    format!("container-{id}")
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|source| {
            super::Error::Io {
                action: "writing",
                path: path.to_path_buf(),
                source,
            }
            .into()
        })
}

/// Reverses a half-done [`create`] when dropped armed.
struct Undo<'a> {
    dir: Option<PathBuf>,
    mounted: Option<PathBuf>,
    snapshot: Option<String>,
    snapshotter: &'a dyn Snapshotter,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.dir = None;
        self.mounted = None;
        self.snapshot = None;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(k) = self.snapshot.take() {
            let _ = self.snapshotter.remove(&k);
        }
        if let Some(d) = self.dir.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// How a launched container's stdio is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Foreground without a terminal: the container gets our stdout and
    /// stderr, and our stdin when `interactive` (else `/dev/null`).
    Inherit { interactive: bool },
    /// Foreground with a terminal (`-t`): a pty whose master we copy.
    Terminal { interactive: bool },
    /// Detached: output to the log, through pipes or a pty.
    Log { tty: bool },
}

/// A started container, and what to wait on.
pub struct Launched {
    pub pid: i32,
    pub output: attach::Output,
}

/// Waits for the launched container to end, forwarding the signals of
/// [`attach::FORWARDED`] (blocked into `signals` by the caller) and
/// recording its OOM kills as they happen. Returns how it ended and the
/// OOM kill count already recorded, which [`finish`] takes.
pub fn wait(
    ctx: &mut Context,
    rec: &ContainerRecord,
    launched: Launched,
    signals: &nix::sys::signalfd::SignalFd,
) -> (Result<attach::Exit, Error>, u64) {
    let mut oom = OomWatcher::new(&mut ctx.db, rec);
    let exit = attach::wait(
        launched.pid,
        signals,
        attach::FORWARDED,
        launched.output,
        &mut oom,
    );
    (exit.map_err(Error::from), oom.recorded())
}

/// Step 3: the runtime creates and starts the container; the record
/// becomes `running`, naming this process as the one waiting for it. On
/// failure the runtime's side is undone; the caller removes the rest with
/// [`discard`].
pub fn launch(ctx: &mut Context, rec: &mut ContainerRecord, io: Io) -> Result<Launched, Error> {
    use super::Stdio;
    use std::os::fd::{AsFd, OwnedFd};

    super::become_subreaper()?;
    let dir = ctx.container_dir(&rec.id);
    let os = |action: &'static str, source: std::io::Error| super::Error::Os { action, source };
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| os("duplicating stdio", e))
    };
    let null = || -> Result<OwnedFd, Error> {
        Ok(fs::File::open("/dev/null")
            .map_err(|e| os("opening /dev/null", e))?
            .into())
    };
    let pipe = || -> Result<(OwnedFd, OwnedFd), Error> {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| os("creating output pipe", e.into()).into())
    };
    // The console socket lives in a short private directory: socket paths
    // are limited to 108 bytes and store roots can be long.
    let mut console_dir = None;
    let mut pipes = None;
    let stdio = match io {
        Io::Inherit { interactive } => Stdio::Fds {
            stdin: if interactive {
                dup(std::io::stdin().as_fd())?
            } else {
                null()?
            },
            stdout: dup(std::io::stdout().as_fd())?,
            stderr: dup(std::io::stderr().as_fd())?,
        },
        Io::Log { tty: false } => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            pipes = Some((out_r, err_r));
            Stdio::Fds {
                stdin: null()?,
                stdout: out_w,
                stderr: err_w,
            }
        }
        Io::Terminal { .. } | Io::Log { tty: true } => {
            let d = ConsoleDir::create(&rec.id)?;
            let sock = d.0.join("sock");
            let listener = super::console::listen(&sock)?;
            console_dir = Some((d, listener));
            Stdio::Terminal {
                console_socket: sock,
            }
        }
    };
    let bundle = dir.clone();
    let pid = ctx.runtime.create(super::CreateOptions {
        id: &rec.id,
        bundle: &bundle,
        stdio,
    })?;
    let started = (|| -> Result<attach::Output, Error> {
        let output = match (io, console_dir, pipes) {
            (Io::Inherit { .. }, _, _) => attach::Output::Direct,
            (_, Some((_dir, listener)), _) => {
                let master = super::console::receive_master(&listener)?;
                match io {
                    Io::Terminal { interactive } => {
                        attach::copy_window_size(master.as_fd());
                        attach::Output::Terminal {
                            master,
                            stdin: interactive,
                        }
                    }
                    _ => attach::Output::TerminalToLog {
                        master,
                        log: logs::LogWriter::open(&log_path(&dir))?,
                    },
                }
            }
            (_, None, Some((stdout, stderr))) => attach::Output::Pipes {
                stdout,
                stderr,
                log: logs::LogWriter::open(&log_path(&dir))?,
            },
            (_, None, None) => unreachable!("every Io mode sets up its descriptors"),
        };
        Ok(output)
    })();
    let output = match started {
        Ok(o) => o,
        Err(e) => {
            let _ = ctx.runtime.delete(&rec.id, true);
            return Err(e);
        }
    };
    let me = std::process::id() as i32;
    rec.pid = Some(pid);
    let pid_start = metadata::process_start_time(pid).ok_or_else(|| super::Error::Failed {
        runtime: ctx.runtime.name().to_string(),
        action: "creating",
        id: rec.id.clone(),
        message: format!("its init process {pid} is already gone"),
    });
    let pid_start = match pid_start {
        Ok(s) => s,
        Err(e) => {
            let _ = ctx.runtime.delete(&rec.id, true);
            return Err(e.into());
        }
    };
    rec.pid_start = Some(pid_start);
    rec.supervisor_pid = Some(me);
    rec.supervisor_start = metadata::process_start_time(me);
    let r = rec.clone();
    ctx.db.write(|tx| {
        metadata::set_container_process(tx, &r.id, pid, pid_start, Some(me), r.supervisor_start)
    })?;
    Ok(Launched { pid, output })
}

/// Lets a launched container run its command. Separate from [`launch`] so
/// the caller can block signals in between: the init, already forked, does
/// not inherit the mask.
///
/// The record says `running` only from here on: until the runtime started
/// the command, a signal to the container must not pass for its end.
pub fn start(ctx: &mut Context, rec: &mut ContainerRecord) -> Result<(), Error> {
    ctx.runtime.start(&rec.id).inspect_err(|_| {
        let _ = ctx.runtime.delete(&rec.id, true);
    })?;
    let now = metadata::now_ns();
    let r = rec.clone();
    ctx.db.write(|tx| {
        if metadata::set_container_started(tx, &r.id, now)? {
            metadata::record_container_event(tx, &r, action::START, &[])?;
        }
        Ok(())
    })?;
    rec.status = ContainerStatus::Running;
    rec.started_ns = Some(now);
    Ok(())
}

/// Step 4: records how the container ended and releases what it held.
/// `oom_recorded` is the OOM kill count whose `oom` events the waiter
/// already recorded ([`OomWatcher::recorded`]); kills beyond it get their
/// event here, in the transaction that records the stop, so none is missed
/// and none recorded twice. Returns whether the OOM killer struck.
pub fn finish(
    ctx: &mut Context,
    rec: &ContainerRecord,
    exit: Option<attach::Exit>,
    oom_recorded: u64,
) -> Result<bool, Error> {
    let kills = rec
        .cgroup_path
        .as_deref()
        .and_then(|p| {
            let h = crate::cgroups::Hierarchy::detect().ok()?;
            crate::cgroups::Cgroup::open(&h, p).oom_kills().ok()
        })
        .unwrap_or(0);
    let oom = kills > 0;
    let code = exit.map(attach::Exit::code);
    let now = metadata::now_ns();
    ctx.db.write(|tx| {
        if !metadata::set_container_stopped(tx, &rec.id, code, oom, now)? {
            return Ok(());
        }
        if kills > oom_recorded {
            metadata::record_container_event(
                tx,
                rec,
                action::OOM,
                &[("oomKills", kills.to_string())],
            )?;
        }
        let mut attrs = vec![("oomKilled", oom.to_string())];
        if let Some(c) = code {
            attrs.push(("exitCode", c.to_string()));
        }
        if let Some(attach::Exit::Signal(s)) = exit {
            attrs.push(("signal", signal_name(s)));
        }
        metadata::record_container_event(tx, rec, action::DIE, &attrs)?;
        Ok(())
    })?;
    if let Err(e) = ctx.runtime.delete(&rec.id, true) {
        eprintln!("berth: container {}: {e}", rec.id);
    }
    let _ = nix::mount::umount2(
        &bundle_rootfs(&ctx.container_dir(&rec.id)),
        nix::mount::MntFlags::MNT_DETACH,
    );
    if rec.auto_remove {
        discard(ctx, rec)?;
    }
    Ok(oom)
}

/// Removes a container that does not run: its root filesystem mount (if
/// this process has it), writable snapshot, record and directory.
pub fn discard(ctx: &mut Context, rec: &ContainerRecord) -> Result<(), Error> {
    let dir = ctx.container_dir(&rec.id);
    let _ = nix::mount::umount2(&bundle_rootfs(&dir), nix::mount::MntFlags::MNT_DETACH);
    match ctx.snapshotter.remove(&rec.snapshot_key) {
        Ok(()) => {}
        Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    ctx.db.write(|tx| {
        if metadata::delete_container(tx, &rec.id)? {
            metadata::record_container_event(tx, rec, action::REMOVE, &[])?;
        }
        Ok(())
    })?;
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(super::Error::Io {
            action: "removing container directory",
            path: dir,
            source,
        }
        .into()),
    }
}

/// `SIGKILL` for 9; the number itself for signals nix does not name.
pub fn signal_name(signo: i32) -> String {
    nix::sys::signal::Signal::try_from(signo)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| signo.to_string())
}

/// Records that `signal` was sent to container `rec` (berth-kill, berth-rm
/// -f): a transaction of its own, since no record changes.
pub fn record_kill(db: &mut Db, rec: &ContainerRecord, signal: i32) -> Result<(), Error> {
    db.write(|tx| {
        metadata::record_container_event(tx, rec, action::KILL, &[("signal", signal_name(signal))])
    })?;
    Ok(())
}

/// The wait loop's [`attach::Watcher`] that records an `oom` event each
/// time the container's OOM kill count grows while it runs (an OOM kill
/// of one process need not end the container). Best effort: a group
/// without a memory controller has nothing to watch, and [`finish`] still
/// compares the count at the end.
pub struct OomWatcher<'a> {
    watch: Option<crate::cgroups::FileWatch>,
    recorded: u64,
    db: &'a mut Db,
    rec: &'a ContainerRecord,
}

impl<'a> OomWatcher<'a> {
    /// Starts watching `rec`'s cgroup, which its runtime has created.
    pub fn new(db: &'a mut Db, rec: &'a ContainerRecord) -> OomWatcher<'a> {
        let watch = rec.cgroup_path.as_deref().and_then(|p| {
            let h = crate::cgroups::Hierarchy::detect().ok()?;
            crate::cgroups::Cgroup::open(&h, p).watch_oom().ok()
        });
        // The group is new: kills already counted happened in it, and no
        // event names them yet.
        let mut w = OomWatcher {
            watch,
            recorded: 0,
            db,
            rec,
        };
        w.record_new();
        w
    }

    /// The OOM kill count up to which `oom` events are recorded.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    fn record_new(&mut self) {
        let Some(kills) = self.watch.as_ref().map(|w| w.value()) else {
            return;
        };
        if kills <= self.recorded {
            return;
        }
        let rec = self.rec;
        let written = self.db.write(|tx| {
            metadata::record_container_event(
                tx,
                rec,
                action::OOM,
                &[("oomKills", kills.to_string())],
            )
        });
        match written {
            Ok(_) => self.recorded = kills,
            Err(e) => eprintln!("berth: container {}: recording an OOM kill: {e}", rec.id),
        }
    }
}

impl attach::Watcher for OomWatcher<'_> {
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.watch.as_ref().map(|w| w.fd())
    }

    fn recheck(&self) -> Option<std::time::Duration> {
        self.watch.as_ref()?.recheck()
    }

    fn on_ready(&mut self) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        match w.check() {
            Ok(Some(_)) => self.record_new(),
            Ok(None) => {}
            // The group is gone: nothing more to see until finish looks.
            Err(_) => self.watch = None,
        }
    }
}

/// A private directory for the console socket, removed on drop. Socket
/// paths are limited to 108 bytes and store roots can be long, so it lives
/// in the temp dir.
struct ConsoleDir(PathBuf);

impl ConsoleDir {
    fn create(id: &str) -> Result<ConsoleDir, Error> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "berth-console-{}-{}",
            &id[..12],
            std::process::id()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| super::Error::Io {
                action: "creating console socket directory",
                path: path.clone(),
                source,
            })?;
        Ok(ConsoleDir(path))
    }
}

impl Drop for ConsoleDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Gives every signal our caller ignored back its default action, so a
/// container does not inherit dispositions from whatever shell or service
/// started `berth-run` (ignored signals survive `execve`). SIGPIPE stays
/// ignored here, for our own writes; runtimes reset it in the container.
pub fn reset_inherited_signals() {
    crate::runtime::reset_ignored_signals(&[libc::SIGPIPE]);
}
