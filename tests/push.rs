//! berth-push against real registries on 127.0.0.1: round trips through a
//! second registry checked with berth-pull and skopeo, second pushes that
//! upload nothing, cross-repository mounts, two-platform indexes, Basic
//! auth, chunked uploads, and a store missing a blob.

mod common;

use std::process::{Command, Output};

use common::*;

fn cmd(name: &str, root: &TempRoot) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.arg("--root").arg(root.path());
    cmd.env_remove("BERTH_ROOT")
        .env_remove("BERTH_PUSH_CHUNK_SIZE")
        .env("BERTH_CONFIG", "/dev/null");
    // No credentials from the machine running the tests.
    cmd.env("DOCKER_CONFIG", root.path().with_extension("docker"))
        .env_remove("REGISTRY_AUTH_FILE");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a berth binary");
    eprintln!(
        "{:?} exit {:?}\nstdout: {}\nstderr: {}",
        cmd.get_program(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pull(root: &TempRoot, args: &[&str]) -> serde_json::Value {
    let out = run(cmd("berth-pull", root)
        .args(["--no-unpack", "--format", "json"])
        .args(args));
    assert!(out.status.success(), "berth-pull {args:?} failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    v[0].clone()
}

fn push(root: &TempRoot, args: &[&str]) -> serde_json::Value {
    let out = run(cmd("berth-push", root)
        .args(["--format", "json"])
        .args(args));
    assert!(out.status.success(), "berth-push {args:?} failed");
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Blob upload requests (POST, PATCH, PUT on `/blobs/uploads`) so far.
fn uploads(registry: &Registry) -> (usize, usize, usize) {
    (
        registry.count_requests("POST", "/blobs/uploads"),
        registry.count_requests("PATCH", "/blobs/uploads"),
        registry.count_requests("PUT", "/blobs/uploads"),
    )
}

fn actions(result: &serde_json::Value) -> Vec<String> {
    result["blobs"]
        .as_array()
        .expect("blobs array")
        .iter()
        .map(|b| b["action"].as_str().unwrap().to_string())
        .collect()
}

fn skopeo_inspect(reference: &str, raw: bool) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .args(["inspect", "--tls-verify=false", "--no-creds"]);
    if raw {
        c.arg("--raw");
    }
    let out = c.arg(format!("docker://{reference}")).output().unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    out.stdout
}

#[test]
fn round_trip_through_a_second_registry_then_nothing_to_upload() {
    let a = Registry::start();
    let b = Registry::start();
    let image = ImageBuilder::new("v1")
        .random_layer(200_000, 1)
        .random_layer(50_000, 2)
        .build();
    let digest = push_oci(&image, &a, "src/img:v1");
    let root = TempRoot::new();
    pull(&root, &[&a.reference("src/img:v1")]);

    let dest = b.reference("dst/img:v2");
    let res = push(&root, &[&a.reference("src/img:v1"), &dest]);
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["name"], dest);
    assert_eq!(res["media_type"], OCI_MANIFEST);
    // Config and layers (blob_digests() starts with the manifest).
    let blobs = image.blob_digests()[1..].to_vec();
    assert_eq!(res["blobs"].as_array().unwrap().len(), blobs.len());
    assert!(actions(&res).iter().all(|a| a == "uploaded"), "{res}");

    // berth-pull from B into a fresh root: same digest, same blobs.
    let fresh = TempRoot::new();
    let back = pull(&fresh, &[&dest]);
    assert_eq!(back["digest"], digest.to_string());
    for blob in &blobs {
        assert!(fresh.has_blob(blob), "{blob} not pulled back");
    }
    assert_store_blobs_match(fresh.path());

    // skopeo agrees.
    let raw = skopeo_inspect(&dest, true);
    assert_eq!(sha256(&raw), digest);
    let info: serde_json::Value = serde_json::from_slice(&skopeo_inspect(&dest, false)).unwrap();
    assert_eq!(info["Digest"], digest.to_string());
    let layers: Vec<String> = image
        .layer_digests()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(info["Layers"], serde_json::json!(layers));

    // A second push uploads nothing.
    let before = uploads(&b);
    let again = push(&root, &[&a.reference("src/img:v1"), &dest]);
    assert_eq!(again["digest"], digest.to_string());
    assert!(actions(&again).iter().all(|a| a == "exists"), "{again}");
    assert_eq!(uploads(&b), before, "the second push uploaded blobs");

    // -q prints the digest only.
    let out = run(cmd("berth-push", &root).args(["-q", &a.reference("src/img:v1"), &dest]));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        digest.to_string()
    );
}

#[test]
fn same_registry_push_mounts_blobs_and_default_dest_is_the_image_name() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(100_000, 3).build();
    let digest = push_oci(&image, &registry, "team/app:v1");
    let root = TempRoot::new();
    let source = registry.reference("team/app:v1");
    pull(&root, &[&source]);

    // DEST defaults to IMAGE: everything is already there.
    let res = push(&root, &[&source]);
    assert_eq!(res["name"], source);
    assert!(actions(&res).iter().all(|a| a == "exists"), "{res}");

    let (_, patches, puts) = uploads(&registry);
    let dest = registry.reference("other/app:copy");
    let res = push(&root, &[&source, &dest]);
    assert_eq!(res["digest"], digest.to_string());
    assert!(actions(&res).iter().all(|a| a == "mounted"), "{res}");
    let (_, patches_after, puts_after) = uploads(&registry);
    assert_eq!(
        (patches_after, puts_after),
        (patches, puts),
        "a mount sent blob bytes"
    );
    let reply = registry.manifest("other/app", "copy");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body_digest(), digest);
    for blob in &image.blob_digests()[1..] {
        assert_eq!(registry.blob("other/app", blob).status, 200);
    }
}

#[test]
fn two_platform_index_keeps_its_digest() {
    let a = Registry::start();
    let b = Registry::start();
    let image = two_platform("multi");
    let digest = push_index(&image, &a, "multi:v1");
    let root = TempRoot::new();
    pull(&root, &["--all-platforms", &a.reference("multi:v1")]);
    let dest = b.reference("copy/multi:v1");
    let res = push(&root, &[&a.reference("multi:v1"), &dest]);
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(res["media_type"], OCI_INDEX);
    assert_eq!(res["manifests"].as_array().unwrap().len(), 2);
    let reply = b.manifest("copy/multi", "v1");
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    assert_eq!(reply.body_digest(), digest);
    for platform in &image.images {
        let m = b.manifest("copy/multi", &platform.manifest_digest.to_string());
        assert_eq!(m.status, 200, "{}", platform.manifest_digest);
    }
    let fresh = TempRoot::new();
    let back = pull(&fresh, &["--all-platforms", &dest]);
    assert_eq!(back["digest"], digest.to_string());

    // Pulled for one platform only, the index cannot be pushed whole.
    let one = TempRoot::new();
    pull(&one, &[&a.reference("multi:v1")]);
    let out = run(cmd("berth-push", &one).args([&a.reference("multi:v1"), &b.reference("x:1")]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--all-platforms"), "{}", stderr(&out));
}

#[test]
fn basic_auth_with_user_flag_and_unauthorized_without() {
    let a = Registry::start();
    let b = Registry::start_with_htpasswd("alice", "s3cret-pw");
    let image = ImageBuilder::new("v1").build();
    let digest = push_oci(&image, &a, "img:v1");
    let root = TempRoot::new();
    pull(&root, &[&a.reference("img:v1")]);
    let dest = b.reference("img:v1");

    let out = run(cmd("berth-push", &root).args([&a.reference("img:v1"), &dest]));
    assert_eq!(
        out.status.code(),
        Some(4),
        "anonymous push must be unauthorized"
    );

    let out =
        run(cmd("berth-push", &root).args(["-u", "alice:nope", &a.reference("img:v1"), &dest]));
    assert_eq!(out.status.code(), Some(4));
    assert!(!stderr(&out).contains("nope"), "password leaked");

    let res = push(
        &root,
        &["-u", "alice:s3cret-pw", &a.reference("img:v1"), &dest],
    );
    assert_eq!(res["digest"], digest.to_string());
    assert_eq!(b.manifest("img", "v1").body_digest(), digest);
}

#[test]
fn chunked_uploads_when_blobs_exceed_the_chunk_size() {
    let a = Registry::start();
    let b = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(300_000, 7).build();
    let digest = push_oci(&image, &a, "big:v1");
    let root = TempRoot::new();
    pull(&root, &[&a.reference("big:v1")]);
    let dest = b.reference("big:v1");
    let out = run(cmd("berth-push", &root)
        .env("BERTH_PUSH_CHUNK_SIZE", "65536")
        .args(["--format", "json", &a.reference("big:v1"), &dest]));
    assert!(out.status.success());
    let (_, patches, _) = uploads(&b);
    // The layer alone is > 300 kB: at least 5 chunks of 64 KiB.
    assert!(patches >= 5, "only {patches} PATCH requests");
    let fresh = TempRoot::new();
    assert_eq!(pull(&fresh, &[&dest])["digest"], digest.to_string());
    assert_store_blobs_match(fresh.path());

    let out = run(cmd("berth-push", &root)
        .env("BERTH_PUSH_CHUNK_SIZE", "zero")
        .args([&a.reference("big:v1"), &dest]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_blob_missing_from_the_store_fails_before_anything_is_sent() {
    let a = Registry::start();
    let b = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(10_000, 9).build();
    push_oci(&image, &a, "img:v1");
    let root = TempRoot::new();
    pull(&root, &[&a.reference("img:v1")]);
    let layer = image.layer_digests().last().unwrap().clone();
    std::fs::remove_file(root.blob_path(&layer)).unwrap();

    let out = run(cmd("berth-push", &root).args([&a.reference("img:v1"), &b.reference("img:v1")]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&layer.to_string()) && err.contains("missing"),
        "{err}"
    );
    assert_eq!(uploads(&b), (0, 0, 0), "blobs were sent");
    assert_eq!(b.manifest("img", "v1").status, 404);

    // An image the store does not have at all: not found.
    let out = run(cmd("berth-push", &root).args([&a.reference("nope:v1")]));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn bearer_tokens_are_asked_for_push_scopes_and_the_mount_source() {
    let registry = Registry::start();
    let front = TokenFront::start(&registry, TokenOptions::user("bob", "tok-pw"));
    let image = ImageBuilder::new("v1").random_layer(20_000, 11).build();
    let digest = push_oci(&image, &registry, "src/img:v1");
    let root = TempRoot::new();
    let source = front.reference("src/img:v1");
    pull(&root, &["-u", "bob:tok-pw", &source]);

    let out = run(cmd("berth-push", &root).args([&source, &front.reference("dst/img:v1")]));
    assert_eq!(out.status.code(), Some(4), "push without credentials");

    let res = push(
        &root,
        &["-u", "bob:tok-pw", &source, &front.reference("dst/img:v1")],
    );
    assert_eq!(res["digest"], digest.to_string());
    assert!(actions(&res).iter().all(|a| a == "mounted"), "{res}");
    let scopes = front.scopes_requested();
    assert!(
        scopes.iter().any(|s| s == "repository:dst/img:pull,push"),
        "{scopes:?}"
    );
    assert!(
        scopes.iter().any(|s| s == "repository:src/img:pull"),
        "{scopes:?}"
    );
    assert_eq!(registry.manifest("dst/img", "v1").body_digest(), digest);
}
