#![allow(dead_code, unused_imports)]
//! The integration-test harness: real registries, real images, and the
//! fronts and faults that a pull meets in the wild, all on 127.0.0.1.
//!
//! Every integration test file says `mod common;` and takes what it needs:
//!
//! - [`Registry`]: the reference registry (`docker-registry serve`) on a free
//!   port, plain or with htpasswd (Basic) auth, and its access log.
//! - [`ImageBuilder`]: OCI image layouts made in Rust from busybox-static and
//!   deterministic random layers; [`MultiArchImage`] for index selection.
//! - [`push_oci`], [`push_docker_v2s2`], [`push_index`]: skopeo puts those
//!   images into a [`Registry`] and tells the digest the registry reports.
//! - [`TokenFront`]: bearer-token auth (realm, token endpoint, scopes) in
//!   front of a plain registry, or Basic-only auth.
//! - [`FaultProxy`]: corrupts, cuts, stalls or throttles blob bodies, and
//!   counts the bytes it served per blob.
//! - [`Env`]: a store with a busybox image pulled, to run containers in.
//! - [`bin`], [`TempRoot`], [`walk_store_blobs`]: run berth's binaries on a
//!   throwaway store root and check every blob in it matches its name.
//!
//! Lifecycle: each of these owns what it started. Dropping it, also while a
//! test panics, kills and reaps processes, joins threads, closes ports and
//! removes temp dirs. Keep them in locals, not in statics: statics are never
//! dropped, so their processes would outlive the test binary.
//!
//! No traffic leaves 127.0.0.1: every address here is a loopback one, and
//! child processes run with proxy variables removed.

mod bundle;
mod client;
mod containers;
mod fault;
mod http;
mod images;
mod layer;
mod net;
mod probe;
mod registry;
mod skopeo;
mod store;
mod token;
mod tools;

pub use bundle::busybox_rootfs;
pub use client::{agent, assert_loopback, Reply, ACCEPT_ALL_MANIFESTS};
pub use containers::Env;
pub use fault::{Fault, FaultProxy, Served};
pub use images::{
    host_architecture, random_bytes, two_platform, Image, ImageBuilder, Layer, MultiArchImage,
    OciImage, DOCKER_CONFIG, DOCKER_INDEX, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
pub use layer::{LayerTar, LAYER_MTIME};
pub use net::free_port;
pub use probe::{normalise_probe, PROBE};
pub use registry::{basic_auth, LoggedRequest, Registry, RegistryOptions};
pub use skopeo::{push_docker_v2s2, push_index, push_oci, skopeo_copy, split_reference};
pub use store::{assert_store_blobs_match, bin, walk_store_blobs, StoreBlob, TempRoot};
pub use token::{TokenFront, TokenOptions, SERVICE};
pub use tools::{gunzip, gzip, sha256, sha256_files};

pub use berth::content::Digest;
