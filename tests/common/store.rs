//! Running berth's binaries against a throwaway store, and checking the
//! store's content afterwards.

use std::fs;
use std::path::{Path, PathBuf};

use berth::content::Digest;
use tempfile::TempDir;

use super::tools::sha256_files;

/// The path of berth binary `name` built alongside this test
/// (`target/<profile>/<name>`: the test runs from `target/<profile>/deps/`).
/// `cargo test` builds the package's binaries before its integration tests.
/// Panics if it is not there.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "berth binary {} not found: is there a [[bin]] or src/bin/{name}.rs?",
        path.display()
    );
    path
}

/// A store root in a temp dir, removed on Drop.
pub struct TempRoot {
    dir: TempDir,
}

impl TempRoot {
    pub fn new() -> TempRoot {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-root-")
            .tempdir()
            .expect("creating store root temp dir");
        TempRoot { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the content store keeps `digest`:
    /// `<root>/content/blobs/sha256/<hex>`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blobs_dir(self.path()).join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Every blob in the store, hashed; see [`walk_store_blobs`].
    pub fn blobs(&self) -> Vec<StoreBlob> {
        walk_store_blobs(self.path())
    }
}

impl Default for TempRoot {
    fn default() -> Self {
        TempRoot::new()
    }
}

/// A file in the content store, with the digest its name claims and the
/// digest of what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreBlob {
    pub path: PathBuf,
    /// `sha256:<file name>`, not parsed: a bad name must show, not vanish.
    pub name: String,
    pub actual: Digest,
}

impl StoreBlob {
    pub fn matches(&self) -> bool {
        self.name == self.actual.to_string()
    }
}

fn blobs_dir(root: &Path) -> PathBuf {
    root.join("content").join("blobs").join("sha256")
}

/// Hashes every file under `<root>/content/blobs/sha256/`, sorted by name.
/// Subdirectories are not descended into. An absent directory gives an
/// empty list.
pub fn walk_store_blobs(root: &Path) -> Vec<StoreBlob> {
    let dir = blobs_dir(root);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("reading blobs dir").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let digests = sha256_files(&refs);
    paths
        .into_iter()
        .zip(digests)
        .map(|(path, actual)| StoreBlob {
            name: format!("sha256:{}", path.file_name().unwrap().to_string_lossy()),
            path,
            actual,
        })
        .collect()
}

/// Asserts every blob in the store holds what its name says; returns them.
pub fn assert_store_blobs_match(root: &Path) -> Vec<StoreBlob> {
    let blobs = walk_store_blobs(root);
    let bad: Vec<String> = blobs
        .iter()
        .filter(|b| !b.matches())
        .map(|b| format!("{} holds {}", b.path.display(), b.actual))
        .collect();
    assert!(
        bad.is_empty(),
        "store blobs that do not match their names:\n{}",
        bad.join("\n")
    );
    blobs
}
