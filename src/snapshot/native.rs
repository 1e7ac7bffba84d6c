//! The `native` snapshotter, documented on [`Native`].

use std::path::{Path, PathBuf};

use super::store::Core;
use super::{
    tree, CleanupReport, Filter, Info, Kind, Labels, Mount, Result, Snapshotter, Usage,
    WhiteoutStyle,
};

pub(super) const NAME: &str = "native";

/// The `native` snapshotter: every snapshot is a complete directory tree,
/// and prepare copies the parent's tree into the new one (see
/// `snapshot/tree.rs` for what a copy keeps). Works on any filesystem and
/// needs no overlay support; costs a full copy per prepare, cheap only
/// where the filesystem reflinks (btrfs, xfs).
///
/// Mounts are bind mounts of the snapshot's own tree: read-write for an
/// active snapshot, read-only for views and committed snapshots. Deletions
/// are plain deletions ([`WhiteoutStyle::Delete`]).
pub struct Native {
    core: Core,
}

impl Native {
    /// Opens the native snapshots of the store at `root`.
    pub fn open(root: &Path) -> Result<Native> {
        Ok(Native {
            core: Core::open(root, NAME)?,
        })
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
            false,
            |fs_dir, parent_fs| match parent_fs {
                Some(parent_fs) => tree::copy_tree(parent_fs, fs_dir),
                None => Ok(()),
            },
        )?;
        self.mounts(key)
    }
}

impl Snapshotter for Native {
    super::store::delegate_to_core!();
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.core.record(key)?;
        let read_only = rec.kind != Kind::Active;
        Ok(vec![Mount::bind(&self.core.fs_dir(rec.id), read_only)])
    }

    fn lower_dirs(&self, key: &str) -> Result<Vec<PathBuf>> {
        self.core.record(key)?;
        Ok(Vec::new())
    }

    fn whiteout_style(&self) -> WhiteoutStyle {
        WhiteoutStyle::Delete
    }
}
