use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{Digest, Error, Hasher, Result};

/// Handle on `<root>/content`. Cheap to clone; holds no open files.
#[derive(Clone, Debug)]
pub struct Store {
    blobs: PathBuf,
    ingest: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` and its parents owner-only (0700): the store holds
/// everything a user pulled, which may include private images.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Store {
    /// Opens (creating if needed) the content store under `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let content = root.join("content");
        let blobs = content.join("blobs").join("sha256");
        let ingest = content.join("ingest");
        for dir in [&blobs, &ingest] {
            create_private_dir(dir).map_err(io_err(dir))?;
        }
        Ok(Store { blobs, ingest })
    }

    /// Where the blob lives once committed (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// The size of a committed blob, or `None` when it is not in the store.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Reads a whole committed blob; meant for manifests and configs, which
    /// are small. Layers should be opened with [`Store::open_blob`].
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(io_err(&self.path(digest)))?;
        Ok(data)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                digest: digest.clone(),
            },
            _ => io_err(&path)(e),
        })
    }

    /// Stores a small blob already held in memory (a manifest or config),
    /// verifying it against `digest` first.
    pub fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        if self.size(digest)? == Some(data.len() as u64) {
            return Ok(());
        }
        let mut w = self.writer(&digest.to_string())?;
        if w.offset() != 0 {
            w.reset()?;
        }
        w.write_all(data).map_err(io_err(&w.data_path))?;
        w.commit(data.len() as u64, digest)
    }

    /// Opens the ingest for `reference`, waiting for any other process that
    /// holds it. The returned writer resumes after whatever bytes an earlier,
    /// interrupted writer left; see [`Writer::offset`].
    pub fn writer(&self, reference: &str) -> Result<Writer> {
        // The ref is hashed into the directory name so any string is a safe ref.
        let dir = self.ingest.join(Digest::of(reference.as_bytes()).hex());
        let lock_path = dir.join("lock");
        let lock = loop {
            create_private_dir(&dir).map_err(io_err(&dir))?;
            let lock = crate::lockfile::lock(&lock_path, FlockArg::LockExclusive)
                .map_err(io_err(&lock_path))?;
            // The holder we waited for may have committed and removed the
            // ingest dir; our lock is then on an unlinked file and guards
            // nothing, so start over on a fresh one.
            if still_linked(&lock, &lock_path) {
                break lock;
            }
        };

        let data_path = dir.join("data");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&data_path)
            .map_err(io_err(&data_path))?;
        let mut hasher = Hasher::new();
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err(&data_path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(Writer {
            store: self.clone(),
            dir,
            data_path,
            file,
            hasher,
            offset,
            _lock: lock,
        })
    }
}

fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
        _ => false,
    }
}

/// An exclusive, resumable ingest of one blob. Dropping it without
/// [`Writer::commit`] keeps the partial data for a later resume.
pub struct Writer {
    store: Store,
    dir: PathBuf,
    data_path: PathBuf,
    file: File,
    hasher: Hasher,
    offset: u64,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("ingest", &self.dir)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Writer {
    /// How many bytes the ingest already holds; the next write lands here.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// A second, read-only descriptor on the data being written, for a
    /// reader in this process that consumes the blob while it arrives. It
    /// stays valid after [`Writer::commit`] renames the file.
    pub fn reopen(&self) -> Result<File> {
        File::open(&self.data_path).map_err(io_err(&self.data_path))
    }

    /// Throws away the partial data, e.g. when it is longer than the blob
    /// it is meant to become.
    pub fn reset(&mut self) -> Result<()> {
        self.file.set_len(0).map_err(io_err(&self.data_path))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(io_err(&self.data_path))?;
        self.hasher = Hasher::new();
        self.offset = 0;
        Ok(())
    }

    /// The digest of the bytes written so far; `commit` with it cannot fail
    /// verification. For blobs whose digest is learnt by reading them (an
    /// archive's `layer.tar`).
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Checks size and digest without committing, so a caller can verify a
    /// set of blobs before making any of them visible.
    pub fn verify(&self, expected_size: u64, expected: &Digest) -> Result<()> {
        if self.offset != expected_size {
            return Err(Error::SizeMismatch {
                digest: expected.clone(),
                expected: expected_size,
                actual: self.offset,
            });
        }
        let actual = self.digest();
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Deletes the ingest: the data will never become a blob.
    pub fn abort(self) {
        self.discard();
    }

    /// Verifies the data and moves it into place. On a size or digest
    /// mismatch the partial data is deleted, so a bad download is never
    /// resumed and the store holds nothing of it.
    pub fn commit(mut self, expected_size: u64, expected: &Digest) -> Result<()> {
        self.file.flush().map_err(io_err(&self.data_path))?;
        let actual = std::mem::take(&mut self.hasher).finish();
        let failure = if self.offset != expected_size {
            Some(Error::SizeMismatch {
                digest: expected.clone(),
                expected: expected_size,
                actual: self.offset,
            })
        } else if &actual != expected {
            Some(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            })
        } else {
            None
        };
        if let Some(err) = failure {
            self.discard();
            return Err(err);
        }
        self.file.sync_all().map_err(io_err(&self.data_path))?;
        let target = self.store.path(expected);
        fs::rename(&self.data_path, &target).map_err(io_err(&target))?;
        // The rename must survive a crash before the image record that
        // points at this blob is written.
        File::open(&self.store.blobs)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.store.blobs))?;
        self.discard();
        Ok(())
    }

    fn discard(&self) {
        // Best effort: a leftover ingest dir is harmless and is reused or
        // collected later; failing the caller over it would be worse.
        let _ = fs::remove_file(&self.data_path);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn committed_blob_is_readable_and_verified() {
        let (_dir, store) = store();
        let data = b"hello blob";
        let digest = Digest::of(data);
        let mut w = store.writer("r1").unwrap();
        w.write_all(data).unwrap();
        w.commit(data.len() as u64, &digest).unwrap();
        assert_eq!(store.read(&digest).unwrap(), data);
        assert_eq!(store.size(&digest).unwrap(), Some(10));
    }

    #[test]
    fn interrupted_write_resumes_at_its_offset() {
        let (_dir, store) = store();
        let data = b"0123456789abcdef";
        let digest = Digest::of(data);
        {
            let mut w = store.writer("r").unwrap();
            w.write_all(&data[..6]).unwrap();
        }
        assert_eq!(store.size(&digest).unwrap(), None, "partial data visible");
        let mut w = store.writer("r").unwrap();
        assert_eq!(w.offset(), 6);
        w.write_all(&data[6..]).unwrap();
        w.commit(16, &digest).unwrap();
        assert_eq!(store.read(&digest).unwrap(), data);
    }

    #[test]
    fn bad_digest_leaves_nothing_behind() {
        let (dir, store) = store();
        let digest = Digest::of(b"right");
        let mut w = store.writer("r").unwrap();
        w.write_all(b"wrong").unwrap();
        let err = w.commit(5, &digest).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(store.size(&digest).unwrap(), None);
        let ingest = fs::read_dir(dir.path().join("content/ingest")).unwrap();
        assert_eq!(ingest.count(), 0);
        // A fresh writer starts from zero rather than resuming bad bytes.
        assert_eq!(store.writer("r").unwrap().offset(), 0);
    }

    #[test]
    fn verify_checks_without_committing_and_abort_leaves_nothing() {
        let (dir, store) = store();
        let data = b"held until the end";
        let digest = Digest::of(data);
        let mut w = store.writer("held").unwrap();
        w.write_all(data).unwrap();
        assert_eq!(w.digest(), digest);
        w.verify(data.len() as u64, &digest).unwrap();
        assert!(w.verify(3, &digest).is_err());
        assert!(w.verify(data.len() as u64, &Digest::of(b"x")).is_err());
        assert_eq!(store.size(&digest).unwrap(), None, "visible before commit");
        w.abort();
        assert_eq!(store.size(&digest).unwrap(), None);
        let ingest = fs::read_dir(dir.path().join("content/ingest")).unwrap();
        assert_eq!(ingest.count(), 0);
    }

    #[test]
    fn size_mismatch_is_reported() {
        let (_dir, store) = store();
        let mut w = store.writer("r").unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(4, &Digest::of(b"abc")).unwrap_err();
        assert!(
            matches!(err, Error::SizeMismatch { actual: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn write_blob_rejects_wrong_data() {
        let (_dir, store) = store();
        let digest = Digest::of(b"manifest");
        assert!(store.write_blob(&digest, b"other").is_err());
        store.write_blob(&digest, b"manifest").unwrap();
        store.write_blob(&digest, b"manifest").unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"manifest");
    }

    #[test]
    fn missing_blob_is_not_found() {
        let (_dir, store) = store();
        let err = store.read(&Digest::of(b"nope")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    }

    #[test]
    fn writers_of_one_ref_take_turns() {
        let (_dir, store) = store();
        let data = vec![7u8; 300_000];
        let digest = Digest::of(&data);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut w = store.writer("same").unwrap();
                    if store.size(&digest).unwrap().is_some() {
                        return;
                    }
                    w.reset().unwrap();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    w.commit(data.len() as u64, &digest).unwrap();
                });
            }
        });
        assert_eq!(store.read(&digest).unwrap(), data);
    }
}
