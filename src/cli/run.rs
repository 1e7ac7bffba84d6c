//! `berth-run`: create and run a container from an image.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

use super::progress::PullProgress;
use super::{GlobalArgs, ProgressMode};
use crate::content::Store;
use crate::distribution::Reference;
use crate::image::{self, LocalImage, Platform, PlatformChoice, PullOptions};
use crate::metadata::Db;
use crate::runtime::container::{self, attach, supervise, Context, CreateRequest, Io};
use crate::runtime::{self, Network, RunOptions};
use crate::Error;

const AFTER_HELP: &str = "Examples:
  berth-run --rm IMAGE echo hello           run a command, remove the container after
  berth-run -it --rm IMAGE sh               an interactive shell
  berth-run -d --name web IMAGE httpd -f    a detached service; then berth-logs web, berth-kill web
  berth-run --memory 64m --cpus 0.5 --pids-limit 100 IMAGE ...    limits

Exit status:
  125  berth-run itself failed (bad flag, image not found, runtime error)
  126  the container's command cannot be executed
  127  the container's command was not found
  128+N  the container was killed by signal N
  otherwise, the container's own exit status (0 with -d once it started)";

/// When to pull the image before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not in the store (or not unpacked for the snapshotter)
    Missing,
    /// Always pull (nothing is downloaded for blobs already stored)
    Always,
    /// Never pull: fail when the image is not in the store
    Never,
}

/// Whose network the container uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// A network namespace of its own with only loopback, up
    None,
    /// The host's network
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunFormat {
    Table,
    Json,
}

/// Run a command in a new container.
///
/// berth-run prepares a writable snapshot on the image's layers, writes an
/// OCI runtime spec, and runs it with the chosen runtime: `berth` (built
/// in) or an OCI runtime CLI such as runc. In the foreground it attaches
/// the container's stdio, forwards signals, and exits with the container's
/// status. With -d it leaves a small supervisor process per container that
/// logs its output (see berth-logs) and records its exit.
#[derive(Debug, Parser)]
#[command(
    name = "berth-run",
    version,
    trailing_var_arg = true,
    after_help = AFTER_HELP,
)]
pub struct RunArgs {
    /// Image to run: NAME[:TAG][@DIGEST]
    #[arg(value_name = "IMAGE", required_unless_present = "supervise")]
    pub image: Option<String>,
    /// Command and arguments (default: the image's entrypoint and cmd)
    #[arg(value_name = "COMMAND", allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Name the container (unique in the store)
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the container id
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container and its writable snapshot when it exits
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open and connect it to the container
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal for the container
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable: KEY=VALUE, or KEY to pass ours
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: NAME|UID[:GROUP|GID]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container hostname [default: the first 12 characters of its id]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Bind-mount a host path: HOST:CONTAINER[:ro|rw]
    #[arg(short, long, value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS]
    #[arg(long, value_name = "PATH[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Replace the image's entrypoint ("" clears it)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Memory limit: bytes or with a b, k, m, g suffix (at least 6m)
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. 0.5
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes (0 or -1: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Add a Linux capability (e.g. NET_ADMIN, or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (e.g. CHOWN, or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Give the container every capability and device access, no masked paths
    #[arg(long)]
    pub privileged: bool,
    /// Network: none (own namespace, loopback only) or host
    #[arg(long, alias = "net", value_enum, default_value = "none")]
    pub network: NetworkArg,
    /// Resource limit: NAME=SOFT[:HARD], e.g. nofile=1024:2048
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Set a label on the container: KEY=VALUE
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Runtime: berth (built in), runc, crun, or a path to an OCI runtime [default: default_runtime from the config, berth]
    #[arg(long)]
    pub runtime: Option<String>,
    /// Snapshotter for the container's root [default: default_snapshotter from the config]
    #[arg(long, value_name = "NAME")]
    pub snapshotter: Option<String>,
    /// When to pull the image
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: PullPolicy,
    /// Pull and run the image for this platform (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    /// Speak plain HTTP to the registry when pulling
    #[arg(long)]
    pub plain_http: bool,
    /// Do not show pull progress
    #[arg(short, long)]
    pub quiet: bool,
    /// With -d: how to print the started container (json: id and name)
    #[arg(long, value_enum, default_value = "table")]
    pub format: RunFormat,
    /// Internal: run as the supervisor of the created container ID
    #[arg(long, hide = true, value_name = "ID")]
    pub supervise: Option<String>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    RunArgs::command()
}

/// berth-run's exit code for its own failures: 127 and 126 for a command
/// that is missing or not executable, 125 for everything else, so they
/// never pass for the container's own status.
pub fn exit_code_for(err: &Error) -> i32 {
    match err {
        Error::Runtime(runtime::Error::CommandNotFound { .. }) => 127,
        Error::Runtime(runtime::Error::CommandNotExecutable { .. }) => 126,
        _ => 125,
    }
}

/// Runs berth-run and returns its exit code.
pub fn main() -> i32 {
    let args = match RunArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    container::reset_inherited_signals();
    let result = match &args.supervise {
        Some(id) => supervise_main(&args, id),
        None => run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-run: error: {}", super::message(&e));
            exit_code_for(&e)
        }
    }
}

fn labels(args: &RunArgs) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for l in &args.label {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            None if !l.is_empty() => {
                out.insert(l.clone(), String::new());
            }
            _ => {
                return Err(runtime::Error::InvalidFlag {
                    flag: "--label",
                    value: l.clone(),
                    reason: "expected KEY=VALUE".into(),
                }
                .into())
            }
        }
    }
    Ok(out)
}

fn run_options(args: &RunArgs) -> Result<RunOptions, Error> {
    Ok(RunOptions {
        name: String::new(),
        args: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env: args.env.clone(),
        env_files: args.env_file.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        volumes: args.volume.clone(),
        tmpfs: args.tmpfs.clone(),
        read_only: args.read_only,
        memory: args.memory.clone(),
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        privileged: args.privileged,
        network: match args.network {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
        },
        ulimits: args.ulimit.clone(),
        tty: args.tty,
        labels: labels(args)?,
    })
}

/// Opens the store and the plugins a container needs.
fn open_context(
    args: &RunArgs,
    snapshotter: Option<&str>,
    runtime_name: Option<&str>,
) -> Result<(Context, Store, crate::config::Config), Error> {
    let (config, root) = args.global.load()?;
    let store = Store::open(&root)?;
    let db = Db::open(&root)?;
    let snapshotter = super::open_snapshotter(
        "berth-run",
        snapshotter.or(args.snapshotter.as_deref()),
        &config,
        &root,
        args.global.debug_enabled(),
    )?;
    let name = runtime_name
        .or(args.runtime.as_deref())
        .unwrap_or(&config.default_runtime)
        .to_string();
    let runtime = open_runtime(&name, &config, &root)?;
    Ok((
        Context {
            root,
            db,
            snapshotter,
            runtime,
        },
        store,
        config,
    ))
}

/// The runtime `name`, refused with its probe's reason when it is a
/// compiled-in plugin that cannot work on this host.
fn open_runtime(
    name: &str,
    config: &crate::config::Config,
    root: &std::path::Path,
) -> Result<Box<dyn runtime::Runtime>, Error> {
    use crate::plugin::{self, PluginKind};
    if let Some(spec) = plugin::find(PluginKind::Runtime, name) {
        if let Some(reason) = spec.probe(root, config).error {
            return Err(runtime::Error::Unsupported {
                runtime: name.to_string(),
                message: reason,
            }
            .into());
        }
    }
    Ok(runtime::open(root, name)?)
}

fn run(args: &RunArgs) -> Result<i32, Error> {
    let image_arg = args
        .image
        .as_deref()
        .ok_or_else(|| Error::Usage("an IMAGE is required".into()))?;
    let reference: Reference = image_arg.parse()?;
    let options = run_options(args)?;
    if let Some(n) = &args.name {
        container::check_name(n)?;
    }
    if args.detach && args.interactive {
        return Err(Error::Usage(
            "-d and -i do not go together: a detached container has no stdin to attach".into(),
        ));
    }
    let platform = match &args.platform {
        Some(p) => p.parse::<Platform>().map_err(Error::Usage)?,
        None => Platform::host(),
    };
    // Before any thread exists (pulls start some): unshare needs a
    // single-threaded process.
    container::private_mounts()?;
    let (mut ctx, store, config) = open_context(args, None, None)?;
    let image = find_or_pull(args, &mut ctx, &store, &config, &reference, &platform)?;
    let req = CreateRequest {
        image_name: image.record.name.clone(),
        options,
        name: args.name.clone(),
        auto_remove: args.rm,
        detach: args.detach,
    };
    let mut rec = container::create(&mut ctx, &image, &req)?;

    if args.detach {
        let exe = std::env::current_exe().map_err(|source| runtime::Error::Os {
            action: "finding berth-run's own executable",
            source,
        })?;
        let mut sargs = vec![
            "--supervise".to_string(),
            rec.id.clone(),
            "--root".to_string(),
            ctx.root.display().to_string(),
        ];
        if args.tty {
            sargs.push("--tty".into());
        }
        if let Some(c) = &args.global.store.config {
            sargs.push("--config".into());
            sargs.push(c.display().to_string());
        }
        return match supervise::spawn(&exe, &sargs)? {
            supervise::Ready::Started => {
                match args.format {
                    RunFormat::Json => {
                        println!("{}", serde_json::json!({ "id": rec.id, "name": rec.name }))
                    }
                    RunFormat::Table => println!("{}", rec.id),
                }
                Ok(0)
            }
            supervise::Ready::Failed { code, message } => {
                eprintln!("berth-run: error: {message}");
                Ok(code)
            }
        };
    }

    let io = if args.tty {
        Io::Terminal {
            interactive: args.interactive,
        }
    } else {
        Io::Inherit {
            interactive: args.interactive,
        }
    };
    let launched = match container::launch(&mut ctx, &mut rec, io) {
        Ok(l) => l,
        Err(e) => {
            let _ = container::discard(&mut ctx, &rec);
            return Err(e);
        }
    };
    let signals = match attach::block_signals(attach::FORWARDED)
        .map_err(Error::from)
        .and_then(|s| container::start(&mut ctx, &mut rec).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = container::discard(&mut ctx, &rec);
            return Err(e);
        }
    };
    let raw = (args.tty && args.interactive && std::io::stdin().is_terminal())
        .then(attach::RawMode::enter)
        .flatten();
    let (exit, oom_recorded) = container::wait(&mut ctx, &rec, launched, &signals);
    drop(raw);
    let exit = match exit {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("berth-run: {e}");
            None
        }
    };
    let oom = container::finish(&mut ctx, &rec, exit, oom_recorded)?;
    if oom && !args.quiet {
        eprintln!(
            "berth-run: container {} was killed: out of memory",
            rec.name
        );
    }
    Ok(exit.map(attach::Exit::code).unwrap_or(125))
}

/// The image from the store, pulled first when the policy says so.
fn find_or_pull(
    args: &RunArgs,
    ctx: &mut Context,
    store: &Store,
    config: &crate::config::Config,
    reference: &Reference,
    platform: &Platform,
) -> Result<LocalImage, Error> {
    let unpacked = |img: &LocalImage, ctx: &Context| match &img.top_chain_id {
        None => true,
        Some(chain) => ctx.snapshotter.stat(chain).is_ok(),
    };
    if args.pull != PullPolicy::Always {
        if let Some(img) = image::resolve_local(store, &ctx.db, reference, platform)? {
            if unpacked(&img, ctx) {
                return Ok(img);
            }
        }
        if args.pull == PullPolicy::Never {
            return Err(Error::Image(image::Error::Invalid {
                reference: reference.to_string(),
                reason: format!(
                    "not in the store (unpacked for {}), and --pull never: run berth-pull first",
                    ctx.snapshotter.name()
                ),
                kind: crate::ErrorKind::NotFound,
            }));
        }
    }
    let client = super::registry::registry_client(
        config,
        args.plain_http,
        false,
        None,
        args.global.debug_enabled(),
    )?;
    let mode = ProgressMode::detect(args.quiet);
    let progress = PullProgress::new("berth-run", mode);
    image::pull(
        &client,
        store,
        &mut ctx.db,
        reference,
        &PullOptions {
            platform: PlatformChoice::Only(platform.clone()),
            max_concurrent_downloads: config.max_concurrent_downloads as usize,
        },
        Some(&*ctx.snapshotter),
        &progress,
    )?;
    image::resolve_local(store, &ctx.db, reference, platform)?.ok_or_else(|| {
        Error::Image(image::Error::Invalid {
            reference: reference.to_string(),
            reason: "pulled, but not found in the store afterwards".into(),
            kind: crate::ErrorKind::Internal,
        })
    })
}

/// The hidden supervisor mode (see `runtime::container::supervise`).
fn supervise_main(args: &RunArgs, id: &str) -> Result<i32, Error> {
    let (config, root) = args.global.load()?;
    let db = Db::open(&root)?;
    let rec = db.container(id)?;
    drop(db);
    drop(config);
    let (mut ctx, _store, _config) =
        open_context(args, Some(&rec.snapshotter), Some(&rec.runtime))?;
    let exit = supervise::run(&mut ctx, rec, args.tty, exit_code_for)?;
    Ok(exit.map(attach::Exit::code).unwrap_or(125))
}
