//! The snapshotter conformance suite: every case is written once, as a
//! function taking a [`Subject`], and `conformance!` runs it against each
//! snapshotter (`overlayfs::<case>`, `native::<case>`). A new snapshotter is
//! done when it passes them all.
//!
//! Cases that need other processes re-run this test binary with
//! `BERTH_SNAPSHOT_HELPER` set: the `helper` test then plays that process
//! (and is a no-op in a normal run).
//!
//! Every mount is undone by a [`Mounted`] guard and every store lives in a
//! temp dir, also when a case panics. Mounting needs root; as another user
//! each case says so and passes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::snapshot::{self, Filter, Kind, Labels, Snapshotter, WhiteoutStyle, OWNER_LABEL};
use berth::ErrorKind;
use nix::mount::MntFlags;
use tempfile::TempDir;

const HELPER_ENV: &str = "BERTH_SNAPSHOT_HELPER";

/// One snapshotter on its own throwaway store.
struct Subject {
    name: &'static str,
    sn: Box<dyn Snapshotter>,
    mounts: usize,
    // Last: dropped after the snapshotter, and after any guard a case holds.
    dir: TempDir,
}

impl Subject {
    fn new(name: &'static str) -> Subject {
        let dir = tempfile::Builder::new()
            .prefix("berth-snap-")
            .tempdir()
            .expect("creating a temp store");
        let sn = snapshot::open(dir.path(), name).expect("opening the snapshotter");
        Subject {
            name,
            sn,
            mounts: 0,
            dir,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Mounts `key` at a fresh directory; unmounted when the guard drops.
    fn mount(&mut self, key: &str) -> Mounted {
        self.mounts += 1;
        let target = self.root().join(format!("mnt{}", self.mounts));
        fs::create_dir(&target).unwrap();
        let mounts = self.sn.mounts(key).unwrap();
        snapshot::mount::mount_all(&mounts, &target)
            .unwrap_or_else(|e| panic!("mounting {key}: {e}"));
        Mounted { target }
    }

    /// Prepares `key` on `parent`, puts `files` into it, commits it as `name`.
    fn layer(&self, name: &str, parent: Option<&str>, files: &[(&str, &str)]) {
        let key = format!("{name}-active");
        self.sn.prepare(&key, parent, &Labels::new()).unwrap();
        let upper = self.sn.upper_dir(&key).unwrap();
        for (path, content) in files {
            let path = upper.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        self.sn.commit(name, &key, &Labels::new()).unwrap();
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.root()
            .join("snapshots")
            .join(self.name)
            .join(id.to_string())
    }
}

/// A mount made by a test, detached on drop even when the test panics.
struct Mounted {
    target: PathBuf,
}

impl Mounted {
    fn path(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }

    /// Unmounts through berth's own helper, which must succeed.
    fn unmount(self) {
        snapshot::unmount(&self.target).expect("unmounting");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Already gone after `unmount`: EINVAL, ignored.
        let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kind_of(e: snapshot::Error) -> ErrorKind {
    e.kind()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod overlayfs {
            $(#[test]
            fn $case() {
                if super::is_root() {
                    super::$case(super::Subject::new("overlayfs"));
                } else {
                    eprintln!("skipped: mounting needs root");
                }
            })*
        }
        mod native {
            $(#[test]
            fn $case() {
                if super::is_root() {
                    super::$case(super::Subject::new("native"));
                } else {
                    eprintln!("skipped: mounting needs root");
                }
            })*
        }
    };
}

conformance!(
    prepare_write_commit_then_view_of_child,
    direct_writes_and_deletions,
    labels_update_and_commit,
    remove_refused_while_children_exist,
    remove_active_and_mounted,
    stat_and_walk_kinds,
    usage_grows_with_data,
    errors_have_kinds,
    chain_of_128_layers_mounts,
    child_sees_parent_metadata,
    two_processes_prepare_and_commit_at_once,
    killed_between_prepare_and_commit,
);

fn prepare_write_commit_then_view_of_child(mut s: Subject) {
    s.sn.prepare("a", None, &Labels::new()).unwrap();
    let m = s.mount("a");
    fs::write(m.path("foo"), "foo").unwrap();
    fs::create_dir(m.path("dir")).unwrap();
    m.unmount();
    s.sn.commit("base", "a", &Labels::new()).unwrap();
    assert_eq!(kind_of(s.sn.stat("a").unwrap_err()), ErrorKind::NotFound);

    s.sn.prepare("b", Some("base"), &Labels::new()).unwrap();
    let m = s.mount("b");
    assert_eq!(fs::read_to_string(m.path("foo")).unwrap(), "foo");
    fs::write(m.path("dir/bar"), "bar").unwrap();
    fs::write(m.path("foo"), "foo2").unwrap();
    m.unmount();
    s.sn.commit("child", "b", &Labels::new()).unwrap();

    s.sn.view("v", Some("child"), &Labels::new()).unwrap();
    let v = s.mount("v");
    assert_eq!(fs::read_to_string(v.path("foo")).unwrap(), "foo2");
    assert_eq!(fs::read_to_string(v.path("dir/bar")).unwrap(), "bar");
    let err = fs::write(v.path("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "a view is read-only");
    drop(v);

    // The base layer did not change under the child.
    s.sn.view("vb", Some("base"), &Labels::new()).unwrap();
    let vb = s.mount("vb");
    assert_eq!(fs::read_to_string(vb.path("foo")).unwrap(), "foo");
    assert!(!vb.path("dir/bar").exists());
}

fn direct_writes_and_deletions(mut s: Subject) {
    s.layer("base", None, &[("keep", "1"), ("gone", "2"), ("d/x", "3")]);
    s.sn.prepare("work", Some("base"), &Labels::new()).unwrap();
    let upper = s.sn.upper_dir("work").unwrap();
    let lowers = s.sn.lower_dirs("work").unwrap();
    match s.sn.whiteout_style() {
        WhiteoutStyle::Overlay => {
            assert_eq!(lowers.len(), 1);
            assert!(lowers[0].join("gone").is_file());
            assert!(!upper.join("keep").exists(), "overlay upper starts empty");
            nix::sys::stat::mknod(
                &upper.join("gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
        }
        WhiteoutStyle::Delete => {
            assert!(lowers.is_empty());
            assert!(
                upper.join("keep").is_file(),
                "native upper is the whole tree"
            );
            fs::remove_file(upper.join("gone")).unwrap();
        }
    }
    fs::write(upper.join("added"), "4").unwrap();
    s.sn.commit("top", "work", &Labels::new()).unwrap();
    let err = s.sn.upper_dir("top").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    s.sn.view("v", Some("top"), &Labels::new()).unwrap();
    let v = s.mount("v");
    let mut names: Vec<String> = fs::read_dir(&v.target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["added", "d", "keep"]);
}

fn labels_update_and_commit(s: Subject) {
    let first = {
        s.sn.prepare("a", None, &labels(&[("x", "1")])).unwrap();
        s.sn.stat("a").unwrap()
    };
    assert_eq!(first.labels, labels(&[("x", "1")]));
    std::thread::sleep(Duration::from_millis(2));
    let info = s.sn.update("a", &labels(&[("y", "2")])).unwrap();
    assert_eq!(info.labels, labels(&[("x", "1"), ("y", "2")]));
    assert!(info.updated_ns > first.updated_ns);
    assert_eq!(info.created_ns, first.created_ns);
    let info = s.sn.update("a", &labels(&[("x", "")])).unwrap();
    assert_eq!(info.labels, labels(&[("y", "2")]));
    assert_eq!(s.sn.stat("a").unwrap().labels, labels(&[("y", "2")]));
    let committed = s.sn.commit("c", "a", &labels(&[("z", "3")])).unwrap();
    assert_eq!(committed.labels, labels(&[("z", "3")]));
    assert_eq!(committed.id, first.id, "commit keeps the data where it is");
    let err = s.sn.update("nope", &Labels::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

fn remove_refused_while_children_exist(s: Subject) {
    s.layer("base", None, &[("f", "x")]);
    s.layer("mid", Some("base"), &[("g", "y")]);
    s.sn.prepare("top", Some("mid"), &Labels::new()).unwrap();
    s.sn.view("look", Some("base"), &Labels::new()).unwrap();
    let base_id = s.sn.stat("base").unwrap().id;

    for key in ["base", "mid"] {
        let err = s.sn.remove(key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("children"), "{err}");
        assert_eq!(s.sn.stat(key).unwrap().kind, Kind::Committed);
    }
    s.sn.remove("top").unwrap();
    s.sn.remove("mid").unwrap();
    assert!(s.sn.remove("base").is_err(), "the view is still a child");
    s.sn.remove("look").unwrap();
    s.sn.remove("base").unwrap();
    assert_eq!(s.sn.stat("base").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(
        !s.data_dir(base_id).exists(),
        "data removed with the record"
    );
    assert!(s.sn.walk(&Filter::default()).unwrap().is_empty());
}

fn remove_active_and_mounted(mut s: Subject) {
    s.layer("base", None, &[("f", "x")]);
    s.sn.prepare("a", Some("base"), &Labels::new()).unwrap();
    let id = s.sn.stat("a").unwrap().id;
    let m = s.mount("a");
    fs::write(m.path("data"), vec![7u8; 10_000]).unwrap();
    let err = s.sn.remove("a").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    m.unmount();
    s.sn.remove("a").unwrap();
    assert_eq!(s.sn.stat("a").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!s.data_dir(id).exists());
    assert_eq!(s.sn.remove("a").unwrap_err().kind(), ErrorKind::NotFound);
    // The key is free again, with a new id.
    s.sn.prepare("a", Some("base"), &Labels::new()).unwrap();
    assert!(s.sn.stat("a").unwrap().id > id);
}

fn stat_and_walk_kinds(s: Subject) {
    s.layer("base", None, &[]);
    s.sn.prepare("act", Some("base"), &labels(&[("role", "work")]))
        .unwrap();
    s.sn.view("vw", Some("base"), &Labels::new()).unwrap();
    let base = s.sn.stat("base").unwrap();
    assert_eq!((base.kind, base.parent.as_deref()), (Kind::Committed, None));
    let act = s.sn.stat("act").unwrap();
    assert_eq!(
        (act.kind, act.parent.as_deref()),
        (Kind::Active, Some("base"))
    );
    assert_eq!(s.sn.stat("vw").unwrap().kind, Kind::View);

    let all = s.sn.walk(&Filter::default()).unwrap();
    let keys: Vec<&str> = all.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["base", "act", "vw"]);
    for info in &all {
        assert_eq!(info, &s.sn.stat(&info.key).unwrap());
    }
    let only =
        |f: Filter| -> Vec<String> { s.sn.walk(&f).unwrap().into_iter().map(|i| i.key).collect() };
    let views = Filter {
        kind: Some(Kind::View),
        ..Filter::default()
    };
    assert_eq!(only(views), ["vw"]);
    let children = Filter {
        parent: Some("base".into()),
        ..Filter::default()
    };
    assert_eq!(only(children), ["act", "vw"]);
    let labelled = Filter {
        labels: vec![("role".into(), Some("work".into()))],
        ..Filter::default()
    };
    assert_eq!(only(labelled), ["act"]);
    // Ids are distinct.
    let mut ids: Vec<u64> = all.iter().map(|i| i.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

fn usage_grows_with_data(s: Subject) {
    s.sn.prepare("a", None, &Labels::new()).unwrap();
    let empty = s.sn.usage("a").unwrap();
    let upper = s.sn.upper_dir("a").unwrap();
    fs::write(upper.join("big"), vec![1u8; 1 << 20]).unwrap();
    fs::hard_link(upper.join("big"), upper.join("big2")).unwrap();
    let full = s.sn.usage("a").unwrap();
    assert!(full.size >= empty.size + (1 << 20), "{empty:?} -> {full:?}");
    assert_eq!(full.inodes, empty.inodes + 1, "a hard link is one inode");
    s.sn.commit("c", "a", &Labels::new()).unwrap();
    assert_eq!(s.sn.usage("c").unwrap(), full);
    // A child's own usage does not include its parent's data (overlay), or
    // holds the copy (native).
    s.sn.prepare("b", Some("c"), &Labels::new()).unwrap();
    let child = s.sn.usage("b").unwrap();
    match s.sn.whiteout_style() {
        WhiteoutStyle::Overlay => assert!(child.size < 1 << 20, "{child:?}"),
        WhiteoutStyle::Delete => assert_eq!(child.inodes, full.inodes),
    }
}

fn errors_have_kinds(s: Subject) {
    s.layer("base", None, &[]);
    s.sn.prepare("act", Some("base"), &Labels::new()).unwrap();
    s.sn.view("vw", Some("base"), &Labels::new()).unwrap();
    let kind = |r: snapshot::Result<Vec<snapshot::Mount>>| r.unwrap_err().kind();
    let none = Labels::new();
    assert_eq!(
        kind(s.sn.prepare("act", None, &none)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.sn.prepare("base", None, &none)),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.sn.prepare("x", Some("nope"), &none)),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(s.sn.prepare("x", Some("act"), &none)),
        ErrorKind::FailedPrecondition,
        "an active snapshot is no parent"
    );
    assert_eq!(
        kind(s.sn.view("x", Some("vw"), &none)),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(s.sn.prepare("", None, &none)),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.sn.commit("c", "vw", &none).unwrap_err().kind(),
        ErrorKind::FailedPrecondition,
        "a view cannot be committed"
    );
    assert_eq!(
        s.sn.commit("c", "base", &none).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        s.sn.commit("base", "act", &none).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(s.sn.stat("act").unwrap().kind, Kind::Active, "still active");
    assert_eq!(s.sn.mounts("nope").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.sn.usage("nope").unwrap_err().kind(), ErrorKind::NotFound);
    // Nothing the refusals touched left a directory behind.
    let report = s.sn.cleanup().unwrap();
    assert!(report.orphan_dirs.is_empty(), "{report:?}");
}

fn chain_of_128_layers_mounts(mut s: Subject) {
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let name = format!("layer{i}");
        let file = format!("f{i}");
        s.layer(&name, parent.as_deref(), &[(&file, &name)]);
        parent = Some(name);
    }
    s.sn.prepare("top", parent.as_deref(), &Labels::new())
        .unwrap();
    assert_eq!(
        s.sn.lower_dirs("top").unwrap().len(),
        match s.name {
            "overlayfs" => 128,
            _ => 0,
        }
    );
    let m = s.mount("top");
    for i in 0..128 {
        let text = fs::read_to_string(m.path(&format!("f{i}"))).unwrap();
        assert_eq!(text, format!("layer{i}"));
    }
    fs::write(m.path("top-file"), "t").unwrap();
    drop(m);
    s.sn.view("look", parent.as_deref(), &Labels::new())
        .unwrap();
    let v = s.mount("look");
    assert_eq!(fs::read_dir(&v.target).unwrap().count(), 128);
}

/// Modes, owners, links, special files, xattrs and times of a parent's
/// files, as a child sees them through its mount.
fn child_sees_parent_metadata(mut s: Subject) {
    use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use nix::unistd::{fchownat, Gid, Uid};

    s.sn.prepare("a", None, &Labels::new()).unwrap();
    let up = s.sn.upper_dir("a").unwrap();
    let chown = |p: &Path, u, g| {
        fchownat(
            nix::fcntl::AT_FDCWD,
            p,
            Some(Uid::from_raw(u)),
            Some(Gid::from_raw(g)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    let old = TimeSpec::new(1_500_000_000, 123_000);
    let stamp = |p: &Path| {
        utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap()
    };
    fs::create_dir(up.join("dir")).unwrap();
    fs::write(up.join("dir/suid"), "#!/bin/sh\n").unwrap();
    chown(&up.join("dir/suid"), 1234, 5678);
    fs::set_permissions(up.join("dir/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(up.join("dir/suid"), up.join("hard")).unwrap();
    std::os::unix::fs::symlink("dir/suid", up.join("sym")).unwrap();
    chown(&up.join("sym"), 7, 8);
    mknod(
        &up.join("fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )
    .unwrap();
    mknod(
        &up.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    let xattr_ok = set_xattr(&up.join("dir/suid"), "user.berth", b"yes");
    stamp(&up.join("dir/suid"));
    stamp(&up.join("sym"));
    chown(&up.join("dir"), 42, 43);
    fs::set_permissions(up.join("dir"), fs::Permissions::from_mode(0o2750)).unwrap();
    stamp(&up.join("dir"));
    s.sn.commit("base", "a", &Labels::new()).unwrap();

    s.sn.prepare("b", Some("base"), &Labels::new()).unwrap();
    let m = s.mount("b");
    let meta = |rel: &str| fs::symlink_metadata(m.path(rel)).unwrap();
    let suid = meta("dir/suid");
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
    assert_eq!((suid.mtime(), suid.mtime_nsec()), (1_500_000_000, 123_000));
    assert_eq!(suid.nlink(), 2);
    assert_eq!(meta("hard").ino(), suid.ino(), "hard links stay one inode");
    let sym = meta("sym");
    assert!(sym.file_type().is_symlink());
    assert_eq!(fs::read_link(m.path("sym")).unwrap(), Path::new("dir/suid"));
    assert_eq!((sym.uid(), sym.gid(), sym.mtime()), (7, 8, 1_500_000_000));
    let fifo = meta("fifo");
    assert_eq!(fifo.mode() & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    let null = meta("null");
    assert_eq!(null.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(null.rdev(), makedev(1, 3));
    let dir = meta("dir");
    assert_eq!(dir.mode() & 0o7777, 0o2750);
    assert_eq!((dir.uid(), dir.gid(), dir.mtime()), (42, 43, 1_500_000_000));
    if xattr_ok {
        assert_eq!(
            get_xattr(&m.path("dir/suid"), "user.berth"),
            Some(b"yes".to_vec())
        );
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a live slice, for one call.
    unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; buf has buf.len() writable bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// Runs this test binary as a helper process (see [`helper`]).
fn spawn_helper(s: &Subject, mode: &str, vars: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, mode)
        // The harness's own "running 1 test" lines; panics go to stderr.
        .stdout(Stdio::null())
        .env("HELPER_ROOT", s.root())
        .env("HELPER_SNAPSHOTTER", s.name);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning the helper")
}

fn wait_for(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("helper exited early: {status}");
        }
        assert!(Instant::now() < deadline, "helper never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills and reaps a helper on drop, so none outlives a failed case.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn two_processes_prepare_and_commit_at_once(s: Subject) {
    s.layer("base", None, &[("f", "x")]);
    let go = s.root().join("go");
    let go_text = go.to_str().unwrap();
    let mut children: Vec<Reaped> = ["p", "q"]
        .into_iter()
        .map(|prefix| {
            Reaped(spawn_helper(
                &s,
                "race",
                &[
                    ("HELPER_PARENT", "base"),
                    ("HELPER_PREFIX", prefix),
                    ("HELPER_GO", go_text),
                ],
            ))
        })
        .collect();
    // Both processes are up (opened the store) before either starts.
    std::thread::sleep(Duration::from_millis(200));
    fs::write(&go, "").unwrap();
    for child in &mut children {
        let status = child.0.wait().unwrap();
        assert!(status.success(), "a racing process failed: {status}");
    }
    let committed =
        s.sn.walk(&Filter {
            kind: Some(Kind::Committed),
            parent: Some("base".into()),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(committed.len(), 2 * RACE_ROUNDS);
    let mut ids: Vec<u64> = committed.iter().map(|i| i.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * RACE_ROUNDS, "ids are unique");
    for info in &committed {
        let upper = s.data_dir(info.id).join("fs");
        assert_eq!(fs::read_to_string(upper.join("who")).unwrap(), info.key);
    }
}

const RACE_ROUNDS: usize = 8;

fn killed_between_prepare_and_commit(s: Subject) {
    s.layer("base", None, &[("f", "x")]);
    let ready = s.root().join("ready");
    let mut child = Reaped(spawn_helper(
        &s,
        "hold",
        &[
            ("HELPER_PARENT", "base"),
            ("HELPER_KEY", "work"),
            ("HELPER_GO", ready.to_str().unwrap()),
        ],
    ));
    wait_for(&ready, &mut child.0);
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    // What it prepared is there, active, and nothing was committed.
    let work = s.sn.stat("work").unwrap();
    assert_eq!(work.kind, Kind::Active);
    assert!(work.labels.contains_key(OWNER_LABEL));
    let committed: Vec<String> =
        s.sn.walk(&Filter {
            kind: Some(Kind::Committed),
            ..Filter::default()
        })
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(committed, ["base"]);

    // A prepare cut short before its record: a directory nobody names.
    let orphan = s.data_dir(999);
    fs::create_dir_all(orphan.join("fs/deep")).unwrap();
    // A snapshot a live process owns, and one nobody owns, must stay.
    let mine = labels(&[(OWNER_LABEL, &snapshot::process_owner())]);
    s.sn.prepare("mine", Some("base"), &mine).unwrap();
    s.sn.prepare("kept", Some("base"), &Labels::new()).unwrap();

    let report = s.sn.cleanup().unwrap();
    assert_eq!(report.stale_snapshots, ["work"]);
    assert_eq!(report.orphan_dirs, std::slice::from_ref(&orphan));
    assert!(!orphan.exists());
    assert!(!s.data_dir(work.id).exists());
    assert_eq!(s.sn.stat("work").unwrap_err().kind(), ErrorKind::NotFound);
    s.sn.stat("mine").unwrap();
    s.sn.stat("kept").unwrap();
    assert_eq!(s.sn.cleanup().unwrap(), Default::default(), "idempotent");
}

/// The other process of the multi-process cases; a no-op in a normal run.
#[test]
fn helper() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap();
    let root = PathBuf::from(var("HELPER_ROOT"));
    let name: &'static str = match var("HELPER_SNAPSHOTTER").as_str() {
        "overlayfs" => "overlayfs",
        _ => "native",
    };
    let sn = snapshot::open(&root, name).unwrap();
    let parent = var("HELPER_PARENT");
    let go = PathBuf::from(var("HELPER_GO"));
    match mode.as_str() {
        "race" => {
            let prefix = var("HELPER_PREFIX");
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
            for i in 0..RACE_ROUNDS {
                let key = format!("{prefix}-active{i}");
                let name = format!("{prefix}-layer{i}");
                sn.prepare(&key, Some(&parent), &Labels::new()).unwrap();
                fs::write(sn.upper_dir(&key).unwrap().join("who"), &name).unwrap();
                sn.commit(&name, &key, &Labels::new()).unwrap();
            }
        }
        "hold" => {
            let key = var("HELPER_KEY");
            let owned = BTreeMap::from([(OWNER_LABEL.to_string(), snapshot::process_owner())]);
            sn.prepare(&key, Some(&parent), &owned).unwrap();
            fs::write(sn.upper_dir(&key).unwrap().join("half"), "done").unwrap();
            fs::write(&go, "").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            panic!("the test should have killed this helper");
        }
        other => panic!("unknown helper mode {other}"),
    }
}
