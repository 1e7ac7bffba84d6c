//! Layer tar streams built entry by entry, with raw names where a test
//! needs what the tar crate's builder would refuse (`..`, absolute paths).

use tar::{EntryType, Header};

/// The mtime every entry gets unless a test sets its own.
pub const LAYER_MTIME: u64 = 1_500_000_000;
const T1: u64 = LAYER_MTIME;

/// A layer under construction.
pub struct LayerTar(pub tar::Builder<Vec<u8>>);

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar(tar::Builder::new(Vec::new()))
    }

    /// Appends one entry with its name (and link name) written as raw bytes,
    /// so names the builder would refuse (`..`, absolute) go in unchanged.
    pub fn raw(&mut self, name: &[u8], kind: EntryType, link: &[u8], data: &[u8], mode: u32) {
        self.raw_owned(name, kind, link, data, mode, 0, 0, T1);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn raw_owned(
        &mut self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut LayerTar {
        self.raw(name.as_bytes(), EntryType::Regular, b"", data, 0o644);
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut LayerTar {
        self.raw(name.as_bytes(), EntryType::Directory, b"", b"", 0o755);
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut LayerTar {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            target.as_bytes(),
            b"",
            0o777,
        );
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut LayerTar {
        self.raw(
            name.as_bytes(),
            EntryType::Link,
            target.as_bytes(),
            b"",
            0o644,
        );
        self
    }

    pub fn node(&mut self, name: &str, kind: EntryType, major: u32, minor: u32, mode: u32) {
        // uid and gid stay empty, as some writers leave them: they read as 0.
        let mut h = Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(mode);
        h.set_mtime(T1);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.0.append(&h, &b""[..]).unwrap();
    }

    /// A regular file preceded by PAX records.
    pub fn pax_file(&mut self, name: &str, records: &[(&str, &[u8])], data: &[u8]) {
        self.0
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        let mut h = Header::new_ustar();
        // A PAX `path` record, when there is one, overrides this name.
        h.set_path(if name.len() < 100 {
            name
        } else {
            "placeholder"
        })
        .unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(T1);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    /// A regular file with its owner (uid = gid) and mode.
    pub fn owned(&mut self, name: &str, data: &[u8], uid: u64, mode: u32) -> &mut LayerTar {
        self.raw_owned(
            name.as_bytes(),
            EntryType::Regular,
            b"",
            data,
            mode,
            uid,
            uid,
            T1,
        );
        self
    }

    /// A regular file whose name is too long for the header: the builder
    /// writes a GNU long-name entry before it.
    pub fn long_file(&mut self, name: &str, data: &[u8]) -> &mut LayerTar {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(T1);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }

    pub fn fifo(&mut self, name: &str) -> &mut LayerTar {
        self.node(name, EntryType::Fifo, 0, 0, 0o600);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}
