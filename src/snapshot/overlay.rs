//! The `overlayfs` snapshotter, documented on [`Overlay`].

use std::fs;
use std::path::{Path, PathBuf};

use super::store::{Core, PROBE_PREFIX};
use super::{
    tree, CleanupReport, Error, Filter, Info, Kind, Labels, Mount, Result, Snapshotter, Usage,
    WhiteoutStyle,
};
use crate::metadata::SnapshotRecord;

pub(super) const NAME: &str = "overlayfs";

/// The `overlayfs` snapshotter: each snapshot is one directory, and a
/// snapshot's tree is the overlay of its own directory on its parents'.
///
/// Prepare costs the same whatever the parent's size: it makes two empty
/// directories. Mounts:
///
/// | snapshot                    | mount                                               |
/// |-----------------------------|-----------------------------------------------------|
/// | active, no parent           | bind of its `fs`, read-write                        |
/// | active on parents           | overlay: `lowerdir=` parents, `upperdir=fs`, `workdir=work` |
/// | view, no parent / one parent| bind of its own (empty) / the parent's `fs`, read-only |
/// | view on several parents     | overlay of the parents, read-only                   |
/// | committed                   | like a view whose nearest layer is itself           |
///
/// Deletions in a layer are overlay whiteouts ([`WhiteoutStyle::Overlay`]).
/// Layer paths go into the mount options, so the store root may contain
/// neither `:` nor `,`; chains too long for one page are mounted with the
/// new mount API (see [`crate::snapshot::mount`]).
pub struct Overlay {
    core: Core,
}

impl Overlay {
    /// Opens the overlayfs snapshots of the store at `root`. Does not check
    /// that overlay mounts work here; [`Overlay::probe`] does.
    pub fn open(root: &Path) -> Result<Overlay> {
        check_root_text(root).map_err(|reason| Error::Unavailable {
            name: NAME.into(),
            reason,
        })?;
        Ok(Overlay {
            core: Core::open(root, NAME)?,
        })
    }

    /// Whether overlay mounts work for a store at `root`: mounts a small
    /// overlay in a scratch directory on the filesystem the snapshots would
    /// use (`<root>/snapshots/overlayfs`, else `<root>`, else the temp dir
    /// when the root does not exist yet), then unmounts and deletes it.
    pub fn probe(root: &Path) -> Result<(), String> {
        check_root_text(root)?;
        let home = root.join("snapshots").join(NAME);
        let base = [home.as_path(), root]
            .into_iter()
            .find(|d| d.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = crate::metadata::now_ns();
        let scratch = base.join(format!("{PROBE_PREFIX}{}-{nanos}", std::process::id()));
        let result = probe_in(&scratch);
        let _ = tree::remove_tree(&scratch);
        result
    }

    fn mounts_of(&self, chain: &[SnapshotRecord]) -> Vec<Mount> {
        let me = &chain[0];
        let fs_dir = self.core.fs_dir(me.id);
        let parents: Vec<PathBuf> = chain[1..].iter().map(|p| self.core.fs_dir(p.id)).collect();
        let read_only = |mut lower: Vec<PathBuf>| {
            if lower.len() == 1 {
                Mount::bind(&lower.remove(0), true)
            } else {
                Mount::overlay(&lower, None)
            }
        };
        let mount = match me.kind {
            Kind::Active if parents.is_empty() => Mount::bind(&fs_dir, false),
            Kind::Active => Mount::overlay(&parents, Some((&fs_dir, &self.core.work_dir(me.id)))),
            Kind::View if parents.is_empty() => Mount::bind(&fs_dir, true),
            Kind::View => read_only(parents),
            Kind::Committed => read_only([vec![fs_dir], parents].concat()),
        };
        vec![mount]
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: &Labels,
    ) -> Result<Vec<Mount>> {
        self.core.create(
            key,
            parent,
            kind,
            labels,
            kind == Kind::Active,
            |fs_dir, parent_fs| {
                // The merged root shows the upper dir's owner and mode:
                // give it the parent's, as a full copy would have.
                let Some(parent_fs) = parent_fs else {
                    return Ok(());
                };
                let meta = fs::symlink_metadata(parent_fs).map_err(|source| Error::Io {
                    action: "reading",
                    path: parent_fs.to_path_buf(),
                    source,
                })?;
                tree::copy_owner_and_mode(fs_dir, &meta)
            },
        )?;
        self.mounts(key)
    }
}

impl Snapshotter for Overlay {
    super::store::delegate_to_core!();
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        Ok(self.mounts_of(&self.core.chain(key)?))
    }

    fn lower_dirs(&self, key: &str) -> Result<Vec<PathBuf>> {
        Ok(self.core.chain(key)?[1..]
            .iter()
            .map(|p| self.core.fs_dir(p.id))
            .collect())
    }

    fn whiteout_style(&self) -> WhiteoutStyle {
        WhiteoutStyle::Overlay
    }
}

/// Layer paths are joined with `:` and options with `,` in mount options.
fn check_root_text(root: &Path) -> Result<(), String> {
    match root.to_str() {
        None => Err(format!("store root {} is not valid UTF-8", root.display())),
        Some(text) if text.contains([':', ',']) => Err(format!(
            "store root {text} contains ':' or ',', which overlay mount options cannot carry"
        )),
        Some(_) => Ok(()),
    }
}

fn probe_in(scratch: &Path) -> Result<(), String> {
    let dirs = ["lower", "upper", "work", "merged"].map(|d| scratch.join(d));
    for dir in std::iter::once(scratch).chain(dirs.iter().map(PathBuf::as_path)) {
        fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let [lower, upper, work, merged] = &dirs;
    let mount = Mount::overlay(std::slice::from_ref(lower), Some((upper, work)));
    match mount.mount(merged) {
        Ok(()) => {
            let _ = nix::mount::umount2(merged, nix::mount::MntFlags::MNT_DETACH);
            Ok(())
        }
        Err(Error::Mount { source, detail, .. }) => {
            let on = scratch.parent().unwrap_or(scratch).display();
            Err(match source.raw_os_error() {
                Some(libc::EPERM) => {
                    format!("mounting overlay is not permitted (needs CAP_SYS_ADMIN): {source}")
                }
                Some(libc::ENODEV) => {
                    "the kernel has no overlay filesystem (try: modprobe overlay)".to_string()
                }
                Some(libc::EINVAL) => format!(
                    "overlay refused an upper layer on the filesystem of {on}: {source}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                ),
                _ => format!("test mount in {on} failed: {source}"),
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_that_mount_options_cannot_carry() {
        assert!(check_root_text(Path::new("/var/lib/berth")).is_ok());
        assert!(check_root_text(Path::new("/a:b"))
            .unwrap_err()
            .contains("':'"));
        assert!(check_root_text(Path::new("/a,b")).is_err());
    }
}
