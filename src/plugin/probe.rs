//! Init probes of the plugins compiled in so far. Each checks only what the
//! host must offer and creates nothing, except the overlayfs probe's
//! scratch mount, which it removes before returning.

use std::io;
use std::path::Path;

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::unistd::{faccessat, AccessFlags};

use super::InitContext;

/// Oldest SQLite the metadata store accepts: 3.35 brought `RETURNING` and
/// `ALTER TABLE … DROP COLUMN`, which queries and migrations use.
const SQLITE_MIN: (i32, &str) = (3_035_000, "3.35");

/// `content/local`: the store root must be a writable directory, or be
/// creatable, i.e. its nearest existing ancestor is a writable directory.
pub(super) fn content_local(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    root_usable(ctx.root)
}

/// `metadata/sqlite`: the SQLite linked in (bundled by rusqlite) must be
/// new enough for our SQL.
pub(super) fn metadata_sqlite(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    sqlite_new_enough(rusqlite::version_number(), rusqlite::version())
}

/// `distribution/registry`: nothing host-specific to probe; whether a
/// registry answers is a question for each pull, not for startup.
pub(super) fn distribution_registry(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])
}

/// `snapshotter/overlayfs`: a real overlay mount must work on the
/// filesystem the snapshots would live on. This probe alone makes (and
/// removes at once) a scratch directory and a mount in it: whether the
/// kernel, the filesystem and our privileges allow overlay cannot be told
/// without trying.
pub(super) fn snapshotter_overlayfs(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    crate::snapshot::Overlay::probe(ctx.root)
}

/// `snapshotter/native`: plain directories and file copies; the store root
/// must be usable.
pub(super) fn snapshotter_native(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    root_usable(ctx.root)
}

/// `runtime/berth`: the built-in runtime makes namespaces and cgroups
/// itself, so it needs the privilege, the namespace kinds, and a cgroup
/// hierarchy with the controllers its limits use.
pub(super) fn runtime_berth(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    privileged(nix::unistd::geteuid().is_root(), &status)?;
    for ns in NAMESPACES {
        let path = Path::new("/proc/self/ns").join(ns);
        if !path.exists() {
            return Err(format!(
                "{}: missing: the kernel lacks {ns} namespaces",
                path.display()
            ));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    cgroups_usable(Path::new(CGROUP_ROOT), &CgroupMounts::parse(&mountinfo))
}

/// `runtime/runc`: a `runc` on PATH that answers `--version`.
pub(super) fn runtime_runc(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    runtime_binary("runc")
}

/// `runtime/crun`: a `crun` on PATH that answers `--version`, on a host
/// whose cgroups are not hybrid: crun refuses those at every `create`.
pub(super) fn runtime_crun(ctx: &InitContext) -> Result<(), String> {
    ctx.check_keys(&[])?;
    runtime_binary("crun")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    if CgroupMounts::parse(&mountinfo).hybrid() {
        return Err("cgroups in hybrid mode not supported by crun".to_owned());
    }
    Ok(())
}

const NAMESPACES: [&str; 6] = ["mnt", "pid", "uts", "ipc", "net", "cgroup"];
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The controllers the built-in runtime's limits (`--memory`,
/// `--pids-limit`, `--cpus`) write to.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
const CAP_SYS_ADMIN: u32 = 21;
const NOT_CONTROLLERS: [&str; 6] = [
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
];

fn runtime_binary(name: &str) -> Result<(), String> {
    let rt =
        crate::runtime::OciCli::find(name, std::path::PathBuf::new()).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(rt.binary())
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{} --version: {e}", rt.binary().display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version: {}: {}",
            rt.binary().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Root, or `CAP_SYS_ADMIN` in the effective set (`CapEff` of
/// `/proc/self/status`).
fn privileged(root: bool, status: &str) -> Result<(), String> {
    if root {
        return Ok(());
    }
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if eff & (1 << CAP_SYS_ADMIN) != 0 {
        Ok(())
    } else {
        Err("needs root or CAP_SYS_ADMIN to create namespaces and mounts".to_owned())
    }
}

/// The cgroup filesystems mounted, from `/proc/self/mountinfo`.
#[derive(Debug, Default, PartialEq, Eq)]
struct CgroupMounts {
    /// cgroup v1 mounts: (mount point, controllers in its options).
    v1: Vec<(String, Vec<String>)>,
    /// cgroup2 mount points.
    v2: Vec<String>,
}

impl CgroupMounts {
    fn parse(mountinfo: &str) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        for line in mountinfo.lines() {
            // "<id> <parent> <dev> <root> <mount point> <opts> [optional…] - <type> <source> <super opts>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let point = left
                .split_whitespace()
                .nth(4)
                .unwrap_or_default()
                .to_owned();
            let mut right = right.split_whitespace();
            match (right.next(), right.nth(1)) {
                (Some("cgroup"), Some(opts)) => {
                    let controllers = opts
                        .split(',')
                        // Mount options that are not controllers; `name=`
                        // hierarchies (systemd's) carry none.
                        .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.contains('='))
                        .map(str::to_owned)
                        .collect();
                    mounts.v1.push((point, controllers));
                }
                (Some("cgroup2"), _) => mounts.v2.push(point),
                _ => {}
            }
        }
        mounts
    }

    /// v1 controller hierarchies and a cgroup2 mount side by side: the
    /// layout systemd calls hybrid.
    fn hybrid(&self) -> bool {
        self.v1.iter().any(|(_, c)| !c.is_empty()) && !self.v2.is_empty()
    }
}

/// Either every controller in [`CONTROLLERS`] has a writable v1 hierarchy,
/// or `root` is a cgroup2 mount offering all of them.
fn cgroups_usable(root: &Path, mounts: &CgroupMounts) -> Result<(), String> {
    let root_text = root.to_string_lossy();
    if mounts.v2.iter().any(|p| *p == root_text) {
        let list = root.join("cgroup.controllers");
        let have =
            std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
        let missing: Vec<&str> = CONTROLLERS
            .into_iter()
            .filter(|c| !have.split_whitespace().any(|h| h == *c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cgroup2 at {root_text} lacks the {} controller(s)",
                missing.join(", ")
            ));
        }
        return writable(root);
    }
    if mounts.v1.is_empty() {
        return Err(format!("no cgroup hierarchy mounted at {root_text}"));
    }
    for controller in CONTROLLERS {
        let Some((point, _)) = mounts
            .v1
            .iter()
            .find(|(_, cs)| cs.iter().any(|c| c == controller))
        else {
            return Err(format!(
                "no cgroup v1 hierarchy has the {controller} controller"
            ));
        };
        writable(Path::new(point))?;
    }
    Ok(())
}

fn writable(dir: &Path) -> Result<(), String> {
    let mode = AccessFlags::W_OK | AccessFlags::X_OK;
    faccessat(AT_FDCWD, dir, mode, AtFlags::AT_EACCESS)
        .map_err(|errno| format!("cgroup {}: not writable: {}", dir.display(), errno.desc()))
}

fn sqlite_new_enough(number: i32, text: &str) -> Result<(), String> {
    let (min, min_text) = SQLITE_MIN;
    if number >= min {
        Ok(())
    } else {
        Err(format!("SQLite {text} is older than {min_text}"))
    }
}

fn root_usable(root: &Path) -> Result<(), String> {
    let root =
        std::path::absolute(root).map_err(|e| format!("store root {}: {e}", root.display()))?;
    let mut creating = false;
    for dir in root.ancestors() {
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(format!(
                    "store root {}: {} is not a directory",
                    root.display(),
                    dir.display()
                ));
            }
            Ok(_) => return writable_dir(dir, &root, creating),
            // ENOTDIR: some ancestor is a file; going up finds and names it.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                creating = true
            }
            Err(e) => {
                return Err(format!(
                    "store root {}: {}: {e}",
                    root.display(),
                    dir.display()
                ))
            }
        }
    }
    Err(format!(
        "store root {}: no existing ancestor",
        root.display()
    ))
}

/// `dir` exists; it must let this process (effective ids) create entries.
fn writable_dir(dir: &Path, root: &Path, creating: bool) -> Result<(), String> {
    let mode = AccessFlags::W_OK | AccessFlags::X_OK;
    faccessat(AT_FDCWD, dir, mode, AtFlags::AT_EACCESS).map_err(|errno| {
        if creating {
            format!(
                "store root {} does not exist and cannot be created in {}: {}",
                root.display(),
                dir.display(),
                errno.desc()
            )
        } else {
            format!(
                "store root {} is not writable: {}",
                root.display(),
                errno.desc()
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn sqlite_version_floor() {
        assert!(sqlite_new_enough(3_035_000, "3.35.0").is_ok());
        assert!(sqlite_new_enough(3_046_001, "3.46.1").is_ok());
        let err = sqlite_new_enough(3_034_999, "3.34.1").unwrap_err();
        assert!(err.contains("3.34.1") && err.contains("3.35"), "{err}");
        // The bundled library passes.
        assert!(sqlite_new_enough(rusqlite::version_number(), rusqlite::version()).is_ok());
    }

    #[test]
    fn root_existing_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(root_usable(dir.path()), Ok(()));
        let deep = dir.path().join("a/b/c");
        assert_eq!(root_usable(&deep), Ok(()));
        assert!(
            !dir.path().join("a").exists(),
            "the probe created something"
        );
    }

    #[test]
    fn root_under_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = root_usable(&file.join("store")).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(root_usable(&file).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn root_in_read_only_dir_is_refused() {
        if nix::unistd::geteuid().is_root() {
            // Root passes permission checks; nothing to test here.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let err = root_usable(&locked.join("store")).unwrap_err();
        assert!(err.contains("cannot be created"), "{err}");
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 31 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 31 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
36 31 0:33 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn hybrid_is_v1_controllers_plus_cgroup2() {
        let m = CgroupMounts::parse(HYBRID);
        assert!(m.hybrid());
        assert_eq!(m.v2, ["/sys/fs/cgroup/unified"]);
        assert_eq!(m.v1[3], ("/sys/fs/cgroup/systemd".to_owned(), vec![]));
        let unified = CgroupMounts::parse(
            "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert!(!unified.hybrid());
        let legacy: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(!CgroupMounts::parse(&legacy).hybrid());
    }

    #[test]
    fn cgroup_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // v1: every controller needs a hierarchy.
        let v1 = |names: &[&str]| CgroupMounts {
            v1: names
                .iter()
                .map(|n| (root.to_string_lossy().into_owned(), vec![n.to_string()]))
                .collect(),
            v2: vec![],
        };
        assert_eq!(
            cgroups_usable(root, &v1(&["cpu", "memory", "pids"])),
            Ok(())
        );
        let err = cgroups_usable(root, &v1(&["cpu", "memory"])).unwrap_err();
        assert!(err.contains("pids"), "{err}");
        assert!(cgroups_usable(root, &CgroupMounts::default()).is_err());
        // cgroup2 at the root: the controllers must be offered.
        let v2 = CgroupMounts {
            v1: vec![],
            v2: vec![root.to_string_lossy().into_owned()],
        };
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory\n").unwrap();
        let err = cgroups_usable(root, &v2).unwrap_err();
        assert!(err.contains("lacks the pids"), "{err}");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        assert_eq!(cgroups_usable(root, &v2), Ok(()));
    }

    #[test]
    fn privilege_from_capabilities() {
        assert!(privileged(true, "").is_ok());
        assert!(privileged(false, "CapEff:\t0000000000200000\n").is_ok());
        let err = privileged(false, "CapEff:\t000001fffedfffff\n").unwrap_err();
        assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
    }

    #[test]
    fn runtime_probes_on_this_host() {
        let ctx = InitContext {
            root: Path::new("/nonexistent"),
            config: None,
        };
        // scripts/install-deps.sh installs runc.
        assert_eq!(runtime_runc(&ctx), Ok(()));
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if CgroupMounts::parse(&mountinfo).hybrid() {
            let err = runtime_crun(&ctx).unwrap_err();
            assert!(
                err.contains("hybrid mode not supported by crun") || err.contains("PATH"),
                "{err}"
            );
        }
    }
}
