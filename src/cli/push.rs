//! `berth-push`: upload a stored image to an OCI or Docker v2 registry.

use clap::{CommandFactory, Parser};

use super::progress::BlobBars;
use super::registry::RegistryArgs;
use super::{exit, human_size, Format, GlobalArgs, ProgressMode};
use crate::content::{Digest, Store};
use crate::distribution::{BlobAction, Reference, DEFAULT_CHUNK_SIZE};
use crate::image::{self, BlobKind, PushObserver, PushOptions, PushResult};
use crate::metadata::Db;
use crate::Error;

/// Environment variable: blobs larger than this many bytes are uploaded in
/// chunks of this size (default 16 MiB). A tuning and test knob.
pub const CHUNK_SIZE_ENV: &str = "BERTH_PUSH_CHUNK_SIZE";

const AFTER_HELP: &str = "Examples:
  berth-push 127.0.0.1:5000/tiny:1.0                  push under the image's own name
  berth-push busybox 127.0.0.1:5000/mirror/busybox:1  push to another registry or repository
  berth-push -q IMAGE                                 print only the pushed digest

Blobs the destination already has are skipped; blobs of another repository of
the same registry are mounted instead of uploaded. Blobs larger than 16 MiB go
up in chunks of that size (BERTH_PUSH_CHUNK_SIZE=BYTES changes it).
Progress goes to stderr: bars on a terminal, one line per event otherwise.";

/// Push an image from the berth store to an OCI or Docker v2 registry.
///
/// Every blob (configs and layers) is checked to be in the store first;
/// then the blobs are sent concurrently, each skipped when the registry has
/// it, mounted when another repository of the same registry has it, or
/// uploaded. The manifests follow (an index's manifests by digest, then the
/// index), with their exact stored bytes, so the pushed digest is the
/// stored one.
#[derive(Debug, Parser)]
#[command(name = "berth-push", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct PushArgs {
    /// The stored image to push: NAME[:TAG][@DIGEST] as berth-pull recorded it
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Where to push it [default: IMAGE]: REGISTRY/REPOSITORY[:TAG]
    #[arg(value_name = "DEST")]
    pub dest: Option<String>,
    /// How many blobs to upload at once
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_uploads: u16,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print only the pushed digest on stdout, and no progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format for the result on stdout
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    PushArgs::command()
}

/// Runs berth-push and returns its exit code.
pub fn main() -> i32 {
    let args = PushArgs::parse();
    let prog = "berth-push";
    match run(&args, prog) {
        Ok(result) => {
            print_result(&args, &result);
            exit::SUCCESS
        }
        Err(e) => super::report(prog, &e),
    }
}

fn run(args: &PushArgs, prog: &str) -> Result<PushResult, Error> {
    // References and flags are checked before the store is opened.
    let source: Reference = args.image.parse()?;
    let dest: Reference = args.dest.as_deref().unwrap_or(&args.image).parse()?;
    let chunk_size = chunk_size()?;
    let (config, root) = args.global.load()?;
    let client = args.registry.client(&config, args.global.debug_enabled())?;
    if !root.join("meta.db").exists() {
        return Err(image::Error::Invalid {
            reference: source.to_string(),
            reason: format!("no such image: the store {} is empty", root.display()),
            kind: crate::ErrorKind::NotFound,
        }
        .into());
    }
    let store = Store::open(&root)?;
    let mut db = Db::open(&root)?;
    let mode = ProgressMode::detect(args.quiet);
    let progress = PushProgress(BlobBars::new(prog, mode));
    let opts = PushOptions {
        max_concurrent_uploads: usize::from(args.max_concurrent_uploads),
        chunk_size,
    };
    let result = image::push(&client, &store, &db, &source, &dest, &opts, &progress)?;
    // The push changed nothing here: its event is a transaction of its
    // own, and failing to write it does not undo what the registry has.
    let attrs = crate::metadata::Labels::from([
        ("digest".to_string(), result.digest.to_string()),
        ("destination".to_string(), result.name.clone()),
    ]);
    if let Err(e) = db.record_event(
        crate::metadata::EventType::Image,
        crate::metadata::events::action::PUSH,
        &crate::image::stored_name(&source),
        &attrs,
    ) {
        eprintln!("{prog}: warning: recording the push event: {e}");
    }
    if mode == ProgressMode::Lines {
        let sent: u64 = result
            .blobs
            .iter()
            .filter(|b| b.action == BlobAction::Uploaded)
            .map(|b| b.size)
            .sum();
        eprintln!(
            "{prog}: {}: pushed {} ({} uploaded)",
            result.name,
            result.digest,
            human_size(sent)
        );
    }
    Ok(result)
}

fn chunk_size() -> Result<u64, Error> {
    match std::env::var(CHUNK_SIZE_ENV) {
        Err(_) => Ok(DEFAULT_CHUNK_SIZE),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::Usage(format!(
                "{CHUNK_SIZE_ENV}={text:?}: expected a positive number of bytes"
            ))),
        },
    }
}

fn print_result(args: &PushArgs, r: &PushResult) {
    if args.format == Format::Json {
        match serde_json::to_string_pretty(r) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("berth-push: error: encoding result: {e}"),
        }
    } else if args.quiet {
        println!("{}", r.digest);
    } else {
        let count = |a: BlobAction| r.blobs.iter().filter(|b| b.action == a).count();
        println!(
            "{}: {} ({} blob(s) uploaded, {} already there, {} mounted)",
            r.name,
            r.digest,
            count(BlobAction::Uploaded),
            count(BlobAction::Exists),
            count(BlobAction::Mounted)
        );
    }
}

/// Push progress on stderr: a bar per blob on a terminal, a line per
/// finished blob otherwise, nothing with `-q`.
struct PushProgress(BlobBars);

impl PushObserver for PushProgress {
    fn blob_started(&self, kind: BlobKind, digest: &Digest, size: u64) {
        self.0.start(kind, digest, size, 0);
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.0.bar(digest) {
            bar.inc(bytes);
        }
    }

    fn blob_finished(&self, kind: BlobKind, digest: &Digest, size: u64, action: BlobAction) {
        let what = match action {
            BlobAction::Uploaded => format!("uploaded {}", human_size(size)),
            BlobAction::Exists => "already in the registry".to_string(),
            BlobAction::Mounted => "mounted from the source repository".to_string(),
        };
        match self.0.bar(digest) {
            Some(bar) => {
                bar.set_position(size);
                bar.finish_with_message(what);
            }
            None => self
                .0
                .line(format_args!("{kind} {}: {what}", digest.short())),
        }
    }

    fn manifest_pushed(&self, kind: BlobKind, digest: &Digest, reference: &str) {
        self.0.line(format_args!(
            "{kind} {}: pushed as {reference}",
            digest.short()
        ));
    }
}
