//! Proves the integration-test harness (`tests/common`) works, with no berth
//! binary involved: registries start and stop, skopeo pushes land in the
//! formats we asked for, auth fronts and fault proxies behave as documented.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn port_closed(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_err()
}

/// `key="value"` pairs of a WWW-Authenticate challenge, after the scheme.
fn challenge_params(header: &str) -> Vec<(String, String)> {
    let (_, params) = header.split_once(' ').unwrap_or((header, ""));
    params
        .split("\",")
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn registry_starts_answers_logs_and_cleans_up() {
    let registry = Registry::start();
    let reply = Reply::get(&registry.url("/v2/"));
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    Reply::get(&registry.url("/v2/"));
    assert_eq!(registry.count_requests("GET", "/v2/"), 2);
    assert!(registry.requests().iter().all(|r| r.status == 200));

    let (pid, dir, addr) = (
        registry.pid(),
        registry.dir().to_path_buf(),
        registry.addr().to_string(),
    );
    assert!(registry.storage_dir().starts_with(&dir));
    drop(registry);
    assert!(!process_alive(pid), "registry {pid} outlived its Drop");
    assert!(
        !dir.exists(),
        "registry dir {} outlived its Drop",
        dir.display()
    );
    assert!(port_closed(&addr));
}

#[test]
fn image_layout_is_consistent() {
    let image = ImageBuilder::new("v1")
        .random_layer(MIB, 7)
        .file_layer(&[("etc/motd", b"hello\n")])
        .build();
    assert_eq!(image.layers.len(), 3);
    assert!(image.layout.join("oci-layout").is_file());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], image.manifest_digest.to_string());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    for digest in image.blob_digests() {
        let bytes = std::fs::read(image.blob_path(&digest)).unwrap();
        assert_eq!(sha256(&bytes), digest);
    }
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    assert_eq!(config["architecture"], host_architecture());
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    let diff_ids: Vec<String> = image.diff_ids().iter().map(|d| d.to_string()).collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
    for layer in &image.layers {
        let tar = gunzip(&std::fs::read(image.blob_path(&layer.digest)).unwrap());
        assert_eq!(sha256(&tar), layer.diff_id);
        assert_eq!(layer.media_type, OCI_LAYER_GZIP);
    }
    // The random layer is incompressible and deterministic.
    assert!(image.layers[1].size > MIB as u64);
    let again = ImageBuilder::new("v1")
        .random_layer(MIB, 7)
        .file_layer(&[("etc/motd", b"hello\n")])
        .build();
    assert_eq!(again.manifest_digest, image.manifest_digest);

    // The base layer has a shell and its applets.
    let base = gunzip(&std::fs::read(image.blob_path(&image.layers[0].digest)).unwrap());
    let mut archive = tar::Archive::new(&base[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "bin/busybox",
        "bin/sh",
        "bin/sleep",
        "etc/passwd",
        "etc/group",
        "tmp/",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing: {names:?}"
        );
    }

    let layout = image.layout.clone();
    drop(image);
    assert!(!layout.exists());
}

#[test]
fn oci_push_lands_as_oci() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(MIB, 1).build();
    let digest = push_oci(&image, &registry, "test/oci:v1");
    assert_eq!(digest, image.manifest_digest);

    let by_digest = registry.manifest("test/oci", &digest.to_string());
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.header("content-type"), Some(OCI_MANIFEST));
    for layer in &image.layers {
        let blob = registry.blob("test/oci", &layer.digest);
        assert_eq!(blob.status, 200);
        assert_eq!(blob.body_digest(), layer.digest);
        assert_eq!(blob.body.len() as u64, layer.size);
    }
    let config = registry.blob("test/oci", &image.config_digest);
    assert_eq!(config.body, image.config);
    for layer in &image.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1);
    }
}

#[test]
fn v2s2_push_lands_as_docker_schema2() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").build();
    let digest = push_docker_v2s2(&image, &registry, "test/docker:v1");
    assert_ne!(
        digest, image.manifest_digest,
        "conversion changes the manifest"
    );

    let reply = registry.manifest("test/docker", "v1");
    assert_eq!(reply.header("content-type"), Some(DOCKER_MANIFEST));
    let manifest = reply.json();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.layers.len());
    for (converted, original) in layers.iter().zip(&image.layers) {
        assert_eq!(converted["mediaType"], DOCKER_LAYER_GZIP);
        assert_eq!(converted["digest"], original.digest.to_string());
    }
    // Asked for OCI only, the registry refuses (it holds schema2) rather
    // than converting.
    let oci_only = registry.fetch(
        "GET",
        "/v2/test/docker/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
    );
    assert_ne!(oci_only.header("content-type"), Some(OCI_MANIFEST));
}

#[test]
fn index_push_keeps_both_platforms() {
    let registry = Registry::start();
    let image = two_platform("multi");
    let digest = push_index(&image, &registry, "test/multi:v1");
    assert_eq!(digest, image.index_digest);

    let index = registry.manifest("test/multi", "v1");
    assert_eq!(index.header("content-type"), Some(OCI_INDEX));
    let index = index.json();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let architectures: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(architectures, ["amd64", "arm64"]);

    let arm = image.for_platform("linux", "arm64");
    let amd = image.for_platform("linux", "amd64");
    assert_ne!(arm.manifest_digest, amd.manifest_digest);
    assert_eq!(
        arm.layers[0], amd.layers[0],
        "platforms share the base layer"
    );
    assert_ne!(arm.layers[1], amd.layers[1], "and differ in the last one");
    let manifest = registry.manifest("test/multi", &arm.manifest_digest.to_string());
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.body, arm.manifest);
    let config = registry.blob("test/multi", &arm.config_digest).json();
    assert_eq!(config["architecture"], "arm64");
}

#[test]
fn htpasswd_registry_wants_credentials() {
    let registry = Registry::start_with_htpasswd("alice", "s3cret");
    let anonymous = Reply::get(&registry.url("/v2/"));
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic "));
    let wrong = Reply::fetch(
        "GET",
        &registry.url("/v2/"),
        &[("Authorization", &basic_auth("alice", "wrong"))],
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(registry.fetch("GET", "/v2/", &[]).status, 200);

    // skopeo pushes with the registry's credentials.
    let image = ImageBuilder::new("v1").build();
    push_oci(&image, &registry, "private/img:v1");
    let unauthenticated = Reply::get(&registry.url("/v2/private/img/manifests/v1"));
    assert_eq!(unauthenticated.status, 401);
}

#[test]
fn token_front_issues_tokens_and_proxies() {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(256 * 1024, 3).build();
    push_oci(&image, &registry, "team/app:v1");
    let front = TokenFront::start(&registry, TokenOptions::user("bob", "hunter2"));
    let manifest_url = front.url("/v2/team/app/manifests/v1");
    let accept = [("Accept", ACCEPT_ALL_MANIFESTS)];

    // 1. Challenge.
    let challenge = Reply::fetch("GET", &manifest_url, &accept);
    assert_eq!(challenge.status, 401);
    let header = challenge.header("www-authenticate").unwrap().to_string();
    assert!(header.starts_with("Bearer "), "{header}");
    let params = challenge_params(&header);
    assert_eq!(param(&params, "realm"), Some(front.realm()));
    assert_eq!(param(&params, "service"), Some(SERVICE));
    assert_eq!(param(&params, "scope"), Some("repository:team/app:pull"));

    // 2. Token: refused without or with bad credentials, granted with good.
    let token_url = format!(
        "{}?service={SERVICE}&scope=repository:team/app:pull",
        front.realm()
    );
    assert_eq!(Reply::get(&token_url).status, 401);
    let bad = basic_auth("bob", "nope");
    assert_eq!(
        Reply::fetch("GET", &token_url, &[("Authorization", &bad)]).status,
        401
    );
    let good = basic_auth("bob", "hunter2");
    let token = Reply::fetch("GET", &token_url, &[("Authorization", &good)]).json();
    let token = token["token"].as_str().unwrap().to_string();
    assert_eq!(front.scopes_requested().len(), 3);

    // 3. Proxied with the token.
    let bearer = format!("Bearer {token}");
    let manifest = Reply::fetch(
        "GET",
        &manifest_url,
        &[("Accept", ACCEPT_ALL_MANIFESTS), ("Authorization", &bearer)],
    );
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.body_digest(), image.manifest_digest);
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(image.manifest_digest.to_string().as_str())
    );
    let blob = Reply::fetch(
        "GET",
        &front.url(&format!("/v2/team/app/blobs/{}", image.layers[1].digest)),
        &[("Authorization", &bearer)],
    );
    assert_eq!(blob.body_digest(), image.layers[1].digest);
    assert_eq!(front.proxied_requests(), 2);

    // 4. The token is for team/app only.
    let other = Reply::fetch(
        "GET",
        &front.url("/v2/team/other/manifests/v1"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(other.status, 401);
    assert!(other
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    front.revoke_tokens();
    assert_eq!(
        Reply::fetch("GET", &manifest_url, &[("Authorization", &bearer)]).status,
        401
    );
    assert_eq!(front.token_requests(), 3);

    // 5. A real client (skopeo) does the whole dance and pulls every blob.
    let out = tempfile::tempdir().unwrap();
    let output = Command::new("skopeo")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
        ])
        .args(["--src-creds", "bob:hunter2"])
        .arg(format!("docker://{}", front.reference("team/app:v1")))
        .arg(format!("oci:{}:v1", out.path().display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for digest in image.blob_digests() {
        assert!(out.path().join("blobs/sha256").join(digest.hex()).is_file());
    }
    assert_eq!(front.token_requests(), 4);
}

#[test]
fn token_front_anonymous_and_basic_modes() {
    let registry = Registry::start();
    let anonymous = TokenFront::start(&registry, TokenOptions::anonymous());
    let token = Reply::get(&format!(
        "{}?service={SERVICE}&scope=repository:a/b:pull,push",
        anonymous.realm()
    ))
    .json();
    assert_eq!(token["expires_in"], 300);
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    // Anonymous tokens pull but do not push.
    let tags = Reply::fetch(
        "GET",
        &anonymous.url("/v2/a/b/tags/list"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(tags.status, 404, "passed auth, and the repo does not exist");
    let upload = Reply::fetch(
        "POST",
        &anonymous.url("/v2/a/b/blobs/uploads/"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(upload.status, 401);

    let basic = TokenFront::start_basic(&registry, "carol", "pw");
    let refused = Reply::get(&basic.url("/v2/"));
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic "));
    let ok = Reply::fetch(
        "GET",
        &basic.url("/v2/"),
        &[("Authorization", &basic_auth("carol", "pw"))],
    );
    assert_eq!(ok.status, 200);

    let addr = basic.addr();
    drop(basic);
    assert!(port_closed(&addr));
}

/// A registry with one image whose second layer is `size` random bytes,
/// and a fault proxy in front of it.
fn faulty(size: usize) -> (Registry, OciImage, FaultProxy, Vec<u8>) {
    let registry = Registry::start();
    let image = ImageBuilder::new("v1").random_layer(size, 11).build();
    push_oci(&image, &registry, "f/img:v1");
    let proxy = FaultProxy::start(&registry);
    let blob = std::fs::read(image.blob_path(&image.layers[1].digest)).unwrap();
    (registry, image, proxy, blob)
}

fn blob_path(image: &OciImage) -> String {
    format!("/v2/f/img/blobs/{}", image.layers[1].digest)
}

#[test]
fn fault_proxy_flips_a_byte() {
    let (_registry, image, proxy, blob) = faulty(512 * 1024);
    let layer = image.layers[1].digest.clone();
    let url = proxy.url(&blob_path(&image));

    assert_eq!(Reply::get(&url).body, blob, "Pass relays unchanged");
    proxy.set(Fault::FlipByte {
        digest: layer.clone(),
    });
    let flipped = Reply::get(&url);
    assert_eq!(flipped.status, 200);
    assert_eq!(flipped.body.len(), blob.len());
    assert_ne!(flipped.body_digest(), layer);
    let differing: Vec<usize> = (0..blob.len())
        .filter(|&i| blob[i] != flipped.body[i])
        .collect();
    assert_eq!(differing, [blob.len() / 2]);

    // Also inside a range answer that covers the middle.
    let half = blob.len() / 2;
    let range = format!("bytes={}-{}", half - 10, half + 10);
    let part = Reply::fetch("GET", &url, &[("Range", &range)]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body[10], !blob[half]);
    assert_eq!(proxy.blob_gets(&layer), 3);
    assert_eq!(
        proxy.bytes_served(&layer),
        2 * blob.len() as u64 + 21,
        "counts bytes per blob"
    );
}

#[test]
fn fault_proxy_cuts_and_range_resumes() {
    let (registry, image, proxy, blob) = faulty(512 * 1024);
    let layer = image.layers[1].digest.clone();
    let url = proxy.url(&blob_path(&image));
    let cut_at = 100_000;
    proxy.set_for(
        Fault::Cut {
            digest: layer.clone(),
            after_bytes: cut_at,
        },
        1,
    );

    // The client is told the full length and gets only the first part.
    let response = agent().get(&url).call().unwrap();
    assert_eq!(
        response.headers().get("content-length").unwrap(),
        &blob.len().to_string()
    );
    let mut received = Vec::new();
    let result = response
        .into_body()
        .into_reader()
        .read_to_end(&mut received);
    assert!(
        result.is_err(),
        "a cut body is an error, not a short success"
    );
    assert_eq!(received.len() as u64, cut_at);
    assert_eq!(received[..], blob[..cut_at as usize]);
    assert_eq!(proxy.fault(), Fault::Pass, "set_for(…, 1) reverts");

    // Resume: the registry honours a forwarded Range.
    let tail = Reply::fetch("GET", &url, &[("Range", &format!("bytes={cut_at}-"))]);
    assert_eq!(tail.status, 206);
    assert_eq!(
        tail.header("content-range").unwrap(),
        format!("bytes {cut_at}-{}/{}", blob.len() - 1, blob.len())
    );
    assert_eq!(tail.body[..], blob[cut_at as usize..]);
    assert_eq!(proxy.bytes_served(&layer), blob.len() as u64);
    let requests = proxy.blob_requests(&layer);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].bytes, cut_at);
    assert!(requests[0].fault.as_deref().unwrap().starts_with("Cut"));
    assert_eq!(requests[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(registry.blob_gets(&layer), 2);
}

#[test]
fn fault_proxy_stalls_throttles_and_fails() {
    let (_registry, image, proxy, blob) = faulty(256 * 1024);
    let layer = image.layers[1].digest.clone();
    let path = blob_path(&image);

    // Stall: a few bytes, then silence until the fault changes.
    proxy.set(Fault::Stall {
        digest: layer.clone(),
        after_bytes: 1000,
    });
    let mut conn = TcpStream::connect(proxy.addr()).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(proxy.wait_for_bytes(&layer, 1000, Duration::from_secs(5)));
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => panic!("stalled connection closed early"),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(_) => break, // timed out: stalled
        }
    }
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(received.len() - head_end, 1000);
    proxy.set(Fault::Pass);
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(conn.read(&mut buf).unwrap_or(0), 0, "released stall closes");

    // Throttle: 256 KiB at 1 MiB/s takes about a quarter second.
    proxy.set(Fault::Throttle {
        bytes_per_sec: MIB as u64,
    });
    let started = Instant::now();
    let reply = Reply::get(&proxy.url(&path));
    let took = started.elapsed();
    assert_eq!(reply.body, blob);
    assert!(took >= Duration::from_millis(200), "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Status: an error answer without asking the registry.
    proxy.set_for(
        Fault::Status {
            path_part: "/manifests/".into(),
            status: 503,
        },
        1,
    );
    let url = proxy.url("/v2/f/img/manifests/v1");
    let accept = [("Accept", ACCEPT_ALL_MANIFESTS)];
    assert_eq!(Reply::fetch("GET", &url, &accept).status, 503);
    assert_eq!(Reply::fetch("GET", &url, &accept).status, 200);

    let addr = proxy.addr();
    drop(proxy);
    assert!(port_closed(&addr));
}

#[test]
fn fault_proxy_drop_ends_a_throttled_transfer() {
    let (_registry, image, proxy, _blob) = faulty(MIB);
    let layer = image.layers[1].digest.clone();
    proxy.set(Fault::Throttle {
        bytes_per_sec: 64 * 1024,
    });
    let url = proxy.url(&blob_path(&image));
    let client = std::thread::spawn(move || Reply::try_fetch("GET", &url, &[]));
    assert!(proxy.wait_for_bytes(&layer, 64 * 1024, Duration::from_secs(5)));
    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "Drop waited for the transfer"
    );
    assert!(client.join().unwrap().is_err(), "the client sees the cut");
}

#[test]
fn temp_root_walk_and_bin() {
    let root = TempRoot::new();
    assert!(walk_store_blobs(root.path()).is_empty());
    let good = b"good blob".to_vec();
    let good_digest = Digest::of(&good);
    std::fs::create_dir_all(root.blob_path(&good_digest).parent().unwrap()).unwrap();
    std::fs::write(root.blob_path(&good_digest), &good).unwrap();
    assert_eq!(assert_store_blobs_match(root.path()).len(), 1);
    assert!(root.has_blob(&good_digest));

    let liar = Digest::of(b"something else");
    std::fs::write(root.blob_path(&liar), b"not that").unwrap();
    let blobs = root.blobs();
    assert_eq!(blobs.len(), 2);
    let bad: Vec<&StoreBlob> = blobs.iter().filter(|b| !b.matches()).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].name, liar.to_string());
    assert_eq!(bad[0].actual, Digest::of(b"not that"));

    let path = root.path().to_path_buf();
    drop(root);
    assert!(!path.exists());

    // The crate's own binary is found next to the tests.
    assert!(bin("berth").is_file());
}

#[test]
fn bench_make_image_script_builds_a_valid_layout() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/make-image.sh");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("image");
    // Small sizes here; the defaults make the 150 MB+ benchmark image.
    let output = Command::new("bash")
        .arg(&script)
        .arg(&layout)
        .arg("bench")
        .env("RANDOM_LAYERS", "2")
        .env("RANDOM_LAYER_MB", "1")
        .env("SMALL_FILES", "50")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // skopeo reads it as an OCI image, and pushes it.
    let registry = Registry::start();
    skopeo_copy(
        &format!("oci:{}:bench", layout.display()),
        &registry,
        "bench/img:v1",
        &[],
    );
    let manifest = registry.manifest("bench/img", "v1");
    assert_eq!(manifest.header("content-type"), Some(OCI_MANIFEST));
    let layers = manifest.json()["layers"].as_array().unwrap().len();
    assert_eq!(layers, 1 + 2 + 1, "base, random layers, small files");
}
