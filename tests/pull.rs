//! berth-pull against real registries on 127.0.0.1: plain, htpasswd (Basic)
//! and bearer-token; OCI, Docker schema2 and two-platform images; corrupt,
//! cut and killed downloads; many pulls into one store at once.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth::metadata::Db;
use common::*;

fn pull_cmd(root: &TempRoot) -> Command {
    let mut cmd = Command::new(bin("berth-pull"));
    cmd.arg("--root").arg(root.path());
    cmd.env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG");
    // No credentials from the machine running the tests.
    let empty = root.path().with_extension("docker");
    cmd.env("DOCKER_CONFIG", &empty)
        .env_remove("REGISTRY_AUTH_FILE");
    cmd.env("BERTH_CONFIG", "/dev/null");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running berth-pull");
    eprintln!(
        "berth-pull exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pull_json(root: &TempRoot, args: &[&str]) -> serde_json::Value {
    let out = run(pull_cmd(root).args(["--format", "json"]).args(args));
    assert!(out.status.success(), "berth-pull {args:?} failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    v[0].clone()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn image_record(root: &TempRoot, name: &str) -> Option<berth::metadata::ImageRecord> {
    Db::open(root.path()).unwrap().image(name).unwrap()
}

#[test]
fn pulls_oci_image_by_tag_then_by_digest() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(300_000, 1).build();
    let digest = push_oci(&image, &registry, "tiny:v1");
    let root = TempRoot::new();
    let reference = registry.reference("tiny:v1");

    let res = pull_json(&root, &[&reference]);
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["name"], reference);
    assert_eq!(res["platforms"][0], image.platform());
    for blob in image.blob_digests() {
        assert!(root.has_blob(&blob), "{blob} missing from the store");
    }
    assert!(root.has_blob(&digest));
    assert_store_blobs_match(root.path());
    let rec = image_record(&root, &reference).expect("image recorded");
    assert_eq!(rec.digest, digest);

    let by_digest = format!("{}@{digest}", registry.reference("tiny"));
    let res = pull_json(&root, &[&by_digest]);
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["name"], by_digest);
    assert!(image_record(&root, &by_digest).is_some());
}

#[test]
fn pulling_an_unchanged_image_again_downloads_no_blob() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(500_000, 2).build();
    push_oci(&image, &registry, "again:v1");
    let root = TempRoot::new();
    let reference = registry.reference("again:v1");
    let first = pull_json(&root, &[&reference]);
    let gets_before: usize = image
        .blob_digests()
        .iter()
        .map(|d| registry.blob_gets(d))
        .sum();
    assert!(gets_before >= image.layers.len());
    let second = pull_json(&root, &[&reference]);
    let gets_after: usize = image
        .blob_digests()
        .iter()
        .map(|d| registry.blob_gets(d))
        .sum();
    assert_eq!(gets_after, gets_before, "the second pull fetched blobs");
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["bytes_fetched"], image.manifest.len() as u64);
    assert!(second["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["fetched"] == 0));
}

#[test]
fn pulls_docker_schema2_manifest() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").build();
    let digest = push_docker_v2s2(&image, &registry, "docker:v1");
    let root = TempRoot::new();
    let res = pull_json(&root, &[&registry.reference("docker:v1")]);
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["media_type"], DOCKER_MANIFEST);
    for layer in &image.layers {
        assert!(root.has_blob(&layer.digest));
    }
    assert_store_blobs_match(root.path());
}

#[test]
fn index_resolves_to_the_requested_platform() {
    let registry = Registry::start();
    let multi =
        ImageBuilder::new("multi").build_multi_arch(&[("linux", "amd64"), ("linux", "arm64")]);
    let index_digest = push_index(&multi, &registry, "multi:v1");
    let reference = registry.reference("multi:v1");
    let arm = multi.for_platform("linux", "arm64");
    let amd = multi.for_platform("linux", "amd64");

    let root = TempRoot::new();
    let res = pull_json(&root, &["--platform", "linux/arm64", &reference]);
    assert_eq!(res["digest"], index_digest.to_string());
    assert_eq!(res["platforms"], serde_json::json!(["linux/arm64"]));
    assert!(root.has_blob(&arm.manifest_digest));
    assert!(root.has_blob(&arm.config_digest));
    assert!(
        !root.has_blob(&amd.config_digest),
        "amd64 config fetched for arm64"
    );
    assert!(!root.has_blob(&amd.manifest_digest));
    assert_store_blobs_match(root.path());
    let db = Db::open(root.path()).unwrap();
    let rec = db
        .content(&arm.manifest_digest)
        .unwrap()
        .expect("manifest record");
    assert_eq!(rec.size, arm.manifest.len() as u64);
    assert_eq!(rec.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(
        rec.labels["containerd.io/gc.ref.content.config"],
        arm.config_digest.to_string()
    );
    let index = db.content(&index_digest).unwrap().expect("index record");
    assert_eq!(
        index.labels["containerd.io/gc.ref.content.m.0"],
        arm.manifest_digest.to_string()
    );

    let all = TempRoot::new();
    let res = pull_json(&all, &["--all-platforms", &reference]);
    assert_eq!(res["platforms"].as_array().unwrap().len(), 2);
    assert!(all.has_blob(&amd.config_digest) && all.has_blob(&arm.config_digest));

    let none = TempRoot::new();
    let out = run(pull_cmd(&none).args(["--platform", "linux/s390x", &reference]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "a missing platform is 'not found'"
    );
    assert!(
        stderr(&out).contains("linux/arm64"),
        "error lists what the index has"
    );
    assert!(image_record(&none, &reference).is_none());
}

#[test]
fn basic_auth_from_flags_stdin_and_docker_config() {
    let registry = Registry::start_with_htpasswd("alice", "s3cret-pw");
    let image = ImageBuilder::new("v1").build();
    push_oci(&image, &registry, "private:v1");
    let reference = registry.reference("private:v1");

    let anon = TempRoot::new();
    let out = run(pull_cmd(&anon).arg(&reference));
    assert_eq!(
        out.status.code(),
        Some(4),
        "anonymous pull must be unauthorized"
    );

    let wrong = TempRoot::new();
    let out = run(pull_cmd(&wrong).args(["--user", "alice:nope", &reference]));
    assert_eq!(out.status.code(), Some(4));
    assert!(
        !stderr(&out).contains("nope"),
        "password leaked into the error"
    );

    let flag = TempRoot::new();
    let out = run(pull_cmd(&flag).args(["--debug", "--user", "alice:s3cret-pw", &reference]));
    assert!(out.status.success());
    assert!(
        !stderr(&out).contains("s3cret-pw"),
        "password leaked into debug log"
    );

    let stdin = TempRoot::new();
    let mut child = pull_cmd(&stdin)
        .args(["-q", "--user", "alice", "--password-stdin", &reference])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image.manifest_digest.to_string(),
        "-q prints only the digest"
    );
    assert!(
        out.stderr.is_empty(),
        "-q printed progress: {}",
        stderr(&out)
    );

    // Credentials from a docker config.json the test writes.
    let cfg = TempRoot::new();
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.host(),
            basic_auth("alice", "s3cret-pw").trim_start_matches("Basic ")
        ),
    )
    .unwrap();
    let out = run(pull_cmd(&cfg)
        .env("DOCKER_CONFIG", docker.path())
        .arg(&reference));
    assert!(out.status.success());
    assert!(image_record(&cfg, &reference).is_some());
    let db = std::fs::read(cfg.path().join("meta.db")).unwrap();
    assert!(
        !db.windows(9).any(|w| w == b"s3cret-pw"),
        "password stored in the database"
    );
}

#[test]
fn bearer_token_registry() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(200_000, 3).build();
    push_oci(&image, &registry, "tok/img:v1");
    let front = TokenFront::start(&registry, TokenOptions::user("bob", "tok-pass"));
    let reference = front.reference("tok/img:v1");

    let anon = TempRoot::new();
    let out = run(pull_cmd(&anon).arg(&reference));
    assert_eq!(out.status.code(), Some(4));

    let root = TempRoot::new();
    let res = pull_json(&root, &["--user", "bob:tok-pass", &reference]);
    assert_eq!(res["digest"], image.manifest_digest.to_string());
    assert!(front.token_requests() >= 1);
    assert!(
        front
            .scopes_requested()
            .iter()
            .any(|s| s == "repository:tok/img:pull"),
        "{:?}",
        front.scopes_requested()
    );
    assert_store_blobs_match(root.path());

    // Anonymous token realm: no credentials needed, tokens still required.
    let open = TokenFront::start(&registry, TokenOptions::anonymous());
    let root = TempRoot::new();
    pull_json(&root, &[&open.reference("tok/img:v1")]);
    assert!(open.token_requests() >= 1);
}

#[test]
fn flipped_byte_fails_naming_the_digest_and_stores_nothing() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(1_000_000, 4).build();
    push_oci(&image, &registry, "flip:v1");
    let proxy = FaultProxy::start(&registry);
    let layer = image.layers.last().unwrap().digest.clone();
    proxy.set(Fault::FlipByte {
        digest: layer.clone(),
    });
    let root = TempRoot::new();
    let reference = proxy.reference("flip:v1");
    let out = run(pull_cmd(&root).arg(&reference));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&layer.short()) || err.contains(&layer.to_string()),
        "{err}"
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!root.has_blob(&layer), "corrupt blob in the store");
    let ingest = root.path().join("content/ingest");
    assert_eq!(
        std::fs::read_dir(&ingest).unwrap().count(),
        0,
        "corrupt data kept in ingest"
    );
    assert!(image_record(&root, &reference).is_none());
    assert_store_blobs_match(root.path());

    proxy.set(Fault::Pass);
    let out = run(pull_cmd(&root).arg(&reference));
    assert!(out.status.success());
    assert!(root.has_blob(&layer));
    assert_store_blobs_match(root.path());
}

#[test]
fn cut_connection_resumes_with_range() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(2_000_000, 5).build();
    push_oci(&image, &registry, "cut:v1");
    let proxy = FaultProxy::start(&registry);
    let layer = image.layers.last().unwrap();
    proxy.set_for(
        Fault::Cut {
            digest: layer.digest.clone(),
            after_bytes: 700_000,
        },
        1,
    );
    let root = TempRoot::new();
    let res = pull_json(&root, &[&proxy.reference("cut:v1")]);
    assert_eq!(res["digest"], image.manifest_digest.to_string());
    let requests = proxy.blob_requests(&layer.digest);
    assert!(
        requests
            .iter()
            .any(|r| r.range.as_deref() == Some("bytes=700000-")),
        "no Range resume: {requests:?}"
    );
    assert_eq!(proxy.bytes_served(&layer.digest), layer.size);
    assert_store_blobs_match(root.path());
}

#[test]
fn pull_killed_midway_resumes_and_fetches_less() {
    let registry = Registry::start();
    let size = 24 << 20;
    let image = ImageBuilder::new("v1").random_layer(size, 6).build();
    push_oci(&image, &registry, "big:v1");
    let proxy = FaultProxy::start(&registry);
    let layer = image.layers.last().unwrap();
    proxy.set(Fault::Throttle {
        bytes_per_sec: 8 << 20,
    });
    let root = TempRoot::new();
    let reference = proxy.reference("big:v1");
    let mut child = pull_cmd(&root)
        .arg(&reference)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reached = proxy.wait_for_bytes(&layer.digest, layer.size / 3, Duration::from_secs(60));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(reached, "the pull never got a third of the way");
    let first = proxy.bytes_served(&layer.digest);
    assert!(
        first < layer.size,
        "killed too late: whole layer already sent"
    );
    assert!(!root.has_blob(&layer.digest));
    assert!(image_record(&root, &reference).is_none());

    proxy.set(Fault::Pass);
    let res = pull_json(&root, &[&reference]);
    let second = proxy.bytes_served(&layer.digest) - first;
    eprintln!(
        "layer {} bytes: first run {first}, second run {second}",
        layer.size
    );
    assert!(
        second < layer.size,
        "second run fetched {second} of {}",
        layer.size
    );
    let pulled = res["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["digest"] == layer.digest.to_string())
        .unwrap()
        .clone();
    assert!(pulled["fetched"].as_u64().unwrap() < layer.size);
    assert!(root.has_blob(&layer.digest));
    assert_store_blobs_match(root.path());
}

#[test]
fn eight_concurrent_pulls_into_one_root() {
    let registry = Registry::start();
    // Four images on one shared base, each with its own top layer, so the
    // pulls race for the same blobs.
    let mut refs = Vec::new();
    for i in 0..4u64 {
        let image = ImageBuilder::new("v1")
            .random_layer(400_000, 100)
            .random_layer(300_000, 200 + i)
            .build();
        push_oci(&image, &registry, &format!("race{i}:v1"));
        refs.push(registry.reference(&format!("race{i}:v1")));
    }
    let root = TempRoot::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            pull_cmd(&root)
                .args([&refs[i % 4], &refs[(i + 1) % 4]])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "a concurrent pull failed: {err}");
        assert!(
            !err.contains("locked") && !err.contains("busy"),
            "SQLITE_BUSY escaped: {err}"
        );
    }
    let db = Db::open(root.path()).unwrap();
    assert_eq!(db.images().unwrap().len(), 4);
    assert_store_blobs_match(root.path());
    assert!(Db::open(root.path())
        .unwrap()
        .leased("content")
        .unwrap()
        .is_empty());
}

#[test]
fn bad_input_gets_usage_or_not_found_codes() {
    let registry = Registry::start();
    let root = TempRoot::new();
    let out = run(pull_cmd(&root).arg("Bad//Reference"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Bad//Reference"));
    assert!(
        !root.path().join("meta.db").exists(),
        "a bad reference created the store"
    );

    let out = run(pull_cmd(&root).arg(registry.reference("missing:v1")));
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("MANIFEST_UNKNOWN") || stderr(&out).contains("not found"));

    let out = run(pull_cmd(&root).args(["--platform", "linux", "x"]));
    assert_eq!(out.status.code(), Some(2));

    let out = run(pull_cmd(&root).args(["--user", "x", "img"]));
    assert_eq!(out.status.code(), Some(2), "--user without a password");
    assert!(Db::open(root.path()).unwrap().images().unwrap().is_empty());
}

#[test]
fn progress_goes_to_stderr_and_result_to_stdout() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").build();
    push_oci(&image, &registry, "quiet:v1");
    let root = TempRoot::new();
    let out = run(pull_cmd(&root).arg(registry.reference("quiet:v1")));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout has only the result: {stdout}"
    );
    assert!(
        stderr(&out).contains("downloading"),
        "no progress lines on stderr"
    );
}
