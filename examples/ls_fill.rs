//! Fills a berth store for `bench/ls.sh`: IMAGES images (each a manifest,
//! a config and a layer in the content store, with their records and one
//! committed native snapshot) and CONTAINERS stopped containers (each with
//! its active native snapshot on an image's), through the library. The
//! store passes `berth-ls --check`.
//!
//! Usage: cargo run --release --example ls_fill -- ROOT [CONTAINERS] [IMAGES]

use std::path::Path;

use berth::content::{Digest, Store};
use berth::metadata::{
    self, ContainerRecord, ContainerStatus, ContentRecord, Db, ImageRecord, Labels, SnapshotRecord,
};
use berth::snapshot::{Kind, Usage};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(
        args.get(1)
            .expect("usage: ls_fill ROOT [CONTAINERS] [IMAGES]"),
    );
    let containers: usize = args.get(2).map_or(10_000, |a| a.parse().unwrap());
    let images: usize = args.get(3).map_or(1_000, |a| a.parse().unwrap());
    std::fs::create_dir_all(root).unwrap();
    let store = Store::open(root).unwrap();
    let mut db = Db::open(root).unwrap();
    let snap_dir = root.join("snapshots").join("native");
    let started = std::time::Instant::now();
    // About the size of a real config.json.
    let spec = format!(
        "{{\"ociVersion\":\"1.2.0\",\"pad\":\"{}\"}}",
        "x".repeat(4000)
    );

    let mut content = Vec::new();
    let mut image_recs = Vec::new();
    let mut image_snaps = Vec::new();
    for i in 0..images {
        let layer = format!("layer {i}").repeat(64).into_bytes();
        let layer_d = Digest::of(&layer);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_d.to_string()]},
            "n": i,
        })
        .to_string()
        .into_bytes();
        let config_d = Digest::of(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_d.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_d.to_string(), "size": layer.len()}],
        })
        .to_string()
        .into_bytes();
        let manifest_d = Digest::of(&manifest);
        for (d, data) in [
            (&layer_d, &layer),
            (&config_d, &config),
            (&manifest_d, &manifest),
        ] {
            store.write_blob(d, data).unwrap();
        }
        let chain = format!(
            "sha256:{}",
            Digest::of(format!("chain {i}").as_bytes()).hex()
        );
        content.push(ContentRecord {
            digest: manifest_d.clone(),
            size: manifest.len() as u64,
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            labels: Labels::from([
                (
                    "containerd.io/gc.ref.content.config".into(),
                    config_d.to_string(),
                ),
                (
                    "containerd.io/gc.ref.content.l.0".into(),
                    layer_d.to_string(),
                ),
            ]),
        });
        content.push(ContentRecord {
            digest: config_d,
            size: config.len() as u64,
            media_type: Some("application/vnd.oci.image.config.v1+json".into()),
            labels: Labels::from([("containerd.io/gc.ref.snapshot.native".into(), chain.clone())]),
        });
        content.push(ContentRecord {
            digest: layer_d,
            size: layer.len() as u64,
            media_type: Some("application/vnd.oci.image.layer.v1.tar".into()),
            labels: Labels::new(),
        });
        image_recs.push(ImageRecord {
            name: format!("bench.local/img{i}:latest"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: manifest_d,
            size: manifest.len() as u64,
            labels: Labels::from([(
                format!("{}native", berth::image::UNPACKED_LABEL_PREFIX),
                chain.clone(),
            )]),
            created_ns: 0,
            updated_ns: 0,
        });
        image_snaps.push(chain);
    }

    db.write(|tx| {
        for rec in &content {
            metadata::put_content(tx, rec)?;
        }
        for rec in &image_recs {
            metadata::put_image(tx, rec)?;
        }
        for chain in &image_snaps {
            let id = metadata::allocate_snapshot_id(tx, "native")?;
            std::fs::create_dir_all(snap_dir.join(id.to_string()).join("fs")).unwrap();
            metadata::insert_snapshot(
                tx,
                &SnapshotRecord {
                    snapshotter: "native".into(),
                    key: chain.clone(),
                    id,
                    parent: None,
                    kind: Kind::Committed,
                    labels: Labels::new(),
                    created_ns: 0,
                    updated_ns: 0,
                    usage: Some(Usage {
                        size: 4096,
                        inodes: 1,
                    }),
                },
            )?;
        }
        for n in 0..containers {
            let id = format!("{:064x}", n as u128 * 0x9e37_79b9_7f4a_7c15 + 1);
            let image = n % images.max(1);
            let key = format!("container-{id}");
            let sid = metadata::allocate_snapshot_id(tx, "native")?;
            std::fs::create_dir_all(snap_dir.join(sid.to_string()).join("fs")).unwrap();
            metadata::insert_snapshot(
                tx,
                &SnapshotRecord {
                    snapshotter: "native".into(),
                    key: key.clone(),
                    id: sid,
                    parent: image_snaps.get(image).cloned(),
                    kind: Kind::Active,
                    labels: Labels::from([("berth.io/container".into(), id.clone())]),
                    created_ns: 0,
                    updated_ns: 0,
                    usage: None,
                },
            )?;
            let now = berth_now();
            let rec = ContainerRecord {
                id: id.clone(),
                name: format!("bench-{n}"),
                image: image_recs[image].name.clone(),
                image_digest: Some(image_recs[image].digest.to_string()),
                snapshotter: "native".into(),
                snapshot_key: key,
                runtime: "runc".into(),
                spec: spec.clone(),
                command: vec!["sh".into(), "-c".into(), format!("echo container {n}")],
                status: if n % 3 == 0 {
                    ContainerStatus::Created
                } else {
                    ContainerStatus::Stopped
                },
                pid: None,
                pid_start: None,
                supervisor_pid: None,
                supervisor_start: None,
                exit_code: (n % 3 != 0).then_some((n % 5) as i32),
                oom_killed: false,
                created_ns: now - 3_600_000_000_000,
                started_ns: (n % 3 != 0).then_some(now - 3_000_000_000_000),
                finished_ns: (n % 3 != 0).then_some(now - 600_000_000_000),
                labels: Labels::from([("bench".into(), (n % 10).to_string())]),
                auto_remove: false,
                cgroup_path: None,
                log_path: None,
            };
            metadata::insert_container(tx, &rec)?.unwrap();
            std::fs::create_dir_all(root.join("containers").join(&id)).unwrap();
        }
        Ok(())
    })
    .unwrap();
    eprintln!(
        "ls_fill: {containers} containers, {images} images in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

fn berth_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}
