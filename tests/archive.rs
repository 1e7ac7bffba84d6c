//! berth-export, berth-import and berth-tag end to end: round trips through
//! a pipe, skopeo interoperability both ways (OCI layouts and docker
//! archives), hostile archives that must leave the store untouched, and a
//! new name that runs.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn berth(root: &TempRoot, name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin(name));
    c.arg("--root")
        .arg(root.path())
        .args(args)
        .env("BERTH_CONFIG", "/dev/null")
        .env("DOCKER_CONFIG", root.path().join("no-docker-config"))
        .env_remove("BERTH_ROOT")
        .env_remove("BERTH_LOG");
    c
}

fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A registry holding a runnable test image, pulled into a store.
struct Pulled {
    registry: Registry,
    root: TempRoot,
    image: String,
    digest: String,
}

fn pulled(repo: &str) -> Pulled {
    pulled_with(repo, 7)
}

fn pulled_with(repo: &str, seed: u64) -> Pulled {
    let registry = Registry::start();
    let built = ImageBuilder::new("archive")
        .random_layer(300_000, seed)
        .cmd(&["true"])
        .build();
    push_oci(&built, &registry, repo);
    let image = registry.reference(repo);
    let root = TempRoot::new();
    let out = ok(
        "pull",
        berth(&root, "berth-pull", &["--format", "json", &image])
            .output()
            .unwrap(),
    );
    let digest = json(&out)[0]["digest"].as_str().unwrap().to_string();
    Pulled {
        registry,
        root,
        image,
        digest,
    }
}

fn import(root: &TempRoot, args: &[&str]) -> Output {
    berth(
        root,
        "berth-import",
        &[&["--format", "json"], args].concat(),
    )
    .stdin(Stdio::null())
    .output()
    .unwrap()
}

fn runs(root: &TempRoot, image: &str) {
    ok(
        &format!("berth-run {image}"),
        berth(
            root,
            "berth-run",
            &["--rm", "--pull", "never", image, "true"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap(),
    );
}

fn skopeo(args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("skopeo");
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        cmd.env_remove(var);
    }
    cmd.env("TMPDIR", tmp.path())
        .arg("--insecure-policy")
        .args(args);
    let out = cmd.output().expect("running skopeo");
    ok(&format!("skopeo {args:?}"), out);
}

fn skopeo_out(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("running skopeo");
    let out = ok(&format!("skopeo {args:?}"), out);
    json(&out)
}

#[test]
fn round_trip_through_a_pipe_keeps_digest_and_name_and_runs() {
    let p = pulled("arch/rt:1");
    let mut export = berth(&p.root, "berth-export", &[&p.image, "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fresh = TempRoot::new();
    let out = berth(&fresh, "berth-import", &["--format", "json", "-"])
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    let status = export.wait().unwrap();
    let mut err = String::new();
    export
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "export: {err}");
    let v = json(&ok("import -", out));
    assert_eq!(v["images"][0]["digest"], p.digest.as_str());
    assert_eq!(v["images"][0]["name"], p.image.as_str());
    assert_eq!(v["images"][0]["named_by"], "annotation");
    assert_store_blobs_match(fresh.path());
    runs(&fresh, &p.image);

    // Exporting twice gives the same bytes.
    let a = ok(
        "export",
        berth(&p.root, "berth-export", &[&p.image, "-o", "-"])
            .output()
            .unwrap(),
    )
    .stdout;
    let b = ok(
        "export",
        berth(&p.root, "berth-export", &[&p.image, "-o", "-"])
            .output()
            .unwrap(),
    )
    .stdout;
    assert!(a == b, "two exports of one image differ");

    // A gzip-compressed tar on stdin is read too; -q prints the digest.
    let other = TempRoot::new();
    let mut child = berth(&other, "berth-import", &["-q", "--no-unpack", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&gzip(&a, 6)).unwrap();
    let out = ok("import gzip", child.wait_with_output().unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), p.digest);
}

#[test]
fn exported_layout_goes_through_skopeo_and_pulls_back_the_same() {
    let p = pulled("arch/layout:1");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let out = ok(
        "export dir",
        berth(
            &p.root,
            "berth-export",
            &[
                "--format",
                "json",
                &p.image,
                "-o",
                &format!("{}/", layout.display()),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(json(&out)["images"][0]["ref_name"], "1");
    assert!(layout.join("oci-layout").is_file());
    let dest = p.registry.reference("copied/layout:2");
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        "--preserve-digests",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{dest}"),
    ]);
    let fresh = TempRoot::new();
    let out = ok(
        "pull copy",
        berth(&fresh, "berth-pull", &["--format", "json", &dest])
            .output()
            .unwrap(),
    );
    assert_eq!(json(&out)[0]["digest"], p.digest.as_str());
}

#[test]
fn skopeo_layout_and_docker_archive_import_and_run() {
    let p = pulled("arch/sk:1");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("sk-layout");
    let archive = dir.path().join("sk-docker.tar");
    let src = format!("docker://{}", p.image);
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-no-creds",
        &src,
        &format!("oci:{}:v1", layout.display()),
    ]);
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-no-creds",
        &src,
        &format!("docker-archive:{}:example.com/sk/img:v2", archive.display()),
    ]);

    // skopeo's layout names the image by tag only: berth generates a name,
    // or takes --name.
    let fresh = TempRoot::new();
    let v = json(&ok(
        "import skopeo layout",
        import(&fresh, &[layout.to_str().unwrap()]),
    ));
    assert_eq!(v["images"][0]["digest"], p.digest.as_str());
    assert_eq!(v["images"][0]["named_by"], "generated");
    let generated = v["images"][0]["name"].as_str().unwrap().to_string();
    assert!(
        generated.contains("/import-") && generated.ends_with(":v1"),
        "{generated}"
    );
    runs(&fresh, &generated);
    let v = json(&ok(
        "import skopeo layout --name",
        import(&fresh, &["--name", "named/img:3", layout.to_str().unwrap()]),
    ));
    assert_eq!(v["images"][0]["name"], "docker.io/named/img:3");
    runs(&fresh, "named/img:3");

    // The docker archive has no manifest blob: berth makes one.
    let fresh = TempRoot::new();
    let v = json(&ok(
        "import skopeo docker-archive",
        import(&fresh, &[archive.to_str().unwrap()]),
    ));
    assert_eq!(v["images"][0]["name"], "example.com/sk/img:v2");
    assert_eq!(v["images"][0]["named_by"], "repo-tag");
    assert_store_blobs_match(fresh.path());
    runs(&fresh, "example.com/sk/img:v2");

    // The layout older docker versions write: each layer a regular file
    // `<id>/layer.tar`, no symlinks, no blobs/.
    let old = old_docker_layout(&fs::read(&archive).unwrap());
    let fresh = TempRoot::new();
    let mut child = berth(&fresh, "berth-import", &["--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&old).unwrap();
    let v = json(&ok(
        "import old docker layout",
        child.wait_with_output().unwrap(),
    ));
    assert_eq!(v["images"][0]["name"], "example.com/sk/img:v2");
    runs(&fresh, "example.com/sk/img:v2");
}

/// skopeo's docker archive rewritten as docker before 25 wrote it.
fn old_docker_layout(archive: &[u8]) -> Vec<u8> {
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut a = tar::Archive::new(archive);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&files.remove("manifest.json").unwrap()).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, name, data).unwrap();
    };
    let mut layers = Vec::new();
    for (i, l) in manifest[0]["Layers"].as_array().unwrap().iter().enumerate() {
        let path = l.as_str().unwrap();
        let data = files
            .get(path)
            .or_else(|| files.get(&format!("{}.tar", path.trim_end_matches("/layer.tar"))))
            .unwrap_or_else(|| panic!("{path} not in {:?}", files.keys()))
            .clone();
        let new = format!("layer{i}/layer.tar");
        add(&new, &data);
        add(&format!("layer{i}/VERSION"), b"1.0");
        layers.push(new);
    }
    let config = manifest[0]["Config"].as_str().unwrap().to_string();
    add(&config, &files[&config]);
    manifest[0]["Layers"] = serde_json::json!(layers);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    out.into_inner().unwrap()
}

#[test]
fn docker_format_is_read_by_skopeo_and_by_berth() {
    let p = pulled("arch/dk:1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker.tar");
    ok(
        "export docker",
        berth(
            &p.root,
            "berth-export",
            &["--format", "docker", &p.image, "-o", file.to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    let source = format!("docker-archive:{}", file.display());
    let inspect = skopeo_out(&["inspect", &source]);
    let config = skopeo_out(&["inspect", "--config", &source]);
    let diff_ids = config["rootfs"]["diff_ids"].clone();
    assert_eq!(inspect["Layers"], diff_ids, "{inspect}");
    let raw_config = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", "--config", "--raw", &source])
        .output()
        .unwrap();
    let raw_config = ok("inspect --config --raw", raw_config).stdout;
    // The config skopeo reads is the stored one, byte for byte.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(p.root.blob_path(&p.digest.parse().unwrap())).unwrap())
            .unwrap();
    assert_eq!(
        sha256(&raw_config).to_string(),
        manifest["config"]["digest"].as_str().unwrap()
    );
    let copied = dir.path().join("copied");
    skopeo(&[
        "copy",
        "--quiet",
        &source,
        &format!("oci:{}:x", copied.display()),
    ]);

    let tar_names = entry_names(&fs::read(&file).unwrap());
    for want in ["manifest.json", "repositories", "index.json", "oci-layout"] {
        assert!(
            tar_names.iter().any(|n| n == want),
            "{want} missing: {tar_names:?}"
        );
    }
    let fresh = TempRoot::new();
    let v = json(&ok(
        "import docker",
        import(&fresh, &[file.to_str().unwrap()]),
    ));
    assert_eq!(v["images"][0]["digest"], p.digest.as_str());
    runs(&fresh, &p.image);
}

fn entry_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// What an import must not change: blob files, ingests, and the rows of
/// the images and content tables.
fn store_state(root: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    walk(&root.join("content"), &mut files);
    files.sort();
    let db = rusqlite::Connection::open(root.join("meta.db")).unwrap();
    let rows = |sql: &str| -> Vec<String> {
        let mut stmt = db.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    (
        files,
        rows("SELECT name || ' ' || digest || ' ' || labels FROM images ORDER BY name"),
        rows("SELECT digest || ' ' || labels FROM content ORDER BY digest"),
    )
}

/// Rewrites a tar entry by entry; `f` may change or drop each
/// (name, data), and the result may get extra raw entries.
fn rewrite(tar: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let kind = e.header().entry_type();
        if let Some((name, data)) = f(&name, data) {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            out.append_data(&mut h, name, &data[..]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

/// A file entry with a raw (unchecked) name, followed by the end marker.
fn with_raw_entry(tar: &[u8], name: &str) -> Vec<u8> {
    with_raw(tar, name, tar::EntryType::Regular, "")
}

fn with_raw(tar: &[u8], name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
    // Drop the two zero blocks that end `tar`, then add our entry.
    let mut body = tar.to_vec();
    while body.len() >= 512 && body[body.len() - 512..].iter().all(|b| *b == 0) {
        body.truncate(body.len() - 512);
    }
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    if kind != tar::EntryType::Regular {
        h.set_size(0);
    }
    h.set_cksum();
    body.extend_from_slice(h.as_bytes());
    if kind == tar::EntryType::Regular {
        let mut data = b"evil!".to_vec();
        data.resize(512, 0);
        body.extend_from_slice(&data);
    }
    body.extend_from_slice(&[0u8; 1024]);
    body
}

#[test]
fn bad_archives_fail_and_leave_the_store_as_it_was() {
    let p = pulled("arch/bad:1");
    // The archive holds another image, so its blobs would be new.
    let other = pulled_with("arch/other:1", 8);
    let _ = other.registry.addr();
    let good = ok(
        "export",
        berth(&other.root, "berth-export", &[&other.image, "-o", "-"])
            .output()
            .unwrap(),
    )
    .stdout;
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(other.root.blob_path(&other.digest.parse().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let layer_path = format!("blobs/sha256/{layer}");

    let layer_offset = {
        // Where the layer's data begins, to cut the tar inside it.
        let mut a = tar::Archive::new(&good[..]);
        let e = a
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_string_lossy() == layer_path)
            .unwrap();
        e.raw_file_position() as usize
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..layer_offset + 1000].to_vec(),
            "truncated",
        ),
        (
            "digest mismatch",
            rewrite(&good, |n, mut d| {
                if n == layer_path {
                    d[100] ^= 0xff;
                }
                Some((n.to_string(), d))
            }),
            "does not match its name",
        ),
        (
            "missing blob",
            rewrite(&good, |n, d| (n != layer_path).then(|| (n.to_string(), d))),
            "missing from the archive",
        ),
        ("parent dir", with_raw_entry(&good, "../x"), "'..'"),
        ("absolute", with_raw_entry(&good, "/etc/x"), "absolute"),
        (
            "hard link",
            with_raw(&good, "x", tar::EntryType::Link, "/etc/passwd"),
            "hard link",
        ),
        (
            "device",
            with_raw(&good, "dev", tar::EntryType::Char, ""),
            "character device",
        ),
        (
            "escaping symlink",
            with_raw(&good, "a/link", tar::EntryType::Symlink, "../../etc"),
            "outside the archive",
        ),
        (
            "bad blob path",
            rewrite(&good, |n, d| {
                Some((n.replace("blobs/sha256/", "blobs/sha256/x/"), d))
            }),
            "not a blob path",
        ),
    ];
    let before = store_state(p.root.path());
    let dir = tempfile::tempdir().unwrap();
    for (what, data, message) in cases {
        for via_stdin in [false, true] {
            let file = dir.path().join(format!("{}.tar", what.replace(' ', "-")));
            fs::write(&file, &data).unwrap();
            let out = if via_stdin {
                let mut child = berth(&p.root, "berth-import", &["-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let data = data.clone();
                let writer = std::thread::spawn(move || {
                    let _ = stdin.write_all(&data);
                });
                let out = child.wait_with_output().unwrap();
                writer.join().unwrap();
                out
            } else {
                import(&p.root, &[file.to_str().unwrap()])
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{what} (stdin: {via_stdin}) was accepted: {stderr}"
            );
            assert!(
                stderr.contains(message),
                "{what}: message lacks {message:?}: {stderr}"
            );
            assert_eq!(
                store_state(p.root.path()),
                before,
                "{what} (stdin: {via_stdin}) changed the store"
            );
        }
    }
    // The store still works.
    runs(&p.root, &p.image);
}

#[test]
fn tag_names_an_image_that_then_runs() {
    let p = pulled("arch/tag:1");
    let out = ok(
        "tag",
        berth(
            &p.root,
            "berth-tag",
            &["--format", "json", &p.image, "renamed/img:5"],
        )
        .output()
        .unwrap(),
    );
    let v = json(&out);
    assert_eq!(v["target"], "docker.io/renamed/img:5");
    assert_eq!(v["digest"], p.digest.as_str());
    runs(&p.root, "renamed/img:5");
    let out = berth(&p.root, "berth-tag", &["no/such:image", "x:1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Exporting a missing image is "not found" and writes no file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("none.tar");
    let out = berth(
        &p.root,
        "berth-export",
        &[&p.image, "no/such:image", "-o", file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "export left {left:?}");
}

#[test]
fn multi_platform_images_travel_with_the_platforms_the_store_has() {
    let registry = Registry::start();
    let image = two_platform("multi");
    push_index(&image, &registry, "arch/multi:1");
    let reference = registry.reference("arch/multi:1");
    for all in [false, true] {
        let root = TempRoot::new();
        let mut args = vec!["-q", reference.as_str()];
        if all {
            args.insert(0, "--all-platforms");
        }
        ok("pull", berth(&root, "berth-pull", &args).output().unwrap());
        let tar = ok(
            "export",
            berth(&root, "berth-export", &[&reference, "-o", "-"])
                .output()
                .unwrap(),
        )
        .stdout;
        let manifests = entry_names(&tar)
            .iter()
            .filter(|n| {
                image
                    .images
                    .iter()
                    .any(|i| n.ends_with(i.manifest_digest.hex()))
            })
            .count();
        assert_eq!(manifests, if all { 2 } else { 1 }, "all platforms: {all}");
        let fresh = TempRoot::new();
        let mut child = berth(&fresh, "berth-import", &["--format", "json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        let v = json(&ok("import", child.wait_with_output().unwrap()));
        assert_eq!(v["images"][0]["digest"], image.index_digest.to_string());
        assert_eq!(v["images"][0]["name"], reference.as_str());
        runs(&fresh, &reference);
    }
}
