//! Image config + `run` flags → OCI runtime spec.
//!
//! The defaults follow docker's so that images behave as their authors
//! expect: docker's capability set, masked and read-only `/proc` paths, the
//! same `/dev` mounts, and `no_new_privileges` off.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{user, Error, Result, Spec};

/// `PATH` for images that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Annotation holding the signal that asks the container to stop.
pub const STOP_SIGNAL_ANNOTATION: &str = "berth.io/stop-signal";

/// Prefix of the annotations carrying `--label`s.
pub const LABEL_ANNOTATION_PREFIX: &str = "berth.io/label.";

/// Docker's default capabilities (without the `CAP_` prefix).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability the spec types know, for `ALL` and validation.
const ALL_CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETGID",
    "SETFCAP",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `RLIMIT_NOFILE` is never raised above this by default.
const MAX_DEFAULT_NOFILE: u64 = 1 << 20;

const CPU_PERIOD: u64 = 100_000;

/// The parts of an OCI image config that decide how a container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ImageConfig {
    /// Reads the `config` object of an OCI image config blob; every field is
    /// optional, and a missing `config` is an empty one.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let bad = |e: String| Error::InvalidArgument(format!("image config: {e}"));
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let cfg = match doc.get("config") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(c @ Value::Object(_)) => c,
            Some(_) => return Err(bad("\"config\" is not an object".into())),
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(v) => {
                    serde_json::from_value(v.clone()).map_err(|e| bad(format!("{key}: {e}")))
                }
            }
        };
        let string = |key: &str| -> Result<Option<String>> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("{key}: not a string"))),
            }
        };
        let labels = match cfg.get("Labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| bad(format!("Labels: {e}")))?
            }
        };
        Ok(Self {
            entrypoint: strings("Entrypoint")?,
            cmd: strings("Cmd")?,
            env: strings("Env")?,
            working_dir: string("WorkingDir")?,
            user: string("User")?,
            stop_signal: string("StopSignal")?,
            labels,
        })
    }
}

/// Whose network the container uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace holding only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// docker-style `run` flags.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Container name or id; its first 12 characters are the default hostname.
    pub name: String,
    /// The command after IMAGE; replaces the image's `Cmd`.
    pub args: Vec<String>,
    /// `--entrypoint`: replaces the image's `Entrypoint` and drops its `Cmd`.
    pub entrypoint: Option<String>,
    /// `-e KEY=VAL`, or `-e KEY` to take the caller's value.
    pub env: Vec<String>,
    /// `--env-file`: `KEY=VAL` lines; `#` comments and blank lines skipped.
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    /// `name|uid[:group|gid]`, resolved in the image's `/etc/passwd`.
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// `-v host:ctr[:ro|rw]`.
    pub volumes: Vec<String>,
    /// `--tmpfs /path[:opts]`.
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    /// `--memory`: bytes, or with a `b`/`k`/`m`/`g`/`t` suffix.
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    /// `--pids-limit`; 0 or -1 mean unlimited.
    pub pids_limit: Option<i64>,
    /// Capability names, `CAP_` optional, any case, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub network: Network,
    /// `--ulimit name=soft[:hard]`.
    pub ulimits: Vec<String>,
    pub tty: bool,
    pub labels: BTreeMap<String, String>,
}

/// Builds the runtime spec for a container whose root filesystem is
/// `rootfs`, writing its `hosts`, `hostname` and `resolv.conf` into
/// `container_dir` (which must exist) and bind-mounting them.
///
/// With `privileged`, the device list stays empty and the device cgroup
/// allows everything; host devices are not added to `/dev` here.
pub fn build_spec(
    image: &ImageConfig,
    opts: &RunOptions,
    rootfs: &Path,
    container_dir: &Path,
) -> Result<Spec> {
    let args = process_args(image, opts)?;
    let hostname = match &opts.hostname {
        Some(h) => {
            if h.is_empty() || h.len() > 64 || h.contains(['/', ' ', '\0']) {
                return Err(Error::flag("--hostname", h, "not a valid hostname"));
            }
            h.clone()
        }
        None => opts.name.chars().take(12).collect(),
    };
    if hostname.is_empty() {
        return Err(Error::InvalidArgument(
            "container has neither a name nor a hostname".into(),
        ));
    }

    let cwd = match opts.workdir.as_deref().or(image.working_dir.as_deref()) {
        None => "/".to_string(),
        Some(w) if w.starts_with('/') => w.to_string(),
        Some(w) => {
            return Err(if opts.workdir.is_some() {
                Error::flag("--workdir", w, "must be an absolute path")
            } else {
                Error::InvalidArgument(format!("image WorkingDir {w}: must be an absolute path"))
            })
        }
    };

    let user_spec = opts.user.as_deref().or(image.user.as_deref()).unwrap_or("");
    let user = user::resolve(rootfs, user_spec)?;

    let mut env = merge_env(image, opts, &hostname)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }

    let caps = capabilities(opts)?;
    let rlimits = rlimits(opts)?;
    let mounts = mounts(opts, &hostname, container_dir)?;
    let resources = resources(opts)?;

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if opts.network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }

    let mut annotations = BTreeMap::new();
    annotations.insert(
        STOP_SIGNAL_ANNOTATION.to_string(),
        image
            .stop_signal
            .clone()
            .unwrap_or_else(|| "SIGTERM".into()),
    );
    for (k, v) in &opts.labels {
        annotations.insert(format!("{LABEL_ANNOTATION_PREFIX}{k}"), v.clone());
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
    });
    if !opts.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    let doc = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.tty,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": user.additional_gids,
            },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": rlimits,
            "noNewPrivileges": false,
        },
        "root": {
            "path": rootfs,
            "readonly": opts.read_only,
        },
        "hostname": hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value(doc).map_err(|e| Error::Spec(e.to_string()))
}

/// docker's rules: `--entrypoint` replaces the image's entrypoint and drops
/// its `Cmd`; arguments replace `Cmd`.
fn process_args(image: &ImageConfig, opts: &RunOptions) -> Result<Vec<String>> {
    let (entrypoint, default_cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let cmd = if opts.args.is_empty() {
        default_cmd
    } else {
        opts.args.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::InvalidArgument(
            "no command: the image has no Entrypoint or Cmd and none was given".into(),
        ));
    }
    Ok(args)
}

/// An ordered environment where setting a key again replaces its value in
/// place.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// `KEY=VAL`, or `KEY` alone for the caller's value (skipped when unset).
    fn apply(&mut self, entry: &str, flag: &'static str) -> Result<()> {
        let (key, value) = match entry.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (entry, std::env::var(entry).ok()),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::flag(flag, entry, "expected KEY=VALUE or KEY"));
        }
        if let Some(v) = value {
            self.set(key, &v);
        }
        Ok(())
    }

    fn into_vec(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

fn merge_env(image: &ImageConfig, opts: &RunOptions, hostname: &str) -> Result<Vec<String>> {
    let mut env = Env::default();
    for e in &image.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.set(k, v),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "image Env entry \"{e}\": expected KEY=VALUE"
                )))
            }
        }
    }
    if !env.has("PATH") {
        env.set("PATH", DEFAULT_PATH);
    }
    env.set("HOSTNAME", hostname);
    if opts.tty {
        env.set("TERM", "xterm");
    }
    for file in &opts.env_files {
        let text = fs::read_to_string(file)
            .map_err(|e| Error::flag("--env-file", file.display().to_string(), e.to_string()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            env.apply(line.trim_end_matches('\r'), "--env-file")?;
        }
    }
    for e in &opts.env {
        env.apply(e, "--env")?;
    }
    Ok(env.into_vec())
}

/// Normalises a capability name to `SYS_ADMIN` form; `ALL` stays `ALL`.
fn cap_name(flag: &'static str, raw: &str) -> Result<String> {
    let upper = raw.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if name == "ALL" || ALL_CAPABILITIES.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(Error::flag(flag, raw, "unknown capability"))
    }
}

/// The capability set as `CAP_*` names: docker's default (or all, when
/// privileged), then `--cap-drop`, then `--cap-add`. `--cap-add ALL` starts
/// from every capability; `--cap-drop ALL` from none, so only the added ones
/// remain.
fn capabilities(opts: &RunOptions) -> Result<Vec<String>> {
    let add = opts
        .cap_add
        .iter()
        .map(|c| cap_name("--cap-add", c))
        .collect::<Result<Vec<_>>>()?;
    let drop = opts
        .cap_drop
        .iter()
        .map(|c| cap_name("--cap-drop", c))
        .collect::<Result<Vec<_>>>()?;
    let all = |v: &[String]| v.iter().any(|c| c == "ALL");
    let mut set: Vec<&str> = if opts.privileged || all(&add) {
        // "Every capability" means every one we can hand on: a capability
        // outside our own bounding set (CAP_SYS_RESOURCE in some sandboxes)
        // or unknown to this kernel cannot be granted by any runtime.
        let ours = bounding_set();
        ALL_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| grantable(c, ours))
            .collect()
    } else if all(&drop) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    if !opts.privileged {
        set.retain(|c| !drop.iter().any(|d| d == c));
    }
    for a in add.iter().filter(|a| *a != "ALL") {
        if !set.contains(&a.as_str()) {
            set.push(a);
        }
    }
    Ok(set.into_iter().map(|c| format!("CAP_{c}")).collect())
}

/// This process's bounding set, from `/proc/self/status`; all bits when it
/// cannot be read.
fn bounding_set() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Whether capability `name` (no `CAP_` prefix) is in `bounding`.
fn grantable(name: &str, bounding: u64) -> bool {
    match super::identity::parse_capability(&format!("CAP_{name}")) {
        Ok(cap) => bounding & (1u64 << super::identity::capability_number(cap)) != 0,
        Err(_) => false,
    }
}

/// Parses a size: plain bytes, or with a `b`, `k`, `m`, `g` or `t` suffix
/// (binary multiples, any case, an optional trailing `b` as in `mb`).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return None;
    }
    let n: u64 = t[..digits_end].parse().ok()?;
    let shift = match &t[digits_end..] {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        "t" | "tb" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn resources(opts: &RunOptions) -> Result<Value> {
    let mut r = json!({
        "devices": [ { "allow": opts.privileged, "access": "rwm" } ],
    });
    if let Some(m) = &opts.memory {
        let bytes = parse_size(m).ok_or_else(|| Error::flag("--memory", m, "invalid size"))?;
        if bytes < 6 << 20 {
            return Err(Error::flag("--memory", m, "below the 6 MiB minimum"));
        }
        r["memory"] = json!({ "limit": bytes });
    }
    if let Some(c) = opts.cpus {
        let quota = c * CPU_PERIOD as f64;
        if !c.is_finite() || quota < 1000.0 {
            return Err(Error::flag(
                "--cpus",
                c.to_string(),
                "must be at least 0.01",
            ));
        }
        r["cpu"] = json!({ "quota": quota.round() as i64, "period": CPU_PERIOD });
    }
    if let Some(p) = opts.pids_limit {
        let limit = match p {
            0 | -1 => -1,
            p if p > 0 => p,
            _ => {
                return Err(Error::flag(
                    "--pids-limit",
                    p.to_string(),
                    "must be positive, or 0/-1 for unlimited",
                ))
            }
        };
        r["pids"] = json!({ "limit": limit });
    }
    Ok(r)
}

/// Parses `--ulimit name=soft[:hard]` into (`RLIMIT_NAME`, soft, hard).
/// `-1` or `unlimited` mean no limit.
pub fn parse_ulimit(s: &str) -> Result<(String, u64, u64)> {
    let bad = |reason: &str| Error::flag("--ulimit", s, reason);
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| bad("expected name=soft[:hard]"))?;
    let name = name.trim().to_ascii_lowercase();
    const NAMES: &[&str] = &[
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
        "as",
    ];
    if !NAMES.contains(&name.as_str()) {
        return Err(bad("unknown limit name"));
    }
    let value = |v: &str| -> Result<u64> {
        match v.trim() {
            "-1" | "unlimited" => Ok(u64::MAX),
            v => v.parse().map_err(|_| bad("limits must be numbers")),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => {
            let v = value(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(bad("soft limit is above the hard limit"));
    }
    Ok((format!("RLIMIT_{}", name.to_ascii_uppercase()), soft, hard))
}

fn rlimits(opts: &RunOptions) -> Result<Vec<Value>> {
    let mut limits: Vec<(String, u64, u64)> = Vec::new();
    let mut add = |l: (String, u64, u64)| match limits.iter_mut().find(|x| x.0 == l.0) {
        Some(slot) => *slot = l,
        None => limits.push(l),
    };
    // Our own hard limit: a container can never get more than this without
    // privileges we may not have.
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h)
        .unwrap_or(1024);
    let nofile = hard.min(MAX_DEFAULT_NOFILE);
    add(("RLIMIT_NOFILE".into(), nofile, nofile));
    for u in &opts.ulimits {
        add(parse_ulimit(u)?);
    }
    Ok(limits
        .into_iter()
        .map(|(t, soft, hard)| json!({ "type": t, "soft": soft, "hard": hard }))
        .collect())
}

fn mount(dest: &str, typ: &str, source: impl Into<Value>, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": typ, "source": source.into(), "options": options })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

fn mounts(opts: &RunOptions, hostname: &str, container_dir: &Path) -> Result<Vec<Value>> {
    let sys_opts: &[&str] = if opts.privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup_opts: &[&str] = if opts.privileged {
        &["nosuid", "noexec", "nodev", "relatime"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    let mut m = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", sys_opts),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts),
    ];

    let hosts = container_dir.join("hosts");
    write_file(
        &hosts,
        &format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )?;
    let hostname_file = container_dir.join("hostname");
    write_file(&hostname_file, &format!("{hostname}\n"))?;
    let resolv = container_dir.join("resolv.conf");
    let resolv_text = match opts.network {
        Network::Host => fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        Network::None => "# no network: this container has only a loopback interface\n".to_string(),
    };
    write_file(&resolv, &resolv_text)?;
    for (dest, src) in [
        ("/etc/hosts", hosts),
        ("/etc/hostname", hostname_file),
        ("/etc/resolv.conf", resolv),
    ] {
        m.push(mount(
            dest,
            "bind",
            src.display().to_string(),
            &["rbind", "rprivate"],
        ));
    }

    for v in &opts.volumes {
        m.push(volume(v)?);
    }
    for t in &opts.tmpfs {
        m.push(tmpfs(t)?);
    }
    Ok(m)
}

/// `-v host:ctr[:ro|rw]` as a bind mount; the host path must exist.
fn volume(spec: &str) -> Result<Value> {
    let bad = |reason: String| Error::flag("--volume", spec, reason);
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, "rw"),
        [h, c, m] => (*h, *c, *m),
        _ => return Err(bad("expected host-path:container-path[:ro|rw]".into())),
    };
    if !host.starts_with('/') {
        return Err(bad(format!("host path {host} must be absolute")));
    }
    if !ctr.starts_with('/') {
        return Err(bad(format!("container path {ctr} must be absolute")));
    }
    if !Path::new(host).exists() {
        return Err(bad(format!("host path {host} does not exist")));
    }
    let mut options = vec!["rbind", "rprivate"];
    match mode {
        "ro" => options.push("ro"),
        "rw" => {}
        m => return Err(bad(format!("unknown mode {m} (ro or rw)"))),
    }
    Ok(mount(ctr, "bind", host, &options))
}

/// `--tmpfs /path[:opts]`: docker's `noexec,nosuid,nodev`, then the options
/// given (a later `exec` undoes `noexec`).
fn tmpfs(spec: &str) -> Result<Value> {
    let (path, extra) = match spec.split_once(':') {
        Some((p, o)) => (p, o),
        None => (spec, ""),
    };
    if !path.starts_with('/') {
        return Err(Error::flag("--tmpfs", spec, "path must be absolute"));
    }
    let mut options = vec!["noexec", "nosuid", "nodev"];
    options.extend(extra.split(',').map(str::trim).filter(|o| !o.is_empty()));
    Ok(mount(path, "tmpfs", "tmpfs", &options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("512b"), Some(512));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2t"), Some(2 << 40));
        for bad in [
            "",
            "m",
            "12x",
            "-1m",
            "1.5g",
            "99999999999999999999g",
            "1 g",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let opts = RunOptions {
            memory: Some("12x".into()),
            ..Default::default()
        };
        let e = resources(&opts).unwrap_err();
        assert_eq!(e.to_string(), "--memory 12x: invalid size");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }

    #[test]
    fn cpu_and_pids() {
        let opts = RunOptions {
            cpus: Some(1.5),
            pids_limit: Some(50),
            ..Default::default()
        };
        let r = resources(&opts).unwrap();
        assert_eq!(r["cpu"]["quota"], 150000);
        assert_eq!(r["cpu"]["period"], 100000);
        assert_eq!(r["pids"]["limit"], 50);
        for cpus in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let opts = RunOptions {
                cpus: Some(cpus),
                ..Default::default()
            };
            assert!(resources(&opts).is_err(), "{cpus}");
        }
    }

    fn caps(add: &[&str], drop: &[&str]) -> Result<Vec<String>> {
        capabilities(&RunOptions {
            cap_add: strings(add),
            cap_drop: strings(drop),
            ..Default::default()
        })
    }

    #[test]
    fn capability_adjustments() {
        let default = caps(&[], &[]).unwrap();
        assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
        assert!(default.contains(&"CAP_CHOWN".to_string()));
        assert!(!default.contains(&"CAP_SYS_ADMIN".to_string()));

        let c = caps(&["sys_admin", "CAP_NET_ADMIN"], &["cap_chown", "Mknod"]).unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_MKNOD".to_string()));

        assert_eq!(
            caps(&["NET_ADMIN"], &["all"]).unwrap(),
            vec!["CAP_NET_ADMIN"]
        );
        assert!(caps(&[], &["ALL"]).unwrap().is_empty());
        // ALL is every capability this process can grant.
        let grantable_here = ALL_CAPABILITIES
            .iter()
            .filter(|c| grantable(c, bounding_set()))
            .count();
        assert!(grantable_here > DEFAULT_CAPABILITIES.len());
        let c = caps(&["ALL"], &["sys_admin"]).unwrap();
        assert_eq!(c.len(), grantable_here - 1);
        assert!(!c.contains(&"CAP_SYS_ADMIN".to_string()));

        let e = caps(&["CAP_FLY"], &[]).unwrap_err();
        assert_eq!(e.to_string(), "--cap-add CAP_FLY: unknown capability");

        let privileged = capabilities(&RunOptions {
            privileged: true,
            cap_drop: strings(&["ALL"]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(privileged.len(), grantable_here);
        assert!(!grantable("SYS_ADMIN", 0));
        assert!(grantable("SYS_ADMIN", 1 << 21));
        assert!(!grantable("NO_SUCH_CAP", u64::MAX));
    }

    #[test]
    fn entrypoint_and_cmd() {
        let img = image(&["/entry"], &["default"]);
        let args = |o: RunOptions| process_args(&img, &o);
        assert_eq!(
            args(RunOptions::default()).unwrap(),
            strings(&["/entry", "default"])
        );
        assert_eq!(
            args(RunOptions {
                args: strings(&["x", "y"]),
                ..Default::default()
            })
            .unwrap(),
            strings(&["/entry", "x", "y"])
        );
        assert_eq!(
            args(RunOptions {
                entrypoint: Some("/other".into()),
                ..Default::default()
            })
            .unwrap(),
            strings(&["/other"])
        );
        assert_eq!(
            args(RunOptions {
                entrypoint: Some("/other".into()),
                args: strings(&["a"]),
                ..Default::default()
            })
            .unwrap(),
            strings(&["/other", "a"])
        );
        // An empty entrypoint clears the image's; Cmd is dropped too.
        let e = args(RunOptions {
            entrypoint: Some(String::new()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        assert!(process_args(&image(&[], &[]), &RunOptions::default()).is_err());
        assert_eq!(
            process_args(&image(&[], &["sh"]), &RunOptions::default()).unwrap(),
            strings(&["sh"])
        );
    }

    #[test]
    fn env_merge_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        fs::write(&file, "# comment\n\nA=from-file\nFILE_ONLY=1\nB=file\n").unwrap();
        let img = ImageConfig {
            env: strings(&["A=image", "PATH=/custom", "Z=z"]),
            ..Default::default()
        };
        std::env::set_var("BERTH_SPEC_TEST_PASSTHROUGH", "passed");
        let opts = RunOptions {
            env: strings(&[
                "B=flag",
                "NEW=1",
                "BERTH_SPEC_TEST_PASSTHROUGH",
                "BERTH_SPEC_TEST_UNSET_VAR",
            ]),
            env_files: vec![file],
            tty: true,
            ..Default::default()
        };
        let env = merge_env(&img, &opts, "host1").unwrap();
        assert_eq!(
            env,
            strings(&[
                "A=from-file",
                "PATH=/custom",
                "Z=z",
                "HOSTNAME=host1",
                "TERM=xterm",
                "FILE_ONLY=1",
                "B=flag",
                "NEW=1",
                "BERTH_SPEC_TEST_PASSTHROUGH=passed",
            ])
        );
        let env = merge_env(&ImageConfig::default(), &RunOptions::default(), "h").unwrap();
        assert_eq!(
            env,
            vec![format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h".to_string()]
        );
        let bad = RunOptions {
            env: strings(&["=x"]),
            ..Default::default()
        };
        assert!(merge_env(&ImageConfig::default(), &bad, "h").is_err());
    }

    #[test]
    fn ulimits() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            ("RLIMIT_NOFILE".into(), 1024, 2048)
        );
        assert_eq!(
            parse_ulimit("NPROC=100").unwrap(),
            ("RLIMIT_NPROC".into(), 100, 100)
        );
        assert_eq!(
            parse_ulimit("core=-1").unwrap(),
            ("RLIMIT_CORE".into(), u64::MAX, u64::MAX)
        );
        for bad in [
            "nofile",
            "bogus=1",
            "nofile=x",
            "nofile=10:5",
            "nofile=1:2:3",
        ] {
            let e = parse_ulimit(bad).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("--ulimit {bad}:")),
                "{e}"
            );
        }
        let l = rlimits(&RunOptions::default()).unwrap();
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(l[0]["soft"], hard.min(MAX_DEFAULT_NOFILE));
        assert_eq!(l[0]["hard"], hard.min(MAX_DEFAULT_NOFILE));
        let l = rlimits(&RunOptions {
            ulimits: strings(&["nofile=10:20", "nproc=5"]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0]["soft"], 10);
    }

    #[test]
    fn volume_errors() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display().to_string();
        let v = volume(&format!("{host}:/data:ro")).unwrap();
        assert_eq!(v["destination"], "/data");
        assert_eq!(v["options"], json!(["rbind", "rprivate", "ro"]));
        let missing = format!("{host}/nope");
        let e = volume(&format!("{missing}:/data")).unwrap_err();
        assert!(e.to_string().contains(&missing), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        for bad in [
            format!("{host}:data"),
            "relative:/data".to_string(),
            format!("{host}:/data:rx"),
            host.clone(),
            format!("{host}:/a:ro:x"),
        ] {
            let e = volume(&bad).unwrap_err();
            assert!(e.to_string().starts_with("--volume "), "{e}");
        }
        let t = tmpfs("/run:size=1m,exec").unwrap();
        assert_eq!(
            t["options"],
            json!(["noexec", "nosuid", "nodev", "size=1m", "exec"])
        );
        assert!(tmpfs("run").is_err());
    }

    #[test]
    fn image_config_json() {
        let c = ImageConfig::from_json(
            br#"{"architecture":"amd64","config":{"Entrypoint":["/e"],"Cmd":null,"Env":["A=1"],
                "WorkingDir":"/w","User":"app","StopSignal":"SIGQUIT","Labels":{"k":"v"}}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, strings(&["/e"]));
        assert!(c.cmd.is_empty());
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            ImageConfig::from_json(b"{}").unwrap(),
            ImageConfig::default()
        );
        assert!(ImageConfig::from_json(b"nope").is_err());
    }

    #[test]
    fn whole_spec() {
        let rootfs = tempfile::tempdir().unwrap();
        let cdir = tempfile::tempdir().unwrap();
        let img = ImageConfig {
            cmd: strings(&["sh"]),
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let opts = RunOptions {
            name: "0123456789abcdef".into(),
            labels: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        };
        let spec = build_spec(&img, &opts, rootfs.path(), cdir.path()).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert!(p.env().as_ref().unwrap().contains(&"HOME=/".to_string()));
        assert!(!p.no_new_privileges().unwrap_or(false));
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            DEFAULT_CAPABILITIES.len()
        );
        assert!(caps.inheritable().as_ref().is_none_or(|c| c.is_empty()));
        assert!(caps.ambient().as_ref().is_none_or(|c| c.is_empty()));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 6);
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        let ann = spec.annotations().as_ref().unwrap();
        assert_eq!(
            ann.get(STOP_SIGNAL_ANNOTATION).map(String::as_str),
            Some("SIGTERM")
        );
        assert_eq!(
            ann.get("berth.io/label.team").map(String::as_str),
            Some("a")
        );
        let hosts = fs::read_to_string(cdir.path().join("hosts")).unwrap();
        assert!(hosts.contains("127.0.0.1\tlocalhost") && hosts.contains("0123456789ab"));

        let spec = build_spec(
            &img,
            &RunOptions {
                privileged: true,
                network: Network::Host,
                ..opts.clone()
            },
            rootfs.path(),
            cdir.path(),
        )
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 5);
        assert!(linux.masked_paths().as_ref().is_none_or(|m| m.is_empty()));

        let e = build_spec(
            &img,
            &RunOptions {
                workdir: Some("rel".into()),
                ..opts
            },
            rootfs.path(),
            cdir.path(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--workdir rel"), "{e}");
    }
}
