//! The OCI image and Docker schema2 documents a pull walks: index (or
//! manifest list) → manifest → config and layers.
//!
//! These types read only the fields berth needs and are never serialised
//! back: digests are always computed over the bytes as received, because
//! re-serialising JSON changes them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::content::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// A config blob is read into memory to check it; anything this large is
/// not an image config.
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Index,
    Manifest,
}

/// What a manifest media type says the document is, or why berth won't
/// read it.
pub fn classify(media_type: &str) -> Result<DocumentKind, String> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Ok(DocumentKind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(DocumentKind::Manifest),
        t if DOCKER_SCHEMA1.contains(&t) => Err(
            "Docker schema1 manifests are deprecated and not supported; push the image again with a current client".to_string(),
        ),
        t => Err(format!("unsupported manifest media type {t:?}")),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config berth checks at pull time.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigHead {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform images are pulled for by default: this host's.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image built for `other` serves a request for `self`. A
    /// request without a variant takes any variant; `arm64` treats an
    /// absent variant and `v8` as the same thing, as docker does.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        let norm = |v: &Option<String>| match (self.architecture.as_str(), v.as_deref()) {
            ("arm64", None | Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(_) => norm(&self.variant) == norm(&other.variant),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch or os/arch/variant, e.g. linux/arm64"
            ));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing_and_matching() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(p.matches(&v8));
        assert!(v8.matches(&p));
        let arm7: Platform = "linux/arm/v7".parse().unwrap();
        let arm6: Platform = "linux/arm/v6".parse().unwrap();
        assert!(!arm7.matches(&arm6));
        assert!(!p.matches(&"linux/amd64".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }

    #[test]
    fn docker_and_oci_documents_parse() {
        let m: Manifest = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{d}","size":3}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{d}","size":3}}]}}"#,
            d = Digest::of(b"abc")
        ))
        .unwrap();
        assert_eq!(m.layers.len(), 1);
        assert_eq!(classify(DOCKER_LIST), Ok(DocumentKind::Index));
        assert!(classify(DOCKER_SCHEMA1[1]).is_err());
        assert!(classify("text/html").is_err());
    }
}
