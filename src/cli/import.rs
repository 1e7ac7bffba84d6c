//! `berth-import`: read an OCI layout or a docker archive into the store.

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use super::{exit, Format, GlobalArgs, ProgressMode};
use crate::content::Store;
use crate::distribution::Reference;
use crate::image::archive::{self, ImportOptions, ImportResult, Input};
use crate::metadata::Db;
use crate::Error;

const AFTER_HELP: &str = "Examples:
  berth-import busybox.tar                 an OCI layout tar or a docker save tarball
  berth-import layout/                     an OCI layout directory
  berth-export IMAGE -o - | berth-import - from stdin, read once
  berth-import --name myimg:1 image.tar    name (or rename) the one image in the archive

Names come from --name, else the io.containerd.image.name annotation, a
full reference in org.opencontainers.image.ref.name, or manifest.json's
RepoTags; an image with none gets import-<12 hex of its digest>:<tag or latest>.";

/// Import images from an OCI image layout (directory or tar) or a docker
/// save tarball into the berth store.
///
/// Every blob is verified against its digest and size while it is stored;
/// unsafe entry names, devices, links leaving the archive, digest
/// mismatches, a truncated archive or a blob the images need but the
/// archive lacks fail the import and leave the store as it was: blobs
/// become visible and records are written only once everything checked.
/// Then the layers are unpacked into snapshots, as berth-pull does.
#[derive(Debug, Parser)]
#[command(name = "berth-import", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct ImportArgs {
    /// The archive: a tar file (gzip-compressed or not), a layout directory, or - for stdin
    #[arg(value_name = "FILE|DIR|-")]
    pub input: String,
    /// Name for the image (only when the archive holds exactly one); overrides the archive's names
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Unpack the layers into this snapshotter [default: default_snapshotter from the config, overlayfs; native where overlay mounts do not work]
    #[arg(long, value_name = "NAME", conflicts_with = "no_unpack")]
    pub snapshotter: Option<String>,
    /// Only store the blobs; do not unpack
    #[arg(long)]
    pub no_unpack: bool,
    /// Print only the imported images' digests on stdout, and no progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format for the result on stdout
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    ImportArgs::command()
}

/// Runs berth-import and returns its exit code.
pub fn main() -> i32 {
    let args = ImportArgs::parse();
    match run(&args) {
        Ok(result) => {
            print_result(&args, &result);
            exit::SUCCESS
        }
        Err(e) => super::report("berth-import", &e),
    }
}

fn run(args: &ImportArgs) -> Result<ImportResult, Error> {
    let name = args
        .name
        .as_deref()
        .map(str::parse::<Reference>)
        .transpose()?;
    let input = if args.input == "-" {
        Input::Stdin
    } else {
        Input::Path(PathBuf::from(&args.input))
    };
    let (config, root) = args.global.load()?;
    let store = Store::open(&root)?;
    let mut db = Db::open(&root)?;
    let snapshotter = if args.no_unpack {
        None
    } else {
        Some(super::open_snapshotter(
            "berth-import",
            args.snapshotter.as_deref(),
            &config,
            &root,
            args.global.debug_enabled(),
        )?)
    };
    let mode = ProgressMode::detect(args.quiet);
    let progress = |line: &str| {
        if mode != ProgressMode::Silent {
            eprintln!("berth-import: {line}");
        }
    };
    Ok(archive::import(
        &store,
        &mut db,
        &input,
        &ImportOptions { name },
        snapshotter.as_deref(),
        &progress,
    )?)
}

fn print_result(args: &ImportArgs, result: &ImportResult) {
    if args.format == Format::Json {
        match serde_json::to_string_pretty(result) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("berth-import: error: encoding result: {e}"),
        }
        return;
    }
    for i in &result.images {
        if args.quiet {
            println!("{}", i.digest);
            continue;
        }
        let how = match i.named_by {
            "generated" => " (the archive gave no name; generated)",
            _ => "",
        };
        let unpacked = match &i.unpacked {
            Some(x) => format!(
                "; unpacked {} new layer(s) into {}",
                x.layers_unpacked, x.snapshotter
            ),
            None => String::new(),
        };
        println!("{}: {}{how}{unpacked}", i.name, i.digest);
    }
}
