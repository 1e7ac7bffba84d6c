//! cgroup v2: one unified hierarchy; a controller works in a group only if
//! every ancestor enabled it in `cgroup.subtree_control`.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{fs, Error, Result};

/// The controllers we enable for a berth container's group, when the
/// hierarchy offers them.
pub(crate) const USED: &[&str] = &["cpu", "memory", "pids", "io"];

pub(crate) fn create(root: &Path, rel: &str) -> Result<()> {
    let mut dir = root.to_path_buf();
    for component in rel.split('/') {
        enable_controllers(&dir)?;
        dir.push(component);
        fs::mkdir(&dir)?;
    }
    Ok(())
}

/// Enables in `dir`'s children the controllers we use that `dir` has.
/// Already-enabled ones are left alone, so a group holding processes (where
/// any write would fail) is not touched when there is nothing to do.
fn enable_controllers(dir: &Path) -> Result<()> {
    let available = fs::read(&dir.join("cgroup.controllers"))?;
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&subtree)?;
    let missing: Vec<String> = USED
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(&subtree, &missing.join(" "))
}

/// cpu.weight (1..10000) for v1-style cpu shares (2..262144): the linear
/// map of one range onto the other, so shares 1024 (the default) become
/// weight 39, as other runtimes compute it.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

pub(crate) fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    let invalid = |what, reason: String| Error::InvalidResource {
        path: dir.display().to_string(),
        what,
        reason,
    };
    if let Some(m) = r.memory() {
        if let Some(res) = m.reservation() {
            fs::write(&dir.join("memory.low"), &bytes_or_max(res))?;
        }
        if let Some(limit) = m.limit().filter(|l| *l != 0) {
            fs::write(&dir.join("memory.max"), &bytes_or_max(limit))?;
        }
        if let Some(swap) = m.swap() {
            // The spec's swap is memory plus swap; v2 limits swap alone.
            let value = match (swap, m.limit()) {
                (-1, _) => "max".to_string(),
                (swap, Some(limit)) if limit > 0 && swap >= limit => (swap - limit).to_string(),
                (swap, limit) => {
                    return Err(invalid(
                        "memory.swap",
                        format!(
                            "{swap} is memory plus swap; it needs a memory limit no larger (limit: {limit:?})"
                        ),
                    ))
                }
            };
            fs::write(&dir.join("memory.swap.max"), &value)?;
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            fs::write(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        let quota = cpu.quota().filter(|q| *q != 0);
        let period = cpu.period().filter(|p| *p != 0);
        if quota.is_some() || period.is_some() {
            let quota = match quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let value = match period {
                Some(p) => format!("{quota} {p}"),
                None => quota,
            };
            fs::write(&dir.join("cpu.max"), &value)?;
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            fs::write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            fs::write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(pids) = r.pids() {
        fs::write(&dir.join("pids.max"), &super::pids_max(pids.limit()))?;
    }
    if let Some(unified) = r.unified() {
        for (key, value) in unified {
            if key.contains('/') || key.starts_with('.') {
                return Err(invalid(
                    "unified",
                    format!("{key:?} is not a cgroup file name"),
                ));
            }
            fs::write(&dir.join(key), value)?;
        }
    }
    // Device rules: see Cgroup::apply (eBPF only; skipped).
    Ok(())
}

fn bytes_or_max(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}
