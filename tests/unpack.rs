//! LayerTar unpacking, in process, as root: every entry type and its metadata,
//! the three compressions, both whiteout modes (the overlay one checked
//! through a real overlayfs mount), and hostile layers that try to write
//! outside the target.
//!
//! Layers are built here with the `tar` crate; hostile names that its
//! builder refuses are written straight into the header bytes.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth::content::Digest;
use berth::image::unpack::{apply_layer, Applied, ApplyOptions, Compression, Error, WhiteoutMode};
use berth::ErrorKind;
use common::LayerTar;
use tar::{EntryType, Header};

const T1: u64 = common::LAYER_MTIME;
const T2: u64 = 1_600_000_000;

// ---------------------------------------------------------------- layers --

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn opts(whiteouts: WhiteoutMode, lower_dirs: &[&Path]) -> ApplyOptions {
    ApplyOptions {
        whiteouts,
        lower_dirs: lower_dirs.iter().map(|p| p.to_path_buf()).collect(),
        sync: false,
    }
}

fn apply(data: &[u8], target: &Path, opts: &ApplyOptions) -> Result<Applied, Error> {
    apply_layer(data, Compression::None, target, opts)
}

fn apply_delete(data: &[u8], target: &Path) -> Applied {
    apply(data, target, &opts(WhiteoutMode::Delete, &[])).expect("apply layer")
}

// ------------------------------------------------------------- checking --

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-unpack-")
        .tempdir_in("/tmp")
        .unwrap()
}

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for
    // `buf.len()` bytes of writes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A comparable description of a tree: path → (kind, mode, uid, gid,
/// mtime, contents or link target, rdev).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = lstat(&p);
            let ft = md.file_type();
            let body = if ft.is_file() {
                Digest::of(&fs::read(&p).unwrap()).to_string()
            } else if ft.is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "{:o} {}:{} {} {} {}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.mtime(),
                    md.rdev(),
                    body
                ),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

// ---------------------------------------------------------------- tests --

#[test]
fn every_entry_type_with_its_metadata() {
    let cap: &[u8] = &[
        0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let long_gnu = format!("long/{}", "g".repeat(200));
    let long_pax = format!("long/{}", "p".repeat(200));
    let long_target = format!("../{}", "t".repeat(150));

    let mut l = LayerTar::new();
    l.raw_owned(b"./", EntryType::Directory, b"", b"", 0o751, 0, 0, T2);
    l.raw_owned(b"d/", EntryType::Directory, b"", b"", 0o750, 1000, 1000, T1);
    l.raw_owned(
        b"d/f",
        EntryType::Regular,
        b"",
        b"hello",
        0o640,
        1000,
        1001,
        T1,
    );
    l.raw_owned(b"d/su", EntryType::Regular, b"", b"#!", 0o4755, 0, 0, T1);
    l.raw_owned(
        b"d/sg",
        EntryType::Regular,
        b"",
        b"#!",
        0o2711,
        1000,
        50,
        T1,
    );
    l.raw_owned(
        b"d/sticky/",
        EntryType::Directory,
        b"",
        b"",
        0o1777,
        0,
        0,
        T1,
    );
    l.raw_owned(b"d/l", EntryType::Symlink, b"f", b"", 0o777, 1000, 1000, T1);
    l.raw_owned(
        b"d/abs",
        EntryType::Symlink,
        b"/etc/passwd",
        b"",
        0o777,
        0,
        0,
        T1,
    );
    l.hardlink("d/h", "d/f");
    l.node("d/null", EntryType::Char, 1, 3, 0o666);
    l.node("d/loop", EntryType::Block, 7, 0, 0o660);
    l.node("d/fifo", EntryType::Fifo, 0, 0, 0o600);
    l.pax_file(
        "d/cap",
        &[
            ("SCHILY.xattr.user.foo", b"bar"),
            ("SCHILY.xattr.security.capability", cap),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("mtime", b"1500000000.25"),
        ],
        b"ping",
    );
    // xattrs on a symlink: trusted.* lands on the link itself; user.* is
    // refused by the kernel for symlinks and skipped.
    l.0.append_pax_extensions([
        ("SCHILY.xattr.trusted.note", &b"on the link"[..]),
        ("SCHILY.xattr.user.note", &b"skipped"[..]),
    ])
    .unwrap();
    l.raw(b"d/xl", EntryType::Symlink, b"f", b"", 0o777);
    l.dir("odd");
    l.file("odd/with space", b"1");
    l.file("odd/ünïcödé", b"2");
    l.file("odd/new\nline", b"3");
    l.dir("long");
    let mut h = Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_mtime(T1);
    l.0.append_data(&mut h, &long_gnu, &b"gnu!"[..]).unwrap();
    l.pax_file(&long_pax, &[("path", long_pax.as_bytes())], b"pax!");
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_mtime(T1);
    l.0.append_link(&mut h, "long/link", &long_target).unwrap();
    let data = l.finish();

    let tmp = tempdir();
    let target = tmp.path().join("t");
    fs::create_dir(&target).unwrap();
    let applied = apply(
        &data,
        &target,
        &ApplyOptions {
            sync: true,
            ..opts(WhiteoutMode::Delete, &[])
        },
    )
    .unwrap();
    assert_eq!(applied.diff_id, Digest::of(&data));
    assert_eq!(applied.uncompressed_size, data.len() as u64);
    assert_eq!(applied.entries, 22);

    let root = lstat(&target);
    assert_eq!(root.mode() & 0o7777, 0o751);
    assert_eq!(root.mtime(), T2 as i64);

    let d = lstat(&target.join("d"));
    assert!(d.is_dir());
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (1000, 1000, 0o750));
    assert_eq!(
        d.mtime(),
        T1 as i64,
        "directory mtime set after its children"
    );

    let f = lstat(&target.join("d/f"));
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(f.mtime(), T1 as i64);
    assert_eq!(fs::read(target.join("d/f")).unwrap(), b"hello");
    assert_eq!(lstat(&target.join("d/su")).mode() & 0o7777, 0o4755);
    let sg = lstat(&target.join("d/sg"));
    assert_eq!((sg.uid(), sg.gid(), sg.mode() & 0o7777), (1000, 50, 0o2711));
    assert_eq!(lstat(&target.join("d/sticky")).mode() & 0o7777, 0o1777);

    let l = lstat(&target.join("d/l"));
    assert!(l.file_type().is_symlink());
    assert_eq!((l.uid(), l.gid(), l.mtime()), (1000, 1000, T1 as i64));
    assert_eq!(fs::read_link(target.join("d/l")).unwrap(), Path::new("f"));
    assert_eq!(
        fs::read_link(target.join("d/abs")).unwrap(),
        Path::new("/etc/passwd"),
        "absolute symlink targets are stored as written"
    );

    let h = lstat(&target.join("d/h"));
    assert_eq!(h.ino(), f.ino());
    assert_eq!(h.nlink(), 2);

    let null = lstat(&target.join("d/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let blk = lstat(&target.join("d/loop"));
    assert!(blk.file_type().is_block_device());
    assert_eq!(blk.rdev(), nix::sys::stat::makedev(7, 0));
    let fifo = lstat(&target.join("d/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o600);

    let cap_file = target.join("d/cap");
    assert_eq!(
        lgetxattr(&cap_file, "user.foo").as_deref(),
        Some(&b"bar"[..])
    );
    assert_eq!(
        lgetxattr(&cap_file, "security.capability").as_deref(),
        Some(cap)
    );
    assert_eq!(
        lgetxattr(&cap_file, "trusted.overlay.opaque"),
        None,
        "overlay xattrs from the tar are dropped"
    );
    let xl = target.join("d/xl");
    assert_eq!(
        lgetxattr(&xl, "trusted.note").as_deref(),
        Some(&b"on the link"[..])
    );
    assert_eq!(lgetxattr(&target.join("d/f"), "trusted.note"), None);
    let cap_md = lstat(&cap_file);
    assert_eq!(
        (cap_md.mtime(), cap_md.mtime_nsec()),
        (T1 as i64, 250_000_000)
    );

    assert_eq!(fs::read(target.join("odd/with space")).unwrap(), b"1");
    assert_eq!(fs::read(target.join("odd/ünïcödé")).unwrap(), b"2");
    assert_eq!(fs::read(target.join("odd/new\nline")).unwrap(), b"3");
    assert_eq!(fs::read(target.join(&long_gnu)).unwrap(), b"gnu!");
    assert_eq!(fs::read(target.join(&long_pax)).unwrap(), b"pax!");
    assert_eq!(
        fs::read_link(target.join("long/link")).unwrap(),
        Path::new(&long_target)
    );
}

#[test]
fn compressions_give_the_same_tree_and_diff_id() {
    let mut l = LayerTar::new();
    l.dir("a").file("a/small", b"x");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    l.file("a/big", &big).dir("a/many");
    for i in 0..50 {
        l.file(&format!("a/many/{i}"), format!("{i}").as_bytes());
    }
    l.symlink("a/link", "big");
    let mut tar = l.finish();
    // Trailing zeros past the end-of-archive marker belong to the diffID.
    tar.extend_from_slice(&[0u8; 20_000]);
    let want = Digest::of(&tar);

    let mut trees = Vec::new();
    let tmp = tempdir();
    // Two gzip members back to back are one stream (MultiGzDecoder).
    let (first, second) = tar.split_at(777_777);
    let mut multi = gzip(first);
    multi.extend_from_slice(&gzip(second));
    for (i, (name, blob, compression)) in [
        ("plain", tar.clone(), Compression::None),
        ("gzip", gzip(&tar), Compression::Gzip),
        ("multi-gzip", multi, Compression::Gzip),
        ("zstd", zstd(&tar), Compression::Zstd),
    ]
    .into_iter()
    .enumerate()
    {
        let target = tmp.path().join(format!("{i}"));
        fs::create_dir(&target).unwrap();
        let applied = apply_layer(
            &blob[..],
            compression,
            &target,
            &opts(WhiteoutMode::Delete, &[]),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(applied.diff_id, want, "{name}");
        assert_eq!(applied.uncompressed_size, tar.len() as u64, "{name}");
        assert_eq!(fs::read(target.join("a/big")).unwrap(), big, "{name}");
        trees.push(snapshot(&target));
    }
    for tree in &trees[1..] {
        assert_eq!(tree, &trees[0]);
    }
}

#[test]
fn delete_mode_applies_whiteouts_and_replacements() {
    let tmp = tempdir();
    let t = tmp.path();
    let mut l1 = LayerTar::new();
    l1.file("a", b"a")
        .dir("b")
        .file("b/x", b"x")
        .dir("b/y")
        .file("b/y/z", b"z")
        .dir("o")
        .file("o/old", b"old")
        .dir("o/olddir")
        .file("o/olddir/f", b"f")
        .dir("o/kept")
        .file("o/kept/lower", b"lower")
        .dir("p")
        .file("p/old", b"old")
        .file("f2d", b"file")
        .dir("d2f")
        .file("d2f/z", b"z")
        .symlink("s2d", "b")
        .file("keep", b"keep");
    apply_delete(&l1.finish(), t);
    assert!(t.join("b/y/z").exists());

    let mut l2 = LayerTar::new();
    l2.file(".wh.a", b"")
        .file(".wh.b", b"")
        .dir("o")
        .file("o/new", b"new")
        .dir("o/kept")
        .file("o/kept/upper", b"upper")
        .file("o/.wh..wh..opq", b"")
        .dir("p")
        .file("p/.wh..wh..opq", b"")
        .file("p/new", b"new")
        .dir("f2d")
        .file("f2d/inner", b"inner")
        .file("d2f", b"now a file")
        .dir("s2d")
        .file("s2d/in", b"in")
        .file(".wh.missing", b"")
        .file("nodir/.wh.x", b"")
        .dir("var")
        .symlink("var/run", "/run")
        .file("var/run/pid", b"1");
    let applied = apply_delete(&l2.finish(), t);
    assert_eq!(applied.entries, 20);

    assert!(!exists(&t.join("a")), "whiteout removes a file");
    assert!(!exists(&t.join("b")), "whiteout removes a whole directory");
    assert!(!exists(&t.join(".wh.a")), "whiteouts are never created");
    let names = |d: &str| {
        let mut v: Vec<String> = fs::read_dir(t.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("o"), ["kept", "new"], "opaque keeps only this layer");
    assert_eq!(names("o/kept"), ["upper"], "opaque reaches below kept dirs");
    assert_eq!(names("p"), ["new"]);
    assert!(lstat(&t.join("f2d")).is_dir());
    assert_eq!(fs::read(t.join("f2d/inner")).unwrap(), b"inner");
    assert!(lstat(&t.join("d2f")).is_file());
    assert_eq!(fs::read(t.join("d2f")).unwrap(), b"now a file");
    assert!(
        lstat(&t.join("s2d")).is_dir(),
        "a dir entry replaces a symlink"
    );
    assert_eq!(fs::read(t.join("s2d/in")).unwrap(), b"in");
    assert!(!exists(&t.join("nodir")), "a whiteout creates no parents");
    assert_eq!(fs::read(t.join("keep")).unwrap(), b"keep");
    assert_eq!(
        fs::read(t.join("run/pid")).unwrap(),
        b"1",
        "a dangling symlink's target directory is created inside the root"
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn overlay_mode_writes_overlayfs_whiteouts() {
    let tmp = tempdir();
    let (a, b, merged) = (
        tmp.path().join("A"),
        tmp.path().join("B"),
        tmp.path().join("M"),
    );
    for d in [&a, &b, &merged] {
        fs::create_dir(d).unwrap();
    }
    let mut l1 = LayerTar::new();
    l1.raw_owned(
        b"etc/",
        EntryType::Directory,
        b"",
        b"",
        0o750,
        1000,
        1001,
        T1,
    );
    l1.file("etc/keep", b"keep").file("etc/gone", b"gone");
    l1.dir("gonedir").file("gonedir/f", b"f");
    l1.dir("opq").file("opq/old", b"old");
    l1.raw_owned(b"deep/", EntryType::Directory, b"", b"", 0o700, 7, 8, T1);
    l1.raw_owned(
        b"deep/er/",
        EntryType::Directory,
        b"",
        b"",
        0o711,
        9,
        10,
        T2,
    );
    l1.file("deep/er/file", b"lower");
    l1.raw_owned(
        b"lowfile",
        EntryType::Regular,
        b"",
        b"shared",
        0o4750,
        1000,
        1000,
        T1,
    );
    l1.symlink("evil", "/");
    l1.dir("redo").file("redo/old", b"old");
    let r1 = apply(&l1.finish(), &a, &opts(WhiteoutMode::Overlay, &[])).unwrap();

    let mut l2 = LayerTar::new();
    l2.file("etc/.wh.gone", b"")
        .file(".wh.gonedir", b"")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"new")
        .file("deep/er/new2", b"upper")
        .hardlink("link", "lowfile")
        .dir("fresh")
        .file("fresh/.wh..wh..opq", b"")
        .file("evil/escape", b"confined")
        .file(".wh.redo", b"")
        .dir("redo")
        .file("redo/new", b"new");
    let r2 = apply(&l2.finish(), &b, &opts(WhiteoutMode::Overlay, &[&a])).unwrap();
    assert_ne!(r1.diff_id, r2.diff_id);

    // The upperdir itself.
    let wh = lstat(&b.join("etc/gone"));
    assert!(wh.file_type().is_char_device());
    assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0));
    assert!(lstat(&b.join("gonedir")).file_type().is_char_device());
    assert_eq!(
        lgetxattr(&b.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        lgetxattr(&b.join("fresh"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!exists(&b.join("opq/.wh..wh..opq")));
    assert_eq!(
        lgetxattr(&b.join("redo"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "a directory replacing this layer's whiteout hides the lower one"
    );
    for (dir, want) in [
        ("etc", (1000, 1001, 0o750, T1)),
        ("deep", (7, 8, 0o700, T1)),
        ("deep/er", (9, 10, 0o711, T2)),
    ] {
        let md = lstat(&b.join(dir));
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777, md.mtime() as u64),
            want,
            "{dir} copies the lower dir's metadata"
        );
    }
    assert!(!exists(&b.join("etc/keep")), "lower files are not copied");
    let up = lstat(&b.join("lowfile"));
    assert_eq!(
        (up.uid(), up.mode() & 0o7777, up.nlink()),
        (1000, 0o4750, 2)
    );
    assert_eq!(up.ino(), lstat(&b.join("link")).ino());
    assert_eq!(
        lstat(&a.join("lowfile")).nlink(),
        1,
        "the lower file is untouched"
    );
    assert_eq!(fs::read(b.join("evil/escape")).unwrap(), b"confined");
    assert!(!Path::new("/escape").exists());

    // The merged view, through the kernel.
    let lowerdir = format!("lowerdir={}:{}", b.display(), a.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(lowerdir.as_str()),
    )
    .expect("mount overlay");
    let _guard = Mounted(merged.clone());
    let m = |p: &str| merged.join(p);
    assert!(!exists(&m("etc/gone")));
    assert!(!exists(&m("gonedir")));
    assert_eq!(fs::read(m("etc/keep")).unwrap(), b"keep");
    let mut opq: Vec<_> = fs::read_dir(m("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    opq.sort();
    assert_eq!(opq, ["new"]);
    let redo: Vec<_> = fs::read_dir(m("redo"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(redo, ["new"]);
    assert_eq!(fs::read(m("deep/er/file")).unwrap(), b"lower");
    assert_eq!(fs::read(m("deep/er/new2")).unwrap(), b"upper");
    assert_eq!(fs::read(m("link")).unwrap(), b"shared");
    assert_eq!(lstat(&m("etc")).uid(), 1000);
}

// ------------------------------------------------------------- hostile --

/// A work dir with a sentinel directory and a host file next to the target;
/// nothing outside the target may change.
struct Arena {
    tmp: tempfile::TempDir,
}

impl Arena {
    fn new() -> Arena {
        let tmp = tempdir();
        fs::create_dir(tmp.path().join("sentinel")).unwrap();
        fs::write(tmp.path().join("sentinel/victim"), b"precious").unwrap();
        fs::write(tmp.path().join("outside"), b"host file").unwrap();
        for t in ["t1", "t2", "low"] {
            fs::create_dir(tmp.path().join(t)).unwrap();
        }
        Arena { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn check(&self, case: &str, passwd_links: u64) {
        let mut top: Vec<_> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["low", "outside", "sentinel", "t1", "t2"], "{case}");
        let mut sentinel: Vec<_> = fs::read_dir(self.path("sentinel"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        sentinel.sort();
        assert_eq!(sentinel, ["victim"], "{case}");
        assert_eq!(
            fs::read(self.path("sentinel/victim")).unwrap(),
            b"precious",
            "{case}"
        );
        assert_eq!(
            fs::read(self.path("outside")).unwrap(),
            b"host file",
            "{case}"
        );
        assert_eq!(lstat(&self.path("outside")).nlink(), 1, "{case}");
        assert_eq!(lstat(&self.path("sentinel/victim")).nlink(), 1, "{case}");
        assert_eq!(
            lstat(Path::new("/etc/passwd")).nlink(),
            passwd_links,
            "{case}"
        );
        for host in ["/escape", "/abs", "/pwned", "/tmp/escape", "/x"] {
            assert!(!exists(Path::new(host)), "{case}: {host} created");
        }
    }
}

fn outcome(case: &str, r: &Result<Applied, Error>) {
    match r {
        Ok(_) => eprintln!("{case}: confined"),
        Err(e) => eprintln!("{case}: refused: {e}"),
    }
}

#[test]
fn hostile_layers_stay_inside_the_target() {
    let passwd_links = lstat(Path::new("/etc/passwd")).nlink();
    type Build = fn(&mut LayerTar, &str);
    let cases: Vec<(&str, Build)> = vec![
        ("dotdot", |l, _| {
            l.file("../escape", b"x");
        }),
        ("absolute", |l, _| {
            l.file("/abs/escape", b"x");
        }),
        ("dotdot in the middle", |l, _| {
            l.file("a/../../escape", b"x");
        }),
        ("deep dotdot", |l, _| {
            l.dir("a").file("a/../../../../../../tmp/escape", b"x");
        }),
        ("symlink to /", |l, _| {
            l.symlink("link", "/").file("link/escape", b"x");
        }),
        ("symlink up", |l, _| {
            l.symlink("link", "../../..").file("link/escape", b"x");
        }),
        ("symlink to the sentinel", |l, s| {
            l.symlink("link", s).file("link/victim", b"pwned");
        }),
        ("dir through a symlink", |l, s| {
            l.symlink("link", s)
                .dir("link/pwned")
                .file("link/pwned/f", b"x");
        }),
        ("symlink chain", |l, s| {
            l.symlink("a", s).symlink("b", "a").file("b/pwned", b"x");
        }),
        ("whiteout through a symlink", |l, s| {
            l.symlink("link", s).file("link/.wh.victim", b"");
        }),
        ("opaque through a symlink", |l, s| {
            l.symlink("link", s).file("link/.wh..wh..opq", b"");
        }),
        ("whiteout with dotdot", |l, _| {
            l.file("../.wh.sentinel", b"");
        }),
        ("whiteout name with dots", |l, _| {
            l.file(".wh.../../x", b"");
        }),
        ("hardlink to /etc/passwd", |l, _| {
            l.hardlink("passwd", "/etc/passwd");
        }),
        ("hardlink up", |l, _| {
            l.hardlink("outside", "../outside");
        }),
        ("hardlink through a symlink", |l, s| {
            l.symlink("link", s).hardlink("stolen", "link/victim");
        }),
        ("hardlink through a symlink to /etc", |l, _| {
            l.symlink("etc", "/etc").hardlink("stolen", "etc/passwd");
        }),
        ("file replacing a symlink to outside", |l, s| {
            l.symlink("victim", &format!("{s}/victim"))
                .file("victim", b"pwned");
        }),
    ];
    for (case, build) in cases {
        for mode in [WhiteoutMode::Delete, WhiteoutMode::Overlay] {
            let arena = Arena::new();
            let mut l = LayerTar::new();
            build(&mut l, &arena.path("sentinel").display().to_string());
            let r = apply(&l.finish(), &arena.path("t1"), &opts(mode, &[]));
            outcome(&format!("{case} ({mode:?})"), &r);
            arena.check(case, passwd_links);
        }
    }

    // Refusals say which entry and why.
    let arena = Arena::new();
    let mut l = LayerTar::new();
    l.file("etc/../../x", b"x");
    let err = apply(
        &l.finish(),
        &arena.path("t1"),
        &opts(WhiteoutMode::Delete, &[]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "layer entry \"etc/../../x\": escapes the root"
    );
    arena.check("message", passwd_links);

    // A symlink to `/` is followed inside the root only.
    let arena = Arena::new();
    let mut l = LayerTar::new();
    l.symlink("link", "/").file("link/escape", b"x");
    apply(
        &l.finish(),
        &arena.path("t1"),
        &opts(WhiteoutMode::Delete, &[]),
    )
    .unwrap();
    assert_eq!(fs::read(arena.path("t1/escape")).unwrap(), b"x");
    arena.check("confined", passwd_links);
}

#[test]
fn symlinks_planted_by_an_earlier_layer_stay_inside() {
    let passwd_links = lstat(Path::new("/etc/passwd")).nlink();
    for mode in [WhiteoutMode::Delete, WhiteoutMode::Overlay] {
        let arena = Arena::new();
        let sentinel = arena.path("sentinel").display().to_string();
        let mut l1 = LayerTar::new();
        l1.symlink("link", &sentinel)
            .symlink("up", "../../../..")
            .symlink("root", "/")
            .symlink("victim", &format!("{sentinel}/victim"));
        let mut l2 = LayerTar::new();
        l2.file("link/pwned", b"x")
            .file("link/victim", b"pwned")
            .file("up/escape", b"x")
            .file("root/pwned", b"x")
            .dir("link/newdir")
            .file("link/.wh.victim", b"")
            .file("victim", b"replaced, not written through")
            .hardlink("stolen", "link/victim");
        let (l1, l2) = (l1.finish(), l2.finish());
        let (first, second, lowers) = match mode {
            // Same target: the symlinks are in the tree being written.
            WhiteoutMode::Delete => (arena.path("t1"), arena.path("t1"), vec![]),
            // LayerTar 1 is a lower dir of layer 2.
            WhiteoutMode::Overlay => (arena.path("low"), arena.path("t2"), vec![arena.path("low")]),
        };
        apply(&l1, &first, &opts(mode, &[])).unwrap();
        // Apply each hostile entry of layer 2 on its own, so one refusal does
        // not hide the others.
        let mut archive = tar::Archive::new(&l2[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut single = tar::Builder::new(Vec::new());
            let header = entry.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            single.append(&header, &data[..]).unwrap();
            let single = single.into_inner().unwrap();
            let lower_refs: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
            let r = apply(&single, &second, &opts(mode, &lower_refs));
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            outcome(&format!("layer 2 {name} ({mode:?})"), &r);
            arena.check(&name, passwd_links);
        }
        assert_eq!(
            fs::read(second.join("victim")).unwrap(),
            b"replaced, not written through"
        );
        if mode == WhiteoutMode::Delete {
            // `link` points at the sentinel's absolute path: inside the root.
            let inside = second.join(sentinel.trim_start_matches('/'));
            assert_eq!(fs::read(inside.join("pwned")).unwrap(), b"x");
        }
    }
}

#[test]
fn broken_streams_are_errors_not_panics() {
    let mut l = LayerTar::new();
    l.file("f", &vec![7u8; 300_000]).file("g", b"g");
    let tar = l.finish();
    let gz = gzip(&tar);
    let zs = zstd(&tar);
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, Compression, ErrorKind)> = vec![
        (
            "truncated gzip",
            gz[..gz.len() / 2].to_vec(),
            Compression::Gzip,
            ErrorKind::DataLoss,
        ),
        (
            "gzip without trailer",
            gz[..gz.len() - 4].to_vec(),
            Compression::Gzip,
            ErrorKind::DataLoss,
        ),
        (
            "garbage gzip",
            garbage.clone(),
            Compression::Gzip,
            ErrorKind::DataLoss,
        ),
        (
            "truncated zstd",
            zs[..zs.len() / 2].to_vec(),
            Compression::Zstd,
            ErrorKind::DataLoss,
        ),
        (
            "garbage zstd",
            garbage.clone(),
            Compression::Zstd,
            ErrorKind::DataLoss,
        ),
        (
            "truncated tar",
            tar[..100_000].to_vec(),
            Compression::None,
            ErrorKind::DataLoss,
        ),
        (
            "garbage tar",
            garbage.clone(),
            Compression::None,
            ErrorKind::InvalidArgument,
        ),
        (
            "gzip with trailing garbage",
            [gz.clone(), garbage.clone()].concat(),
            Compression::Gzip,
            ErrorKind::DataLoss,
        ),
    ];
    for (case, blob, compression, kind) in cases {
        let tmp = tempdir();
        let err = apply_layer(
            &blob[..],
            compression,
            tmp.path(),
            &opts(WhiteoutMode::Delete, &[]),
        )
        .map(|a| a.entries)
        .expect_err(case);
        eprintln!("{case}: {err}");
        assert_eq!(err.kind(), kind, "{case}: {err}");
    }

    // A refusal at the first entry stops the whole pipeline, however much
    // input is left.
    let mut l = LayerTar::new();
    l.file("../escape", b"x").file("big", &vec![1u8; 64 << 20]);
    let big = gzip(&l.finish());
    let tmp = tempdir();
    let err = apply_layer(
        &big[..],
        Compression::Gzip,
        tmp.path(),
        &opts(WhiteoutMode::Delete, &[]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(!exists(&tmp.path().join("big")));

    let err = apply_layer(
        &tar[..],
        Compression::None,
        Path::new("/nonexistent/target"),
        &opts(WhiteoutMode::Delete, &[]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

// ------------------------------------------------------------ by hand --

/// A tmpfs on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempdir();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=4g"),
        )
        .expect("mount tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Unpacks a gzip layer into tmpfs with berth and with GNU tar, three times
/// each, and prints the times. Not timed by the test suite; run it as
/// `BERTH_UNPACK_BENCH=layer.tar.gz cargo test --release --test unpack --
/// --ignored --nocapture throughput`.
#[test]
#[ignore = "throughput check, run by hand with BERTH_UNPACK_BENCH=<layer.tar.gz>"]
fn throughput_against_gnu_tar() {
    let Some(layer) = std::env::var_os("BERTH_UNPACK_BENCH") else {
        eprintln!("set BERTH_UNPACK_BENCH to a .tar.gz file");
        return;
    };
    let layer = PathBuf::from(layer);
    for round in 1..=3 {
        let ours = Tmpfs::new();
        let cpu_before = cpu_seconds(nix::sys::resource::UsageWho::RUSAGE_SELF);
        let start = std::time::Instant::now();
        let applied = apply_layer(
            fs::File::open(&layer).unwrap(),
            Compression::Gzip,
            ours.path(),
            &opts(WhiteoutMode::Delete, &[]),
        )
        .unwrap();
        let berth = start.elapsed();
        let berth_cpu = cpu_seconds(nix::sys::resource::UsageWho::RUSAGE_SELF) - cpu_before;
        let children_before = cpu_seconds(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);

        let theirs = Tmpfs::new();
        let start = std::time::Instant::now();
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&layer)
            .arg("-C")
            .arg(theirs.path())
            .status()
            .unwrap();
        let gnu = start.elapsed();
        let gnu_cpu = cpu_seconds(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) - children_before;
        assert!(status.success());
        eprintln!(
            "round {round}: berth {:.2}s ({berth_cpu:.2}s CPU), GNU tar -xzf {:.2}s \
             ({gnu_cpu:.2}s CPU) ({} entries, {} MB uncompressed)",
            berth.as_secs_f64(),
            gnu.as_secs_f64(),
            applied.entries,
            applied.uncompressed_size / 1_000_000
        );
        if round == 1 {
            // Directories the tar does not list get the time of creation.
            let listed = |root: &Path| {
                let mut tree = snapshot(root);
                tree.retain(|path, desc| !desc.starts_with("40") || listed_dir(&layer, path));
                tree
            };
            assert_eq!(listed(ours.path()), listed(theirs.path()));
        }
    }
}

/// Whether the tar at `layer` has an entry for the directory `path`.
fn listed_dir(layer: &Path, path: &Path) -> bool {
    use std::sync::OnceLock;
    static DIRS: OnceLock<std::collections::HashSet<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let gz = flate2::read::MultiGzDecoder::new(fs::File::open(layer).unwrap());
        let mut archive = tar::Archive::new(gz);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_dir())
            .map(|e| e.path().unwrap().components().collect())
            .collect()
    })
    .contains(path)
}

/// User and system CPU time, in seconds.
fn cpu_seconds(who: nix::sys::resource::UsageWho) -> f64 {
    let usage = nix::sys::resource::getrusage(who).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}
