//! Init probes of the plugins compiled in so far. Each checks only what the
//! host must offer and creates nothing, except the overlayfs probe's
//! scratch mount, which it removes before returning.

use std::io;
use std::path::Path;

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::unistd::{faccessat, AccessFlags};

use super::InitContext;

/// Oldest SQLite the metadata store accepts: 3.35 brought `RETURNING` and
/// `ALTER TABLE … DROP COLUMN`, which queries and migrations use.
const SQLITE_MIN: (i32, &str) = (3_035_000, "3.35");

/// `content/local`: the store root must be a writable directory, or be
/// creatable, i.e. its nearest existing ancestor is a writable directory.
pub(super) fn content_local(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    root_usable(ctx.root)
}

/// `metadata/sqlite`: the SQLite linked in (bundled by rusqlite) must be
/// new enough for our SQL.
pub(super) fn metadata_sqlite(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    sqlite_new_enough(rusqlite::version_number(), rusqlite::version())
}

/// `distribution/registry`: nothing host-specific to probe; whether a
/// registry answers is a question for each pull, not for startup.
pub(super) fn distribution_registry(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])
}

/// `snapshotter/overlayfs`: a real overlay mount must work on the
/// filesystem the snapshots would live on. This probe alone makes (and
/// removes at once) a scratch directory and a mount in it: whether the
/// kernel, the filesystem and our privileges allow overlay cannot be told
/// without trying.
pub(super) fn snapshotter_overlayfs(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    crate::snapshot::Overlay::probe(ctx.root)
}

/// `snapshotter/native`: plain directories and file copies; the store root
/// must be usable.
pub(super) fn snapshotter_native(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    root_usable(ctx.root)
}

fn sqlite_new_enough(number: i32, text: &str) -> Result<(), String> {
    let (min, min_text) = SQLITE_MIN;
    if number >= min {
        Ok(())
    } else {
        Err(format!("SQLite {text} is older than {min_text}"))
    }
}

fn root_usable(root: &Path) -> Result<(), String> {
    let root =
        std::path::absolute(root).map_err(|e| format!("store root {}: {e}", root.display()))?;
    let mut creating = false;
    for dir in root.ancestors() {
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(format!(
                    "store root {}: {} is not a directory",
                    root.display(),
                    dir.display()
                ));
            }
            Ok(_) => return writable_dir(dir, &root, creating),
            // ENOTDIR: some ancestor is a file; going up finds and names it.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                creating = true
            }
            Err(e) => {
                return Err(format!(
                    "store root {}: {}: {e}",
                    root.display(),
                    dir.display()
                ))
            }
        }
    }
    Err(format!(
        "store root {}: no existing ancestor",
        root.display()
    ))
}

/// `dir` exists; it must let this process (effective ids) create entries.
fn writable_dir(dir: &Path, root: &Path, creating: bool) -> Result<(), String> {
    let mode = AccessFlags::W_OK | AccessFlags::X_OK;
    faccessat(AT_FDCWD, dir, mode, AtFlags::AT_EACCESS).map_err(|errno| {
        if creating {
            format!(
                "store root {} does not exist and cannot be created in {}: {}",
                root.display(),
                dir.display(),
                errno.desc()
            )
        } else {
            format!(
                "store root {} is not writable: {}",
                root.display(),
                errno.desc()
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn sqlite_version_floor() {
        assert!(sqlite_new_enough(3_035_000, "3.35.0").is_ok());
        assert!(sqlite_new_enough(3_046_001, "3.46.1").is_ok());
        let err = sqlite_new_enough(3_034_999, "3.34.1").unwrap_err();
        assert!(err.contains("3.34.1") && err.contains("3.35"), "{err}");
        // The bundled library passes.
        assert!(sqlite_new_enough(rusqlite::version_number(), rusqlite::version()).is_ok());
    }

    #[test]
    fn root_existing_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(root_usable(dir.path()), Ok(()));
        let deep = dir.path().join("a/b/c");
        assert_eq!(root_usable(&deep), Ok(()));
        assert!(
            !dir.path().join("a").exists(),
            "the probe created something"
        );
    }

    #[test]
    fn root_under_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = root_usable(&file.join("store")).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(root_usable(&file).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn root_in_read_only_dir_is_refused() {
        if nix::unistd::geteuid().is_root() {
            // Root passes permission checks; nothing to test here.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let err = root_usable(&locked.join("store")).unwrap_err();
        assert!(err.contains("cannot be created"), "{err}");
    }
}
