//! The parent's half of `create`: everything the container's init will
//! need, parsed, checked and turned into C strings before `clone`, so the
//! init itself only makes system calls.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Spec};

use super::options;
use crate::runtime::identity::{capability_number, Identity};

/// Why a spec cannot run here; becomes the `message` of `Error::Failed`.
pub(super) type Refusal = String;

pub(super) struct Plan {
    /// Namespaces `clone` creates (the cgroup namespace is unshared later,
    /// once the init is in its cgroup).
    pub clone_flags: CloneFlags,
    pub new_cgroupns: bool,
    /// Namespaces to join, opened by the parent: (fd, type, path).
    pub joins: Vec<(OwnedFd, CloneFlags, CString)>,
    /// uid_map and gid_map contents, written by the parent.
    pub id_maps: Option<(String, String)>,
    pub rootfs: CString,
    pub root_propagation: MsFlags,
    pub mounts: Vec<MountStep>,
    pub devices: Vec<Device>,
    /// The init lives in a user namespace (new or joined): it becomes the
    /// namespace's root first, and binds the host's device nodes, since
    /// mknod is refused there.
    pub bind_devices: bool,
    /// The host has `/proc/kcore`, so `/dev/core` points there.
    pub dev_core: bool,
    pub hostname: Option<CString>,
    pub domainname: Option<CString>,
    /// A new network namespace: bring `lo` up.
    pub loopback: bool,
    /// (`/proc/sys/...` path, value)
    pub sysctls: Vec<(CString, CString)>,
    pub oom_score_adj: Option<CString>,
    pub masked: Vec<CString>,
    pub readonly: Vec<CString>,
    pub root_readonly: bool,
    pub identity: Identity,
    pub cwd: CString,
    /// Relative to the rootfs, created if missing.
    pub cwd_rel: Vec<u8>,
    pub umask: Mode,
    pub exec: Exec,
}

/// The command: argv, envp and where to look for `argv[0]`.
pub(super) struct Exec {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// `argv[0]` when it contains a `/`: used as is.
    pub direct: bool,
    /// `$PATH` entries from the process env, for a bare `argv[0]`.
    pub search: Vec<CString>,
}

pub(super) struct MountStep {
    /// Absolute path in the container, for messages.
    pub dest: CString,
    /// Destination relative to the rootfs.
    pub rel: Vec<u8>,
    pub what: MountWhat,
    pub propagation: Vec<MsFlags>,
}

pub(super) enum MountWhat {
    Fs {
        fstype: CString,
        source: CString,
        flags: MsFlags,
        data: CString,
    },
    Bind {
        source: CString,
        /// The source is not a directory: the target is an empty file.
        file: bool,
        flags: MsFlags,
    },
    /// cgroup v1: a tmpfs with one cgroup mount per hierarchy.
    CgroupV1 {
        flags: MsFlags,
        hierarchies: Vec<CgroupMount>,
    },
    Cgroup2 {
        flags: MsFlags,
    },
}

/// One v1 hierarchy inside the container's `/sys/fs/cgroup`.
pub(super) struct CgroupMount {
    /// e.g. `sys/fs/cgroup/memory`
    pub rel: Vec<u8>,
    pub dest: CString,
    /// Inside a cgroup namespace the hierarchy is mounted afresh (its root
    /// is the namespace's); without one, the container's own group is
    /// bound from the host.
    pub source: CString,
    pub data: CString,
    pub bind_from: Option<CString>,
    /// Co-mounted controllers get a symlink each: (name, target).
    pub links: Vec<(CString, CString)>,
}

pub(super) struct Device {
    pub rel: Vec<u8>,
    pub dest: CString,
    pub host: CString,
    pub kind: SFlag,
    pub dev: u64,
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, Refusal> {
    CString::new(s.as_ref()).map_err(|_| {
        format!(
            "{:?}: contains a NUL byte",
            String::from_utf8_lossy(s.as_ref())
        )
    })
}

/// `/a/b/../c` -> `a/b/../c`; the kernel resolves the rest inside the root.
fn relative(path: &Path) -> Result<Vec<u8>, Refusal> {
    if !path.is_absolute() {
        return Err(format!("{}: not an absolute path", path.display()));
    }
    let mut rel = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::CurDir => {}
            other => {
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(other.as_os_str().as_bytes());
            }
        }
    }
    Ok(rel)
}

/// The default device nodes of every container (char devices, 0666).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

impl Plan {
    /// Checks `spec` and prepares it; `cgroup_path` is the container's
    /// group below each hierarchy root.
    pub fn new(spec: &Spec, cgroup_path: &str) -> Result<Plan, Refusal> {
        refuse_unsupported(spec)?;
        let process = spec
            .process()
            .as_ref()
            .ok_or("config.json has no process")?;
        let root = spec.root().as_ref().ok_or("config.json has no root")?;
        let linux = spec
            .linux()
            .as_ref()
            .ok_or("config.json has no linux section")?;
        if !root.path().is_absolute() {
            return Err(format!(
                "root.path {}: must be an absolute path",
                root.path().display()
            ));
        }

        let mut clone_flags = CloneFlags::empty();
        let mut new_cgroupns = false;
        let mut joins = Vec::new();
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let mut types = Vec::new();
        for ns in &namespaces {
            let flag = match ns.typ() {
                LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
                LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Time => {
                    return Err("time namespaces are not supported by berth".into())
                }
            };
            if types.contains(&ns.typ()) {
                return Err(format!("namespace {} listed twice", ns.typ()));
            }
            types.push(ns.typ());
            match ns.path() {
                Some(p) => {
                    if flag == CloneFlags::CLONE_NEWPID {
                        return Err("joining an existing pid namespace is not supported".into());
                    }
                    let fd = open(
                        p.as_path(),
                        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| format!("opening namespace {}: {}", p.display(), e.desc()))?;
                    joins.push((fd, flag, cstr(p.as_os_str().as_bytes())?));
                }
                None if flag == CloneFlags::CLONE_NEWCGROUP => new_cgroupns = true,
                None => clone_flags |= flag,
            }
        }
        // A joined user namespace must come first: it decides what the
        // other joins are allowed to do.
        joins.sort_by_key(|(_, f, _)| *f != CloneFlags::CLONE_NEWUSER);
        if !types.contains(&LinuxNamespaceType::Mount) {
            return Err("containers without a mount namespace are not supported by berth".into());
        }
        let userns = types.contains(&LinuxNamespaceType::User);
        let id_maps = if clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
            let map = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
                m.iter()
                    .flatten()
                    .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                    .collect::<String>()
            };
            let (u, g) = (map(linux.uid_mappings()), map(linux.gid_mappings()));
            if u.is_empty() || g.is_empty() {
                return Err("a new user namespace needs uidMappings and gidMappings".into());
            }
            Some((u, g))
        } else {
            if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
                return Err("uidMappings without a new user namespace".into());
            }
            None
        };

        let root_propagation = match linux.rootfs_propagation() {
            None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
            Some(p) => options::root_propagation(p)
                .ok_or_else(|| format!("rootfsPropagation {p}: unknown"))?,
        };

        let cgroupv1 = cgroup_v1_mounts()?;
        let mut mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            mounts.push(mount_step(m, cgroup_path, &cgroupv1, new_cgroupns)?);
        }

        let mut devices = Vec::new();
        for (path, major, minor) in DEFAULT_DEVICES {
            devices.push(Device {
                rel: relative(Path::new(path))?,
                dest: cstr(path)?,
                host: cstr(path)?,
                kind: SFlag::S_IFCHR,
                dev: nix::sys::stat::makedev(*major, *minor),
                mode: Mode::from_bits_truncate(0o666),
                uid: 0,
                gid: 0,
            });
        }
        for d in linux.devices().iter().flatten() {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => {
                    return Err(format!(
                        "device {}: type a is not a node",
                        d.path().display()
                    ))
                }
            };
            let dev = Device {
                rel: relative(d.path())?,
                dest: cstr(d.path().as_os_str().as_bytes())?,
                host: cstr(d.path().as_os_str().as_bytes())?,
                kind,
                dev: nix::sys::stat::makedev(d.major() as u64, d.minor() as u64),
                mode: Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666)),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            };
            match devices.iter_mut().find(|x| x.rel == dev.rel) {
                Some(slot) => *slot = dev,
                None => devices.push(dev),
            }
        }

        let new_uts = clone_flags.contains(CloneFlags::CLONE_NEWUTS);
        let hostname = match spec.hostname() {
            Some(h) if !h.is_empty() => {
                if !new_uts {
                    return Err("a hostname needs a new uts namespace".into());
                }
                Some(cstr(h)?)
            }
            _ => None,
        };
        let domainname = match spec.domainname() {
            Some(d) if !d.is_empty() => {
                if !new_uts {
                    return Err("a domainname needs a new uts namespace".into());
                }
                Some(cstr(d)?)
            }
            _ => None,
        };

        let mut sysctls = Vec::new();
        for (k, v) in linux.sysctl().iter().flatten() {
            if k.contains('/') && k.contains('.') || k.contains("..") {
                return Err(format!("sysctl {k}: not a sysctl name"));
            }
            sysctls.push((
                cstr(format!("/proc/sys/{}", k.replace('.', "/")))?,
                cstr(v)?,
            ));
        }

        let masked = linux
            .masked_paths()
            .iter()
            .flatten()
            .map(cstr)
            .collect::<Result<_, _>>()?;
        let readonly = linux
            .readonly_paths()
            .iter()
            .flatten()
            .map(cstr)
            .collect::<Result<_, _>>()?;

        check_capabilities(process)?;
        let identity = Identity::from_process(process).map_err(|e| e.to_string())?;
        let cwd = process.cwd();
        let umask = process.user().umask().unwrap_or(0o022);

        Ok(Plan {
            clone_flags,
            new_cgroupns,
            joins,
            id_maps,
            rootfs: cstr(root.path().as_os_str().as_bytes())?,
            root_propagation,
            mounts,
            devices,
            bind_devices: userns,
            dev_core: Path::new("/proc/kcore").exists(),
            hostname,
            domainname,
            loopback: clone_flags.contains(CloneFlags::CLONE_NEWNET),
            sysctls,
            oom_score_adj: process
                .oom_score_adj()
                .map(|o| cstr(o.to_string()))
                .transpose()?,
            masked,
            readonly,
            root_readonly: root.readonly().unwrap_or(false),
            identity,
            cwd: cstr(cwd.as_os_str().as_bytes())?,
            cwd_rel: relative(cwd).map_err(|e| format!("process.cwd {e}"))?,
            umask: Mode::from_bits_truncate(umask),
            exec: exec(process)?,
        })
    }
}

fn exec(process: &oci_spec::runtime::Process) -> Result<Exec, Refusal> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err("process.args is empty".into());
    }
    let env = process.env().clone().unwrap_or_default();
    let direct = args[0].contains('/');
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    let search = if direct {
        Vec::new()
    } else {
        path.split(':')
            // An empty entry means the working directory, as in execvp.
            .map(|d| cstr(if d.is_empty() { "." } else { d }))
            .collect::<Result<_, _>>()?
    };
    Ok(Exec {
        argv: args.iter().map(cstr).collect::<Result<_, _>>()?,
        envp: env.iter().map(cstr).collect::<Result<_, _>>()?,
        direct,
        search,
    })
}

/// Capabilities we do not hold ourselves can never be granted: name the
/// first one instead of failing later with a bare `capset: EPERM`.
fn check_capabilities(process: &oci_spec::runtime::Process) -> Result<(), Refusal> {
    let Some(caps) = process.capabilities() else {
        return Ok(());
    };
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let (Some(bounding), Some(permitted)) = (mask("CapBnd:"), mask("CapPrm:")) else {
        return Err("/proc/self/status: no CapBnd or CapPrm line".into());
    };
    let ours = bounding & permitted;
    let sets = [
        caps.bounding(),
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ];
    for cap in sets.into_iter().flatten().flatten() {
        let bit = capability_number(*cap);
        if bit < 64 && ours & (1 << bit) == 0 {
            return Err(format!(
                "capability CAP_{cap} cannot be granted: the calling process does not have it"
            ));
        }
    }
    Ok(())
}

/// Spec features berth does not implement: refused, never ignored.
fn refuse_unsupported(spec: &Spec) -> Result<(), Refusal> {
    if let Some(h) = spec.hooks() {
        let any = h.prestart().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.start_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.poststart().as_ref().is_some_and(|v| !v.is_empty())
            || h.poststop().as_ref().is_some_and(|v| !v.is_empty());
        if any {
            return Err("hooks are not supported by berth".into());
        }
    }
    if let Some(p) = spec.process() {
        if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) {
            return Err("process.apparmorProfile is not supported by berth".into());
        }
        if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) {
            return Err("process.selinuxLabel is not supported by berth".into());
        }
        if p.io_priority().is_some() {
            return Err("process.ioPriority is not supported by berth".into());
        }
        if p.scheduler().is_some() {
            return Err("process.scheduler is not supported by berth".into());
        }
        if p.console_size().is_some() {
            // Harmless: the caller sizes the terminal through the master.
        }
    }
    if let Some(l) = spec.linux() {
        if l.seccomp().is_some() {
            return Err("linux.seccomp is not supported by berth".into());
        }
        if l.intel_rdt().is_some() {
            return Err("linux.intelRdt is not supported by berth".into());
        }
        if l.personality().is_some() {
            return Err("linux.personality is not supported by berth".into());
        }
        if l.mount_label().as_ref().is_some_and(|s| !s.is_empty()) {
            return Err("linux.mountLabel is not supported by berth".into());
        }
        if l.time_offsets().is_some() {
            return Err("linux.timeOffsets is not supported by berth".into());
        }
        if l.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return Err("linux.netDevices is not supported by berth".into());
        }
        if l.memory_policy().is_some() {
            return Err("linux.memoryPolicy is not supported by berth".into());
        }
    }
    Ok(())
}

/// A v1 hierarchy on the host: its mountpoint and super options.
struct HostCgroup {
    mountpoint: String,
    /// `memory`, `cpu,cpuacct`, `name=systemd`
    options: String,
}

/// The host's v1 cgroup mounts in mount order; empty on a pure v2 host.
fn cgroup_v1_mounts() -> Result<Vec<HostCgroup>, Refusal> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let _source = r.next();
        let supers = r.next().unwrap_or("");
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        let known = [
            "rw",
            "ro",
            "relatime",
            "noatime",
            "nosuid",
            "nodev",
            "noexec",
            "xattr",
            "clone_children",
            "noprefix",
            "cpuset_v2_mode",
            "nsdelegate",
            "favordynmods",
        ];
        let controllers: Vec<&str> = supers
            .split(',')
            .filter(|o| !known.contains(o) && !o.starts_with("release_agent="))
            .collect();
        if controllers.is_empty() {
            continue;
        }
        out.push(HostCgroup {
            mountpoint: crate::cgroups::unescape_mountinfo(mountpoint),
            options: controllers.join(","),
        });
    }
    Ok(out)
}

fn mount_step(
    m: &oci_spec::runtime::Mount,
    cgroup_path: &str,
    v1: &[HostCgroup],
    cgroupns: bool,
) -> Result<MountStep, Refusal> {
    let dest_path = m.destination();
    let rel = relative(dest_path).map_err(|e| format!("mount destination {e}"))?;
    let dest = cstr(dest_path.as_os_str().as_bytes())?;
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(format!(
            "mount {}: idmapped mounts are not supported by berth",
            dest_path.display()
        ));
    }
    let opts = options::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let source = m.source().as_deref().unwrap_or(Path::new(""));
    let what = if typ == "bind" || opts.flags.contains(MsFlags::MS_BIND) {
        if !source.is_absolute() {
            return Err(format!(
                "bind mount {}: source {} must be an absolute path",
                dest_path.display(),
                source.display()
            ));
        }
        let meta = std::fs::metadata(source).map_err(|e| {
            format!(
                "bind mount {}: source {}: {e}",
                dest_path.display(),
                source.display()
            )
        })?;
        MountWhat::Bind {
            source: cstr(source.as_os_str().as_bytes())?,
            file: !meta.is_dir(),
            flags: opts.flags | MsFlags::MS_BIND,
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        let flags = opts.flags;
        if v1.is_empty() {
            MountWhat::Cgroup2 { flags }
        } else {
            let mut hierarchies = Vec::new();
            for h in v1 {
                let base = Path::new(&h.mountpoint)
                    .file_name()
                    .map(|b| b.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if base.is_empty() {
                    continue;
                }
                let sub = dest_path.join(&base);
                let (source, data) = match h.options.strip_prefix("name=") {
                    Some(name) => (name.to_string(), h.options.clone()),
                    None => ("cgroup".to_string(), h.options.clone()),
                };
                let bind_from = if cgroupns {
                    None
                } else {
                    Some(cstr(format!(
                        "{}/{}",
                        h.mountpoint,
                        cgroup_path.trim_start_matches('/')
                    ))?)
                };
                let links = if base.contains(',') {
                    base.split(',')
                        .map(|c| Ok((cstr(c)?, cstr(&base)?)))
                        .collect::<Result<_, Refusal>>()?
                } else {
                    Vec::new()
                };
                hierarchies.push(CgroupMount {
                    rel: relative(&sub)?,
                    dest: cstr(sub.as_os_str().as_bytes())?,
                    source: cstr(source)?,
                    data: cstr(data)?,
                    bind_from,
                    links,
                });
            }
            MountWhat::CgroupV1 { flags, hierarchies }
        }
    } else {
        if typ.is_empty() {
            return Err(format!("mount {}: no type", dest_path.display()));
        }
        MountWhat::Fs {
            fstype: cstr(typ)?,
            source: cstr(source.as_os_str().as_bytes())?,
            flags: opts.flags,
            data: cstr(&opts.data)?,
        }
    };
    Ok(MountStep {
        dest,
        rel,
        what,
        propagation: opts.propagation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_drop_the_root() {
        assert_eq!(relative(Path::new("/dev/pts")).unwrap(), b"dev/pts");
        assert_eq!(relative(Path::new("/")).unwrap(), b"");
        assert_eq!(relative(Path::new("/a/./b/../c")).unwrap(), b"a/b/../c");
        assert!(relative(Path::new("dev")).is_err());
    }

    fn spec(extra: serde_json::Value) -> Spec {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": { "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
                         "env": ["PATH=/usr/bin:/bin"] },
            "root": { "path": "/nonexistent-root" },
            "linux": { "namespaces": [ {"type": "mount"}, {"type": "pid"} ] },
        });
        for (k, val) in extra.as_object().unwrap() {
            match (v.get_mut(k), val) {
                (Some(serde_json::Value::Object(dst)), serde_json::Value::Object(src)) => {
                    for (k2, v2) in src {
                        dst.insert(k2.clone(), v2.clone());
                    }
                }
                _ => {
                    v[k] = val.clone();
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_plain_spec_is_planned() {
        let p = Plan::new(&spec(serde_json::json!({})), "/berth/x").unwrap();
        assert_eq!(
            p.clone_flags,
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID
        );
        assert!(!p.loopback && !p.new_cgroupns && p.hostname.is_none());
        assert_eq!(p.exec.search, [c"/usr/bin", c"/bin"]);
        assert!(!p.exec.direct);
        assert_eq!(p.devices.len(), DEFAULT_DEVICES.len());
    }

    #[test]
    fn unsupported_features_are_refused_by_name() {
        for (extra, word) in [
            (
                serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true"}]}}),
                "hooks",
            ),
            (
                serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}}}),
                "seccomp",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "time"}]}}),
                "time",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}}),
                "mount namespace",
            ),
            (serde_json::json!({"hostname": "h"}), "uts"),
        ] {
            let err = Plan::new(&spec(extra.clone()), "/berth/x")
                .err()
                .unwrap_or_else(|| panic!("{extra} was accepted"));
            assert!(err.contains(word), "{extra}: {err}");
        }
    }

    #[test]
    fn mounts_become_steps() {
        let s = spec(serde_json::json!({"mounts": [
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755"]},
            {"destination": "/etc/hostname", "type": "bind", "source": "/etc/hostname",
             "options": ["rbind", "rprivate", "ro"]},
        ]}));
        let p = Plan::new(&s, "/berth/x").unwrap();
        match &p.mounts[0].what {
            MountWhat::Fs {
                fstype,
                flags,
                data,
                ..
            } => {
                assert_eq!(fstype.as_c_str(), c"tmpfs");
                assert_eq!(*flags, MsFlags::MS_NOSUID);
                assert_eq!(data.as_c_str(), c"mode=755");
            }
            _ => panic!("tmpfs is not a plain mount"),
        }
        assert_eq!(p.mounts[1].rel, b"etc/hostname");
        match &p.mounts[1].what {
            MountWhat::Bind { file, flags, .. } => {
                assert!(*file);
                assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REC));
            }
            _ => panic!("bind is not a bind"),
        }
        assert_eq!(
            p.mounts[1].propagation,
            [MsFlags::MS_PRIVATE | MsFlags::MS_REC]
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(crate::cgroups::unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(crate::cgroups::unescape_mountinfo("/plain"), "/plain");
    }
}
