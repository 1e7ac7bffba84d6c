//! berth-pull unpacks while it pulls: the rootfs it produces, mounted from
//! the top snapshot, must equal `umoci unpack` of the same image, for both
//! snapshotters; images on a shared base share its snapshots.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth::snapshot::{self, Labels};
use common::*;

fn pull(root: &TempRoot, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin("berth-pull"))
        .arg("--root")
        .arg(root.path())
        .args(["--format", "json"])
        .args(args)
        .env("BERTH_CONFIG", "/dev/null")
        .env("DOCKER_CONFIG", root.path().join("no-docker-config"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "berth-pull {args:?}: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

/// Layer 1 sets the scene; layer 2 deletes, hides, replaces and links.
fn tricky_image(tag: &str) -> OciImage {
    let mut l1 = LayerTar::new();
    l1.dir("srv")
        .file("srv/keep.txt", b"keep")
        .owned("srv/user1000.txt", b"owned by 1000", 1000, 0o640)
        .owned("srv/setuid", b"#!/bin/sh\n", 0, 0o4755)
        .file("srv/odd name with spaces", b"spaces")
        .file("srv/\u{00e9}t\u{00e9}-\u{2603}.txt", b"unicode")
        .long_file(
            &format!("srv/{}", "long".repeat(40)),
            b"a 160-character name",
        )
        .symlink("srv/abs-link", "/etc/passwd")
        .symlink("srv/rel-link", "keep.txt")
        .hardlink("srv/hard-keep", "srv/keep.txt")
        .fifo("srv/fifo")
        .file("srv/delete-me", b"gone in layer 2")
        .dir("srv/delete-dir")
        .file("srv/delete-dir/inner", b"gone too")
        .dir("srv/opaque")
        .file("srv/opaque/old", b"hidden by layer 2")
        .file("srv/file-to-dir", b"a file, then a dir")
        .dir("srv/dir-to-file")
        .file("srv/dir-to-file/child", b"a dir, then a file");
    let mut l2 = LayerTar::new();
    l2.dir("srv")
        .file("srv/.wh.delete-me", b"")
        .file("srv/.wh.delete-dir", b"")
        .dir("srv/opaque")
        .file("srv/opaque/.wh..wh..opq", b"")
        .file("srv/opaque/new", b"only this remains")
        .dir("srv/file-to-dir")
        .file("srv/file-to-dir/child", b"now a dir")
        .file("srv/dir-to-file", b"now a file")
        .hardlink("srv/hard-user", "srv/user1000.txt")
        .file("bin/.wh.ls", b"");
    ImageBuilder::new(tag)
        .tar_layer(l1.finish())
        .tar_layer(l2.finish())
        .build()
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: Option<Digest>,
    link: Option<PathBuf>,
    rdev: u64,
    hardlinks: BTreeSet<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every path under `root` (the root itself excepted), with what a
/// container would see of it.
fn walk(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut by_inode: HashMap<u64, BTreeSet<PathBuf>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else {
                "other"
            };
            if ft.is_file() && meta.nlink() > 1 {
                by_inode.entry(meta.ino()).or_default().insert(rel.clone());
            }
            let xattrs = xattr_list(&path)
                .into_iter()
                .filter(|k| !k.starts_with("trusted.overlay."))
                .map(|k| {
                    let v = xattr_get(&path, &k);
                    (k, v)
                })
                .collect();
            out.insert(
                rel,
                Node {
                    kind: kind.to_string(),
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: if ft.is_file() { meta.len() } else { 0 },
                    content: ft
                        .is_file()
                        .then(|| Digest::of(&std::fs::read(&path).unwrap())),
                    link: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                    rdev: meta.rdev(),
                    hardlinks: BTreeSet::new(),
                    xattrs,
                },
            );
        }
    }
    for group in by_inode.values() {
        for p in group {
            out.get_mut(p).unwrap().hardlinks = group.clone();
        }
    }
    out
}

fn xattr_list(path: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: c is a valid C string and buf is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn xattr_get(path: &Path, name: &str) -> Vec<u8> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let k = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: both are valid C strings and buf is writable for its length.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf
}

/// A snapshot view mounted on a temp dir; unmounted and removed on drop.
struct MountedView {
    target: tempfile::TempDir,
    snapshotter: Box<dyn snapshot::Snapshotter>,
    key: String,
}

impl MountedView {
    fn new(root: &Path, snapshotter: &str, parent: &str) -> MountedView {
        let sn = snapshot::open(root, snapshotter).unwrap();
        let key = format!("test-view-{}", std::process::id());
        let mounts = sn.view(&key, Some(parent), &Labels::new()).unwrap();
        let target = tempfile::tempdir().unwrap();
        snapshot::mount::mount_all(&mounts, target.path()).unwrap();
        MountedView {
            target,
            snapshotter: sn,
            key,
        }
    }
}

impl Drop for MountedView {
    fn drop(&mut self) {
        let _ = snapshot::unmount(self.target.path());
        let _ = self.snapshotter.remove(&self.key);
    }
}

fn umoci_rootfs(image: &OciImage) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{}", image.layout.display(), image.tag))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn assert_same_tree(ours: &BTreeMap<PathBuf, Node>, theirs: &BTreeMap<PathBuf, Node>) {
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only berth: {only_ours:?}\nonly umoci: {only_theirs:?}"
    );
    for (path, node) in ours {
        assert_eq!(
            node,
            &theirs[path],
            "{} differs (left berth, right umoci)",
            path.display()
        );
    }
}

fn reference_test(snapshotter: &str) {
    let registry = Registry::start();
    let image = tricky_image("tricky");
    push_oci(&image, &registry, "tricky:v1");
    let root = TempRoot::new();
    let res = pull(
        &root,
        &[
            "--snapshotter",
            snapshotter,
            &registry.reference("tricky:v1"),
        ],
    );
    let unpacked = &res["unpacked"];
    assert_eq!(unpacked["snapshotter"], snapshotter);
    assert_eq!(unpacked["layers_unpacked"], 3);
    let top = unpacked["snapshot"].as_str().unwrap().to_string();
    let chain = berth::image::chain_ids(&image.diff_ids());
    assert_eq!(top, chain.last().unwrap().to_string());

    let view = MountedView::new(root.path(), snapshotter, &top);
    let ours = walk(view.target.path());
    let umoci = umoci_rootfs(&image);
    let theirs = walk(&umoci.path().join("bundle/rootfs"));
    assert!(ours.contains_key(Path::new("srv/opaque/new")));
    assert!(!ours.contains_key(Path::new("srv/opaque/old")));
    assert!(!ours.contains_key(Path::new("bin/ls")));
    assert!(!ours.contains_key(Path::new("srv/delete-dir")));
    let node = |p: &str| &ours[Path::new(p)];
    assert_eq!(node("bin/busybox").kind, "file");
    assert_eq!(node("bin/sh").kind, "symlink");
    assert_eq!(node("srv/file-to-dir").kind, "dir");
    assert_eq!(node("srv/dir-to-file").kind, "file");
    assert_eq!(node("srv/fifo").kind, "fifo");
    assert_eq!(node("srv/setuid").mode, 0o4755);
    assert_eq!(
        (node("srv/user1000.txt").uid, node("srv/user1000.txt").gid),
        (1000, 1000)
    );
    assert_eq!(node("srv/hard-keep").hardlinks.len(), 2);
    assert_eq!(node("srv/hard-user").hardlinks.len(), 2);
    assert_eq!(
        node("srv/abs-link").link.as_deref(),
        Some(Path::new("/etc/passwd"))
    );
    assert_same_tree(&ours, &theirs);
}

#[test]
fn overlayfs_rootfs_matches_umoci() {
    reference_test("overlayfs");
}

#[test]
fn native_rootfs_matches_umoci() {
    reference_test("native");
}

#[test]
fn second_image_on_the_same_base_unpacks_only_its_new_layers() {
    let registry = Registry::start();
    let a = ImageBuilder::new("a")
        .file_layer(&[("a.txt", b"a")])
        .build();
    let b = ImageBuilder::new("b")
        .file_layer(&[("b.txt", b"b")])
        .build();
    push_oci(&a, &registry, "a:v1");
    push_oci(&b, &registry, "b:v1");
    let root = TempRoot::new();
    let first = pull(&root, &[&registry.reference("a:v1")]);
    assert_eq!(first["unpacked"]["layers_unpacked"], 2);
    let second = pull(&root, &[&registry.reference("b:v1")]);
    assert_eq!(
        second["unpacked"]["layers_unpacked"], 1,
        "the shared base was unpacked again"
    );
    let again = pull(&root, &[&registry.reference("b:v1")]);
    assert_eq!(again["unpacked"]["layers_unpacked"], 0);

    let sn = snapshot::open(root.path(), "overlayfs").unwrap();
    let committed = sn
        .walk(&snapshot::Filter {
            kind: Some(snapshot::Kind::Committed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        committed.len(),
        3,
        "base + a's layer + b's layer: {committed:?}"
    );
    assert!(
        sn.walk(&snapshot::Filter::default())
            .unwrap()
            .iter()
            .all(|i| i.kind == snapshot::Kind::Committed),
        "work snapshots left behind"
    );
    let rec = berth::metadata::Db::open(root.path())
        .unwrap()
        .image(&registry.reference("b:v1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.labels
            .get("berth.io/unpacked.overlayfs")
            .map(String::as_str),
        second["unpacked"]["snapshot"].as_str()
    );
}

#[test]
fn corrupt_layer_commits_no_snapshot() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(600_000, 9).build();
    push_oci(&image, &registry, "corrupt:v1");
    let proxy = FaultProxy::start(&registry);
    let layer = image.layers.last().unwrap().digest.clone();
    proxy.set(Fault::FlipByte {
        digest: layer.clone(),
    });
    let root = TempRoot::new();
    let out = Command::new(bin("berth-pull"))
        .arg("--root")
        .arg(root.path())
        .arg(proxy.reference("corrupt:v1"))
        .env("BERTH_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sn = snapshot::open(root.path(), "overlayfs").unwrap();
    let all = sn.walk(&snapshot::Filter::default()).unwrap();
    let top = berth::image::chain_ids(&image.diff_ids())
        .last()
        .unwrap()
        .to_string();
    assert!(
        all.iter().all(|i| i.key != top),
        "the corrupt layer was committed: {all:?}"
    );
    assert!(
        all.iter().all(|i| i.kind == snapshot::Kind::Committed),
        "work snapshot left: {all:?}"
    );
}

/// Rewrites the image's config so its last diff ID is wrong, and points the
/// manifest and index.json at the new config.
fn break_last_diff_id(image: &OciImage) {
    let blob = |d: &str| {
        image
            .layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let write = |data: &[u8]| -> (String, usize) {
        let d = Digest::of(data);
        std::fs::write(blob(&d.to_string()), data).unwrap();
        (d.to_string(), data.len())
    };
    let mut config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    let ids = config["rootfs"]["diff_ids"].as_array_mut().unwrap();
    *ids.last_mut().unwrap() = serde_json::json!(Digest::of(b"not this layer").to_string());
    let (cd, cs) = write(&serde_json::to_vec(&config).unwrap());
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = write(&serde_json::to_vec(&manifest).unwrap());
    let index_path = image.layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = md.into();
    index["manifests"][0]["size"] = ms.into();
    std::fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn diff_id_mismatch_fails_and_commits_nothing() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(100_000, 11).build();
    break_last_diff_id(&image);
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{}", image.layout.display(), image.tag))
        .arg(format!("docker://{}", registry.reference("bad-diff:v1")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = TempRoot::new();
    let out = Command::new(bin("berth-pull"))
        .arg("--root")
        .arg(root.path())
        .arg(registry.reference("bad-diff:v1"))
        .env("BERTH_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("diff ID mismatch"), "{stderr}");
    let sn = snapshot::open(root.path(), "overlayfs").unwrap();
    let all = sn.walk(&snapshot::Filter::default()).unwrap();
    // Only the busybox base, whose diff ID is right, may be committed.
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].key, image.diff_ids()[0].to_string());
    let db = berth::metadata::Db::open(root.path()).unwrap();
    assert!(
        db.images().unwrap().is_empty(),
        "image recorded despite the mismatch"
    );
}
