//! `berth-tag`: give a stored image another name.

use clap::{CommandFactory, Parser};
use serde::Serialize;

use super::{exit, Format, GlobalArgs};
use crate::distribution::Reference;
use crate::image::stored_name;
use crate::metadata::{self, Db, ImageRecord};
use crate::Error;

const AFTER_HELP: &str = "Examples:
  berth-tag busybox 127.0.0.1:5000/tools/busybox:1   name it for pushing elsewhere
  berth-tag -q IMAGE NEW                               print the digest only";

/// Add a name for an image in the berth store.
///
/// TARGET points at the same root digest as SOURCE, with the same labels
/// (so it counts as unpacked wherever SOURCE is). TARGET is normalised like
/// any reference (busybox → docker.io/library/busybox:latest); an image
/// already named TARGET is repointed.
#[derive(Debug, Parser)]
#[command(name = "berth-tag", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct TagArgs {
    /// The stored image: NAME[:TAG][@DIGEST]
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The new name: NAME[:TAG]
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Print only the digest
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format for the result on stdout
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Serialize)]
struct Tagged {
    source: String,
    target: String,
    digest: crate::content::Digest,
}

pub fn command() -> clap::Command {
    TagArgs::command()
}

/// Runs berth-tag and returns its exit code.
pub fn main() -> i32 {
    let args = TagArgs::parse();
    match run(&args) {
        Ok(t) => {
            if args.format == Format::Json {
                match serde_json::to_string_pretty(&t) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("berth-tag: error: encoding result: {e}"),
                }
            } else if args.quiet {
                println!("{}", t.digest);
            } else {
                println!("{}: {} (from {})", t.target, t.digest, t.source);
            }
            exit::SUCCESS
        }
        Err(e) => super::report("berth-tag", &e),
    }
}

fn run(args: &TagArgs) -> Result<Tagged, Error> {
    let source: Reference = args.source.parse()?;
    let target: Reference = args.target.parse()?;
    if target.digest.is_some() {
        return Err(Error::Usage(format!(
            "target {:?}: a new name takes a tag, not a digest",
            args.target
        )));
    }
    let (_config, root) = args.global.load()?;
    let not_found = || {
        metadata::Error::NotFound {
            what: format!("image {}", stored_name(&source)),
        }
        .into()
    };
    if !root.join("meta.db").exists() {
        return Err(not_found());
    }
    let mut db = Db::open(&root)?;
    let source_name = stored_name(&source);
    let target_name = stored_name(&target);
    let tagged = db.write(|tx| {
        // Read and write in one transaction, so a concurrent removal or
        // re-pull of SOURCE is seen whole or not at all.
        let row = tx
            .query_row(
                "SELECT media_type, digest, size, labels FROM images WHERE name = ?1",
                [&source_name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let Some((media_type, digest, size, labels)) = row else {
            return Ok(None);
        };
        let parse_err = |e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        };
        let digest = digest.parse().map_err(|e| parse_err(format!("{e}")))?;
        if let Some(want) = &source.digest {
            if *want != digest {
                return Ok(None);
            }
        }
        let labels =
            serde_json::from_str(&labels).map_err(|e| parse_err(format!("labels: {e}")))?;
        let rec = ImageRecord {
            name: target_name.clone(),
            media_type,
            digest,
            size: size as u64,
            labels,
            created_ns: 0,
            updated_ns: 0,
        };
        metadata::put_image(tx, &rec)?;
        let attrs = crate::metadata::Labels::from([
            ("digest".to_string(), rec.digest.to_string()),
            ("source".to_string(), source_name.clone()),
        ]);
        metadata::record_event(
            tx,
            metadata::EventType::Image,
            metadata::events::action::TAG,
            &rec.name,
            &attrs,
        )?;
        Ok(Some(rec.digest))
    })?;
    let digest = tagged.ok_or_else(not_found)?;
    Ok(Tagged {
        source: source_name,
        target: target_name,
        digest,
    })
}
