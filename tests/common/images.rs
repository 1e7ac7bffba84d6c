//! Test images made in Rust, with no network: OCI image layouts
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) that skopeo can push.
//!
//! An image is a busybox-static base layer (a shell and the usual applets,
//! `/etc/passwd`, `/etc/group`, the standard empty dirs) plus the layers a
//! test asks for: deterministic pseudo-random data (incompressible, so a
//! 64 MiB layer is 64 MiB on the wire), or small files of its choosing.
//! The same builder always gives the same bytes, so digests are stable.
//!
//! Cost: a 64 MiB random layer takes about 5 s to make (gzip -1 dominates);
//! the busybox layer is made once per test binary and reused.

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth::content::Digest;
use serde_json::json;
use tempfile::TempDir;

use super::tools::{gzip, sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ash", "ls", "cat", "echo", "sleep", "true", "false", "env", "id", "mkdir", "rm",
    "touch", "pwd", "ps", "kill", "hostname", "uname", "wc", "head", "grep", "stat", "date",
    "mount", "test", "[", "tty", "mknod", "sort", "tail", "tr", "cut", "sed", "seq", "dd", "chmod",
    "printf", "yes", "nc", "ifconfig", "ip",
];
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One layer as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Of the compressed blob.
    pub digest: Digest,
    /// Of the compressed blob, in bytes.
    pub size: u64,
    /// Of the uncompressed tar, as the config's `rootfs.diff_ids` has it.
    pub diff_id: Digest,
    pub media_type: String,
}

/// One platform's manifest, config and layers, with their bytes.
#[derive(Debug, Clone)]
pub struct Image {
    pub os: String,
    pub architecture: String,
    pub manifest_digest: Digest,
    pub manifest: Vec<u8>,
    pub config_digest: Digest,
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
}

impl Image {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    pub fn layer_digests(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }

    /// Compressed bytes of all layers.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// `os/architecture`, as `--platform` spells it.
    pub fn platform(&self) -> String {
        format!("{}/{}", self.os, self.architecture)
    }

    /// Every blob digest the image needs: config, layers, manifest.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut all = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        all.extend(self.layer_digests());
        all
    }
}

/// A single-platform OCI layout; it derefs to its [`Image`], so
/// `image.manifest_digest` and `image.layers` read directly.
/// Dropping it removes the layout if the builder made its directory.
pub struct OciImage {
    pub layout: PathBuf,
    pub tag: String,
    pub image: Image,
    _dir: Option<TempDir>,
}

impl Deref for OciImage {
    type Target = Image;
    fn deref(&self) -> &Image {
        &self.image
    }
}

impl OciImage {
    /// The skopeo source name: `oci:<layout>:<tag>`.
    pub fn source(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.layout, digest)
    }
}

/// An OCI layout whose tag names an image index with one manifest per
/// platform. Dropping it removes the layout.
pub struct MultiArchImage {
    pub layout: PathBuf,
    pub tag: String,
    pub index_digest: Digest,
    pub index: Vec<u8>,
    /// In index order.
    pub images: Vec<Image>,
    _dir: Option<TempDir>,
}

impl MultiArchImage {
    pub fn source(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// The image for `os/arch`; panics if the index has none.
    pub fn for_platform(&self, os: &str, architecture: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.os == os && i.architecture == architecture)
            .unwrap_or_else(|| panic!("no {os}/{architecture} image in this index"))
    }
}

#[derive(Debug, Clone)]
enum LayerSpec {
    Busybox,
    Random {
        size: usize,
        seed: u64,
    },
    Files(Vec<(String, Vec<u8>)>),
    /// An uncompressed tar stream made by the test, stored gzip-compressed.
    Tar(Vec<u8>),
}

/// Describes an image; `build*` writes it. See the module docs.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    tag: String,
    os: String,
    architecture: String,
    cmd: Vec<String>,
    layers: Vec<LayerSpec>,
}

impl ImageBuilder {
    /// An image with the busybox base layer, for the host's platform,
    /// `Cmd ["sh"]`.
    pub fn new(tag: &str) -> ImageBuilder {
        ImageBuilder {
            layers: vec![LayerSpec::Busybox],
            ..ImageBuilder::empty(tag)
        }
    }

    /// An image with no layers yet (not even the base).
    pub fn empty(tag: &str) -> ImageBuilder {
        ImageBuilder {
            tag: tag.to_string(),
            os: "linux".to_string(),
            architecture: host_architecture().to_string(),
            cmd: vec!["sh".to_string()],
            layers: Vec::new(),
        }
    }

    /// The config's `os` and `architecture` (the busybox binary stays the
    /// host's: these images are for pulling, not for running elsewhere).
    pub fn platform(mut self, os: &str, architecture: &str) -> ImageBuilder {
        self.os = os.to_string();
        self.architecture = architecture.to_string();
        self
    }

    pub fn cmd(mut self, cmd: &[&str]) -> ImageBuilder {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    /// A layer holding one file, `data/random-<seed>.bin`, of `size`
    /// pseudo-random bytes from `seed`. Compressed with gzip -1, it is a bit
    /// larger than `size`.
    pub fn random_layer(mut self, size: usize, seed: u64) -> ImageBuilder {
        self.layers.push(LayerSpec::Random { size, seed });
        self
    }

    /// A layer holding these regular files (mode 0644; parent dirs are
    /// added). A name like `etc/.wh.passwd` makes a whiteout.
    pub fn file_layer(mut self, files: &[(&str, &[u8])]) -> ImageBuilder {
        let files = files
            .iter()
            .map(|(p, d)| (p.trim_start_matches('/').to_string(), d.to_vec()))
            .collect();
        self.layers.push(LayerSpec::Files(files));
        self
    }

    /// A layer from a tar stream the test wrote itself (with the `tar`
    /// crate): whiteouts, hardlinks, devices, odd names, any ownership.
    pub fn tar_layer(mut self, tar: Vec<u8>) -> ImageBuilder {
        self.layers.push(LayerSpec::Tar(tar));
        self
    }

    /// Writes the layout into a new temp dir, owned by the result.
    pub fn build(&self) -> OciImage {
        let dir = layout_tempdir();
        let mut image = self.build_in(dir.path());
        image._dir = Some(dir);
        image
    }

    /// Writes the layout into `dir` (created if missing; kept on drop).
    pub fn build_in(&self, dir: &Path) -> OciImage {
        init_layout(dir);
        let image = write_image(dir, &self.os, &self.architecture, &self.cmd, &self.layers);
        let descriptor = json!({
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": {"os": image.os, "architecture": image.architecture},
            "annotations": {REF_NAME: self.tag},
        });
        write_index_json(dir, descriptor);
        OciImage {
            layout: dir.to_path_buf(),
            tag: self.tag.clone(),
            image,
            _dir: None,
        }
    }

    /// An index with one image per `(os, architecture)`: this builder's
    /// layers plus a small layer of its own (`etc/berth-platform`, holding
    /// `os/architecture`), so platforms share the base and differ in one
    /// layer and in their config.
    pub fn build_multi_arch(&self, platforms: &[(&str, &str)]) -> MultiArchImage {
        let dir = layout_tempdir();
        init_layout(dir.path());
        let images: Vec<Image> = platforms
            .iter()
            .map(|(os, architecture)| {
                let mut layers = self.layers.clone();
                let marker = format!("{os}/{architecture}\n").into_bytes();
                layers.push(LayerSpec::Files(vec![(
                    "etc/berth-platform".into(),
                    marker,
                )]));
                write_image(dir.path(), os, architecture, &self.cmd, &layers)
            })
            .collect();
        let manifests: Vec<_> = images
            .iter()
            .map(|i| {
                json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": i.manifest_digest,
                    "size": i.manifest.len(),
                    "platform": {"os": i.os, "architecture": i.architecture},
                })
            })
            .collect();
        let index = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }));
        let index_digest = write_blob(dir.path(), &index);
        write_index_json(
            dir.path(),
            json!({
                "mediaType": OCI_INDEX,
                "digest": index_digest,
                "size": index.len(),
                "annotations": {REF_NAME: self.tag},
            }),
        );
        MultiArchImage {
            layout: dir.path().to_path_buf(),
            tag: self.tag.clone(),
            index_digest,
            index,
            images,
            _dir: Some(dir),
        }
    }
}

/// The usual two-platform test index: linux/amd64 and linux/arm64.
pub fn two_platform(tag: &str) -> MultiArchImage {
    ImageBuilder::new(tag).build_multi_arch(&[("linux", "amd64"), ("linux", "arm64")])
}

/// The OCI name of the architecture this test runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs").join("sha256").join(digest.hex())
}

fn layout_tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("berth-test-image-")
        .tempdir()
        .expect("creating image temp dir")
}

fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs").join("sha256")).expect("creating layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("writing oci-layout");
}

fn write_index_json(dir: &Path, descriptor: serde_json::Value) {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor],
    });
    fs::write(dir.join("index.json"), to_json(&index)).expect("writing index.json");
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialising JSON")
}

/// Writes a blob under its digest (skipped if already there).
fn write_blob(dir: &Path, data: &[u8]) -> Digest {
    let digest = sha256(data);
    let path = blob_path(dir, &digest);
    if !path.exists() {
        fs::write(&path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    digest
}

/// Writes layers, config and manifest blobs; returns what was written.
fn write_image(
    dir: &Path,
    os: &str,
    architecture: &str,
    cmd: &[String],
    specs: &[LayerSpec],
) -> Image {
    let mut layers = Vec::new();
    let mut history = Vec::new();
    for spec in specs {
        let built = match spec {
            LayerSpec::Busybox => busybox_layer().clone(),
            other => BuiltLayer::new(other),
        };
        let digest = write_blob(dir, &built.gz);
        assert_eq!(digest, built.digest);
        history.push(json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("berth test layer: {}", spec.describe()),
        }));
        layers.push(Layer {
            digest,
            size: built.gz.len() as u64,
            diff_id: built.diff_id,
            media_type: OCI_LAYER_GZIP.to_string(),
        });
    }
    let config = to_json(&json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": os,
        "config": {"Env": [PATH_ENV], "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "history": history,
    }));
    let config_digest = write_blob(dir, &config);
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    }));
    let manifest_digest = write_blob(dir, &manifest);
    Image {
        os: os.to_string(),
        architecture: architecture.to_string(),
        manifest_digest,
        manifest,
        config_digest,
        config,
        layers,
    }
}

impl LayerSpec {
    fn describe(&self) -> String {
        match self {
            LayerSpec::Busybox => "busybox base".to_string(),
            LayerSpec::Random { size, seed } => format!("{size} random bytes, seed {seed}"),
            LayerSpec::Files(files) => format!("{} files", files.len()),
            LayerSpec::Tar(tar) => format!("{} bytes of tar", tar.len()),
        }
    }
}

/// A layer's compressed bytes and both digests.
#[derive(Clone)]
struct BuiltLayer {
    gz: Vec<u8>,
    digest: Digest,
    diff_id: Digest,
}

impl BuiltLayer {
    fn new(spec: &LayerSpec) -> BuiltLayer {
        let mut tar = TarWriter::new();
        let level = match spec {
            LayerSpec::Busybox => {
                tar.busybox_base();
                6
            }
            LayerSpec::Random { size, seed } => {
                tar.dir("data");
                tar.file(
                    &format!("data/random-{seed}.bin"),
                    &random_bytes(*size, *seed),
                    0o644,
                );
                1
            }
            LayerSpec::Files(files) => {
                for (path, data) in files {
                    tar.parents(path);
                    tar.file(path, data, 0o644);
                }
                6
            }
            LayerSpec::Tar(_) => 6,
        };
        let tar = match spec {
            LayerSpec::Tar(raw) => raw.clone(),
            _ => tar.finish(),
        };
        // Hash the tar while gzip runs: both are native processes.
        let (diff_id, gz) = std::thread::scope(|s| {
            let diff_id = s.spawn(|| sha256(&tar));
            let gz = gzip(&tar, level);
            (diff_id.join().expect("hashing layer"), gz)
        });
        BuiltLayer {
            digest: sha256(&gz),
            gz,
            diff_id,
        }
    }
}

fn busybox_layer() -> &'static BuiltLayer {
    static BASE: OnceLock<BuiltLayer> = OnceLock::new();
    BASE.get_or_init(|| BuiltLayer::new(&LayerSpec::Busybox))
}

/// `size` bytes from splitmix64 seeded with `seed`: fast, deterministic and
/// incompressible enough that gzip cannot shrink it.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; size];
    let mut state = seed ^ 0x6a09_e667_f3bc_c908;
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// A tar with fixed owners and times, so equal content gives equal bytes.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    dirs: std::collections::BTreeSet<String>,
}

impl TarWriter {
    fn new() -> TarWriter {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
            dirs: Default::default(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn dir_mode(&mut self, path: &str, mode: u32) {
        if self.dirs.insert(path.to_string()) {
            let mut h = Self::header(tar::EntryType::Directory, mode, 0);
            self.builder
                .append_data(&mut h, format!("{path}/"), std::io::empty())
                .expect("tar dir");
        }
    }

    fn dir(&mut self, path: &str) {
        self.dir_mode(path, 0o755);
    }

    /// Adds every missing parent dir of `path`.
    fn parents(&mut self, path: &str) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            self.dir(&parts[..i].join("/"));
        }
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .expect("tar file");
    }

    fn symlink(&mut self, path: &str, target: &str) {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("tar symlink");
    }

    fn busybox_base(&mut self) {
        let busybox = fs::read(BUSYBOX)
            .unwrap_or_else(|e| panic!("reading {BUSYBOX} (apt-get install busybox-static): {e}"));
        for d in ["bin", "dev", "etc", "proc", "sys", "usr", "usr/bin", "var"] {
            self.dir(d);
        }
        self.dir_mode("root", 0o700);
        self.dir_mode("tmp", 0o1777);
        self.file("bin/busybox", &busybox, 0o755);
        for applet in APPLETS {
            self.symlink(&format!("bin/{applet}"), "busybox");
        }
        self.file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        );
        self.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644);
    }

    fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finishing tar")
    }
}
