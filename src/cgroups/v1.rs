//! cgroup v1: one hierarchy per controller (or per co-mounted set).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::{fs, Error, Result};

/// The controllers a berth container's group is created in.
pub(crate) const USED: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "pids", "blkio", "freezer",
];

/// Device rules every container gets after the spec's own, as
/// `devices.allow` lines: creating device nodes of any kind (mknod still
/// needs CAP_MKNOD, and using them needs a rule), and the character
/// devices programs assume: null, zero, full, random, urandom, tty,
/// console, ptmx and the pseudo-terminal slaves.
pub(crate) const DEFAULT_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

pub(crate) type Controllers = BTreeMap<String, PathBuf>;

/// The group's directory under `controller`.
pub(crate) fn dir(c: &Controllers, controller: &'static str, rel: &str) -> Result<PathBuf> {
    c.get(controller)
        .map(|m| m.join(rel))
        .ok_or_else(|| Error::MissingController {
            path: format!("/{rel}"),
            controller,
        })
}

/// The group's directory in each distinct mounted hierarchy we use
/// (co-mounted controllers share one).
pub(crate) fn dirs(c: &Controllers, rel: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for name in USED {
        if let Some(m) = c.get(*name) {
            let d = m.join(rel);
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

pub(crate) fn create(c: &Controllers, rel: &str) -> Result<()> {
    let cpuset = c.get("cpuset");
    for name in USED {
        let Some(mount) = c.get(*name) else { continue };
        let mut dir = mount.clone();
        for component in rel.split('/') {
            let parent = dir.clone();
            dir.push(component);
            fs::mkdir(&dir)?;
            if Some(mount) == cpuset {
                inherit_cpuset(&parent, &dir)?;
            }
        }
    }
    Ok(())
}

/// A new cpuset group starts with no cpus and no memory nodes, and no
/// process can join it until both are set: copy the parent's.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if fs::read(&dir.join(file))?.trim().is_empty() {
            let value = fs::read(&parent.join(file))?;
            fs::write(&dir.join(file), value.trim())?;
        }
    }
    Ok(())
}

pub(crate) fn apply(c: &Controllers, rel: &str, r: &LinuxResources) -> Result<()> {
    let invalid = |what, reason: &str| Error::InvalidResource {
        path: format!("/{rel}"),
        what,
        reason: reason.to_string(),
    };
    if let Some(m) = r.memory() {
        let d = dir(c, "memory", rel)?;
        if let Some(res) = m.reservation() {
            fs::write(&d.join("memory.soft_limit_in_bytes"), &res.to_string())?;
        }
        let limit_file = d.join("memory.limit_in_bytes");
        let memsw_file = d.join("memory.memsw.limit_in_bytes");
        match (m.limit().filter(|l| *l != 0), m.swap()) {
            (limit, Some(swap)) => {
                if swap != -1 && limit.is_some_and(|l| l > 0 && swap < l) {
                    return Err(invalid(
                        "memory.swap",
                        "is memory plus swap, so it cannot be below memory.limit",
                    ));
                }
                // The kernel keeps memsw >= limit at every moment: raise
                // memsw before the limit, lower it after.
                let current = fs::read(&memsw_file)?.trim().parse::<i64>().unwrap_or(-1);
                let swap_first = swap == -1 || current == -1 || swap > current;
                if swap_first {
                    fs::write(&memsw_file, &swap.to_string())?;
                }
                if let Some(limit) = limit {
                    fs::write(&limit_file, &limit.to_string())?;
                }
                if !swap_first {
                    fs::write(&memsw_file, &swap.to_string())?;
                }
            }
            (Some(limit), None) => fs::write(&limit_file, &limit.to_string())?,
            (None, None) => {}
        }
    }
    if let Some(cpu) = r.cpu() {
        if cpu.shares().is_some() || cpu.quota().is_some() || cpu.period().is_some() {
            let d = dir(c, "cpu", rel)?;
            if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
                fs::write(&d.join("cpu.shares"), &shares.to_string())?;
            }
            // The quota is checked against the period: period first.
            if let Some(period) = cpu.period().filter(|p| *p != 0) {
                fs::write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
            }
            if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
                fs::write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            let d = dir(c, "cpuset", rel)?;
            if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
                fs::write(&d.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
                fs::write(&d.join("cpuset.mems"), mems)?;
            }
        }
    }
    if let Some(pids) = r.pids() {
        let d = dir(c, "pids", rel)?;
        fs::write(&d.join("pids.max"), &super::pids_max(pids.limit()))?;
    }
    if let Some(unified) = r.unified().as_ref().filter(|u| !u.is_empty()) {
        let keys: Vec<&str> = unified.keys().map(String::as_str).collect();
        return Err(invalid(
            "unified",
            &format!(
                "{} are cgroup v2 files; this host uses cgroup v1",
                keys.join(", ")
            ),
        ));
    }
    if let Some(d) = c.get("devices").map(|m| m.join(rel)) {
        apply_devices(&d, r.devices().as_deref().unwrap_or(&[]))?;
    }
    Ok(())
}

fn apply_devices(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    for (file, rule) in device_writes(rules) {
        fs::write(&dir.join(file), &rule)?;
    }
    Ok(())
}

/// The writes that set a group's device rules, in order: deny everything,
/// then the spec's rules as given (later ones win), then
/// [`DEFAULT_DEVICES`].
pub(crate) fn device_writes(rules: &[LinuxDeviceCgroup]) -> Vec<(&'static str, String)> {
    let mut out = vec![("devices.deny", "a".to_string())];
    for rule in rules {
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        out.push((file, device_rule(rule)));
    }
    out.extend(
        DEFAULT_DEVICES
            .iter()
            .map(|r| ("devices.allow", r.to_string())),
    );
    out
}

/// A rule as the devices controller reads it: `type major:minor access`,
/// with `a`, `*` and `rwm` for what the spec leaves out.
pub(crate) fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = rule
        .typ()
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|| "a".into());
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access = rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    // "a" matches every device; the kernel takes it alone.
    if typ == "a" {
        return "a".to_string();
    }
    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
}
