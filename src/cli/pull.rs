//! `berth-pull`: fetch images from OCI and Docker v2 registries.

use clap::{CommandFactory, Parser};

use super::progress::PullProgress;
use super::registry::RegistryArgs;
use super::{exit, Format, GlobalArgs, ProgressMode};
use crate::content::Store;
use crate::distribution::{Client, Reference};
use crate::image::{self, Platform, PlatformChoice, PullOptions, PullResult};
use crate::metadata::Db;
use crate::snapshot::Snapshotter;
use crate::Error;

const AFTER_HELP: &str = "Examples:
  berth-pull busybox                         docker.io/library/busybox:latest
  berth-pull 127.0.0.1:5000/tiny:1.0         plain HTTP is automatic for loopback
  berth-pull --platform linux/arm64 alpine   one platform of a multi-platform image
  berth-pull -q --format json IMAGE | jq .   machine-readable result on stdout

Progress goes to stderr: bars on a terminal, one line per event otherwise.";

/// Pull images from an OCI or Docker v2 registry into the berth store.
///
/// Every blob is verified against its digest as it is stored; an
/// interrupted pull resumes where it stopped; blobs already in the store
/// are not downloaded again. Layers are unpacked into committed snapshots
/// named by chain ID while they download, so images sharing a base share
/// its snapshots. The image record is written only once everything it
/// needs is stored.
#[derive(Debug, Parser)]
#[command(name = "berth-pull", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct PullArgs {
    /// Images to pull: NAME[:TAG][@DIGEST], e.g. busybox, host:5000/a/b:1.0
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Pull the image for this platform (os/arch[/variant]) instead of the host's
    #[arg(long, value_name = "PLATFORM", conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image
    #[arg(long)]
    pub all_platforms: bool,
    /// How many blobs to download at once [default: 3, or max_concurrent_downloads in the config]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_downloads: Option<u16>,
    /// Unpack the layers into this snapshotter [default: default_snapshotter from the config, overlayfs; native where overlay mounts do not work]
    #[arg(long, value_name = "NAME", conflicts_with = "no_unpack")]
    pub snapshotter: Option<String>,
    /// Only fetch the blobs into the content store; do not unpack
    #[arg(long)]
    pub no_unpack: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print only the pulled images' digests on stdout, and no progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format for the result on stdout
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    PullArgs::command()
}

/// Runs berth-pull and returns its exit code.
pub fn main() -> i32 {
    let args = PullArgs::parse();
    let prog = "berth-pull";
    let mut results = Vec::new();
    let mut code = exit::SUCCESS;
    // Every reference is checked before the store is touched, so a typo
    // leaves no trace (not even a freshly created root).
    let mut references = Vec::new();
    for image in &args.images {
        match image.parse::<Reference>() {
            Ok(r) => references.push(r),
            Err(e) => return super::report(prog, &e.into()),
        }
    }
    match Session::open(&args) {
        Err(e) => return super::report(prog, &e),
        Ok(mut session) => {
            for reference in &references {
                match session.pull(reference, prog) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        let c = super::report(prog, &e);
                        if code == exit::SUCCESS {
                            code = c;
                        }
                    }
                }
            }
        }
    }
    print_results(&args, &results);
    code
}

fn print_results(args: &PullArgs, results: &[PullResult]) {
    if args.format == Format::Json {
        match serde_json::to_string_pretty(results) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("berth-pull: error: encoding result: {e}"),
        }
        return;
    }
    for r in results {
        if args.quiet {
            println!("{}", r.digest);
        } else {
            let unpacked = match &r.unpacked {
                Some(x) => format!(
                    "; unpacked {} new layer(s) into {}",
                    x.layers_unpacked, x.snapshotter
                ),
                None => String::new(),
            };
            println!(
                "{}: {} ({}; fetched {}{unpacked})",
                r.name,
                r.digest,
                r.platforms.join(", "),
                super::human_size(r.bytes_fetched)
            );
        }
    }
}

struct Session<'a> {
    args: &'a PullArgs,
    client: Client,
    store: Store,
    db: Db,
    opts: PullOptions,
    snapshotter: Option<Box<dyn Snapshotter>>,
    mode: ProgressMode,
}

impl<'a> Session<'a> {
    fn open(args: &'a PullArgs) -> Result<Session<'a>, Error> {
        let (config, root) = args.global.load()?;
        let platform = match (&args.platform, args.all_platforms) {
            (_, true) => PlatformChoice::All,
            (Some(p), false) => PlatformChoice::Only(p.parse::<Platform>().map_err(Error::Usage)?),
            (None, false) => PlatformChoice::Host,
        };
        let client = args.registry.client(&config, args.global.debug_enabled())?;
        // The content store creates the root (owner-only) before the database opens in it.
        let store = Store::open(&root)?;
        let db = Db::open(&root)?;
        let snapshotter = if args.no_unpack {
            None
        } else {
            Some(super::open_snapshotter(
                "berth-pull",
                args.snapshotter.as_deref(),
                &config,
                &root,
                args.global.debug_enabled(),
            )?)
        };
        let max = args
            .max_concurrent_downloads
            .map(usize::from)
            .unwrap_or(config.max_concurrent_downloads as usize);
        Ok(Session {
            args,
            client,
            store,
            db,
            opts: PullOptions {
                platform,
                max_concurrent_downloads: max,
            },
            snapshotter,
            mode: ProgressMode::detect(args.quiet),
        })
    }

    fn pull(&mut self, reference: &Reference, prog: &str) -> Result<PullResult, Error> {
        let progress = PullProgress::new(prog, self.mode);
        let result = image::pull(
            &self.client,
            &self.store,
            &mut self.db,
            reference,
            &self.opts,
            self.snapshotter.as_deref(),
            &progress,
        )?;
        if self.mode == ProgressMode::Lines && !self.args.quiet {
            eprintln!(
                "{prog}: {}: pulled {} ({} fetched)",
                result.name,
                result.digest,
                super::human_size(result.bytes_fetched)
            );
        }
        Ok(result)
    }
}
