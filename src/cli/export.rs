//! `berth-export`: write stored images as an OCI layout or a docker archive.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

use super::{exit, GlobalArgs, ProgressMode};
use crate::content::Store;
use crate::distribution::Reference;
use crate::image::archive::{self, ExportFormat, ExportOptions, ExportResult, Output};
use crate::image::Platform;
use crate::metadata::Db;
use crate::Error;

const AFTER_HELP: &str = "Examples:
  berth-export busybox -o busybox.tar          OCI layout in a tar (skopeo: oci-archive:busybox.tar)
  berth-export busybox -o layout/              OCI layout directory (skopeo: oci:layout:latest)
  berth-export a b -o - | berth-import -       copy images to another store
  berth-export --format docker busybox -o b.tar    for docker load / podman load / skopeo docker-archive:

Progress goes to stderr; the result (what was written) to stdout, except with -o -.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveFormat {
    /// OCI image layout (every stored platform of each image)
    Oci,
    /// docker save tarball with the OCI layout inside (one platform per image)
    Docker,
}

/// Write images from the berth store to an OCI image layout or a docker
/// archive.
///
/// The OCI layout has oci-layout, index.json (each image's root with the
/// org.opencontainers.image.ref.name annotation set to its tag and
/// io.containerd.image.name to its full name) and every blob the images
/// need under blobs/sha256/. With --format docker the tarball also has
/// manifest.json and repositories, as docker save writes them. Blobs are
/// checked against their digests while they are copied. Tar entries have
/// fixed times and owners, so an export is reproducible.
#[derive(Debug, Parser)]
#[command(name = "berth-export", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct ExportArgs {
    /// Images to export: NAME[:TAG][@DIGEST] as stored
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Where to write: FILE (a tar), DIR/ or an existing directory (a layout), or - (a tar on stdout)
    #[arg(short, long, value_name = "FILE|DIR|-")]
    pub output: String,
    /// Archive format
    #[arg(long = "type", value_enum, default_value = "oci", value_name = "TYPE")]
    pub archive_type: ArchiveFormat,
    /// The platform a docker archive is written for (os/arch[/variant]) [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the exported images' digests, and no progress
    #[arg(short, long)]
    pub quiet: bool,
    /// table or json: how the result prints on stdout; oci or docker: the archive type, as --type
    #[arg(long, value_name = "FORMAT", default_value = "table",
          value_parser = ["table", "json", "oci", "docker"])]
    pub format: String,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    ExportArgs::command()
}

/// Runs berth-export and returns its exit code.
pub fn main() -> i32 {
    let args = ExportArgs::parse();
    let prog = "berth-export";
    match run(&args) {
        Ok((result, json)) => {
            print_result(&args, &result, json);
            exit::SUCCESS
        }
        Err(e) => super::report(prog, &e),
    }
}

fn run(args: &ExportArgs) -> Result<(ExportResult, bool), Error> {
    // `--format` is both how the result prints and, as docker and
    // containerd spell it, the archive type.
    let (archive_type, json) = match args.format.as_str() {
        "table" => (args.archive_type, false),
        "json" => (args.archive_type, true),
        "docker" => (ArchiveFormat::Docker, false),
        "oci" => (ArchiveFormat::Oci, false),
        other => {
            return Err(Error::Usage(format!(
                "--format {other:?}: expected table, json, oci or docker"
            )))
        }
    };
    let mut references = Vec::new();
    for image in &args.images {
        references.push(image.parse::<Reference>()?);
    }
    let platform = match &args.platform {
        Some(p) => p.parse::<Platform>().map_err(Error::Usage)?,
        None => Platform::host(),
    };
    let output = if args.output == "-" {
        if std::io::stdout().is_terminal() {
            return Err(Error::Usage(
                "refusing to write a tar archive to a terminal; redirect stdout or use -o FILE"
                    .into(),
            ));
        }
        Output::Stdout
    } else {
        let path = PathBuf::from(&args.output);
        if args.output.ends_with('/') || path.is_dir() {
            Output::Dir(path)
        } else {
            Output::Tar(path)
        }
    };
    let (_config, root) = args.global.load()?;
    if !root.join("meta.db").exists() {
        return Err(Error::Usage(format!(
            "no berth store at {}: nothing to export",
            root.display()
        )));
    }
    let store = Store::open(&root)?;
    let db = Db::open(&root)?;
    let mode = ProgressMode::detect(args.quiet);
    let progress = |line: &str| {
        if mode != ProgressMode::Silent {
            eprintln!("berth-export: {line}");
        }
    };
    let opts = ExportOptions {
        format: match archive_type {
            ArchiveFormat::Oci => ExportFormat::Oci,
            ArchiveFormat::Docker => ExportFormat::Docker,
        },
        platform,
    };
    let result = archive::export(&store, &db, &references, &output, &opts, &progress)?;
    progress(&format!(
        "wrote {} image(s), {} blob(s), {} to {}",
        result.images.len(),
        result.blobs,
        super::human_size(result.bytes),
        result.output
    ));
    Ok((result, json))
}

fn print_result(args: &ExportArgs, result: &ExportResult, json: bool) {
    // With -o - stdout is the archive.
    if args.output == "-" {
        return;
    }
    if json {
        match serde_json::to_string_pretty(result) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("berth-export: error: encoding result: {e}"),
        }
        return;
    }
    for i in &result.images {
        if args.quiet {
            println!("{}", i.digest);
        } else {
            println!("{}: {} -> {}", i.name, i.digest, result.output);
        }
    }
}
