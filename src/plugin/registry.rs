//! The table of compiled-in plugins. This file only lists; the probes live
//! in `probe.rs` (and, as implementations grow, beside them).

use super::probe;
use super::{PluginKind, PluginSpec};

/// Every compiled-in plugin, in the order they are probed and listed.
///
/// To add a plugin:
///
/// 1. Write its probe, `fn(&InitContext) -> Result<(), String>`, next to the
///    implementation (e.g. `pub fn probe` in `src/snapshot/overlay/`): check
///    what the host must offer (kernel support, a binary on PATH, a
///    filesystem feature) without creating anything, and call
///    [`InitContext::check_keys`](super::InitContext::check_keys) with the
///    keys its `[plugins.<kind>.<id>]` table accepts.
/// 2. Add one [`PluginSpec`] below, grouped with its kind, with a lowercase
///    id unique within the kind (it is the config key and what
///    `default_snapshotter` / `default_runtime` name).
/// 3. Document the keys of its table in `src/config/reference.toml`.
///
/// The unit tests check ids are unique and well formed; the config loader
/// starts accepting `[plugins.<kind>.<id>]` for the new entry by itself.
static REGISTRY: &[PluginSpec] = &[
    PluginSpec {
        kind: PluginKind::Content,
        id: "local",
        description: "content-addressed blobs as files under <root>/content",
        capabilities: &["ingest", "resume", "labels"],
        init: probe::content_local,
    },
    PluginSpec {
        kind: PluginKind::Metadata,
        id: "sqlite",
        description: "images, containers and leases in one SQLite file, shared by processes",
        capabilities: &["wal", "migrations"],
        init: probe::metadata_sqlite,
    },
    PluginSpec {
        kind: PluginKind::Distribution,
        id: "registry",
        description: "OCI distribution client: resolve, pull and push",
        capabilities: &["oci", "docker-v2", "auth-basic", "auth-bearer", "resume"],
        init: probe::distribution_registry,
    },
    PluginSpec {
        kind: PluginKind::Snapshotter,
        id: "overlayfs",
        description:
            "layers as overlayfs lower dirs: prepare is two mkdirs, mounts need CAP_SYS_ADMIN",
        capabilities: &["overlay-whiteouts", "cheap-prepare", "long-chains", "views"],
        init: probe::snapshotter_overlayfs,
    },
    PluginSpec {
        kind: PluginKind::Snapshotter,
        id: "native",
        description: "layers as full directory copies (reflinked where possible), any filesystem",
        capabilities: &["delete-whiteouts", "reflink", "any-filesystem", "views"],
        init: probe::snapshotter_native,
    },
    PluginSpec {
        kind: PluginKind::Runtime,
        id: "berth",
        description: "built-in: namespaces, mounts, pivot_root and cgroups done by berth itself",
        capabilities: &["terminal", "cgroups-v1", "cgroups-v2"],
        init: probe::runtime_berth,
    },
    PluginSpec {
        kind: PluginKind::Runtime,
        id: "runc",
        description: "the runc binary on PATH, driven through its OCI CLI",
        capabilities: &["oci-cli", "terminal", "cgroups-v1", "cgroups-v2"],
        init: probe::runtime_runc,
    },
    PluginSpec {
        kind: PluginKind::Runtime,
        id: "crun",
        description: "the crun binary on PATH, driven through its OCI CLI; refuses hybrid cgroups",
        capabilities: &["oci-cli", "terminal", "cgroups-v1", "cgroups-v2"],
        init: probe::runtime_crun,
    },
];

/// The compiled-in plugins. To add one, see the doc of the `REGISTRY` table
/// in `src/plugin/registry.rs`.
pub fn registry() -> &'static [PluginSpec] {
    REGISTRY
}
