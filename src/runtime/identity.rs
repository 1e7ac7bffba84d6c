//! Who the container's process is: uid, gids, capabilities, rlimits,
//! no_new_privs and umask, applied by the container's init just before it
//! execs the user's command.
//!
//! Everything that allocates or can fail on input (parsing names, reading
//! `cap_last_cap`, checking rlimits) happens in the parent, in
//! [`Identity::from_process`]. [`Identity::apply`] runs in the child after
//! `clone`, where only system calls are safe: it walks vectors and bit masks
//! built beforehand and reports a failing step as a static string and an
//! errno, which the parent turns into a message.

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, Capability, PosixRlimitType, Process};

use super::{Error, Result};

const CAP_LAST_CAP: &str = "/proc/sys/kernel/cap_last_cap";
const DEFAULT_UMASK: u32 = 0o022;

/// The credentials a container's process gets, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<Gid>,
    /// Capability sets as bit masks (bit n = capability n).
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
    /// The highest capability number this kernel knows.
    last_cap: u8,
    rlimits: Vec<Rlimit>,
    no_new_privs: bool,
    umask: libc::mode_t,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rlimit {
    resource: Resource,
    soft: u64,
    hard: u64,
    /// The step named when setting it fails.
    step: &'static str,
    /// The step named when it fails with EPERM: the hard limit went up.
    raise_step: &'static str,
}

impl Identity {
    /// Reads the spec's process: `user` (uid, gid, additionalGids, umask),
    /// `capabilities` (each set; a missing set is empty), `rlimits`,
    /// `noNewPrivileges`. An unset umask is 022. A capability this kernel does not know and an
    /// rlimit whose hard limit is above ours (raising one needs
    /// CAP_SYS_RESOURCE) are errors here, before anything is cloned.
    pub(crate) fn from_process(p: &Process) -> Result<Identity> {
        let text = std::fs::read_to_string(CAP_LAST_CAP).map_err(|source| Error::Io {
            action: "reading the kernel's last capability from",
            path: CAP_LAST_CAP.into(),
            source,
        })?;
        let last_cap: u8 = text.trim().parse().map_err(|_| {
            Error::InvalidArgument(format!("{CAP_LAST_CAP}: not a number: {:?}", text.trim()))
        })?;
        Identity::build(p, last_cap)
    }

    fn build(p: &Process, last_cap: u8) -> Result<Identity> {
        let user = p.user();
        let caps = p.capabilities().as_ref();
        let set = |s: Option<&Capabilities>, name| mask(s, name, last_cap);
        let mut rlimits = Vec::new();
        for r in p.rlimits().as_deref().unwrap_or(&[]) {
            rlimits.push(rlimit(r.typ(), r.soft(), r.hard())?);
        }
        let umask = match user.umask() {
            Some(m) if m > 0o777 => {
                return Err(Error::InvalidArgument(format!(
                    "process.user.umask {m:o}: not a permission mask (at most 0777)"
                )))
            }
            // Unset means 022, not whatever the runtime's caller had: the
            // same as runc, so images behave alike under both.
            m => m.unwrap_or(DEFAULT_UMASK) as libc::mode_t,
        };
        Ok(Identity {
            uid: user.uid(),
            gid: user.gid(),
            groups: user
                .additional_gids()
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect(),
            bounding: set(caps.and_then(|c| c.bounding().as_ref()), "bounding")?,
            effective: set(caps.and_then(|c| c.effective().as_ref()), "effective")?,
            permitted: set(caps.and_then(|c| c.permitted().as_ref()), "permitted")?,
            inheritable: set(caps.and_then(|c| c.inheritable().as_ref()), "inheritable")?,
            ambient: set(caps.and_then(|c| c.ambient().as_ref()), "ambient")?,
            last_cap,
            rlimits,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            umask,
        })
    }

    /// Makes the calling process this identity. Runs in the container's
    /// init after `pivot_root`, before `execve`; allocates nothing.
    ///
    /// The order is forced by the kernel: rlimits and the bounding set
    /// while still privileged; PR_SET_KEEPCAPS so changing uid does not
    /// clear the permitted set; groups and gid before uid (after setuid we
    /// may no longer change them); then the capability sets, and ambient
    /// capabilities last, as each must already be permitted and
    /// inheritable. no_new_privs comes at the end: it must not stop any
    /// step above.
    pub(crate) fn apply(&self) -> std::result::Result<(), (&'static str, Errno)> {
        for r in &self.rlimits {
            setrlimit(r.resource, r.soft, r.hard).map_err(|e| {
                if e == Errno::EPERM {
                    (r.raise_step, e)
                } else {
                    (r.step, e)
                }
            })?;
        }
        // SAFETY: umask only swaps the process's file mode mask.
        unsafe { libc::umask(self.umask) };
        prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(|e| ("prctl(PR_SET_KEEPCAPS)", e))?;
        for cap in 0..=self.last_cap {
            if self.bounding & (1 << cap) == 0 {
                prctl(libc::PR_CAPBSET_DROP, cap.into(), 0)
                    .map_err(|e| ("dropping a capability from the bounding set", e))?;
            }
        }
        // Raw system calls, not glibc's wrappers: those run the setxid
        // broadcast to every thread glibc believes exists, and a process
        // cloned from a multi-threaded one can block there forever on a
        // lock another (absent) thread held at clone time.
        // SAFETY: groups is a live slice of gid_t-sized Gids; the kernel
        // only reads it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                self.groups.len(),
                self.groups.as_ptr() as *const libc::gid_t,
            )
        };
        Errno::result(rc).map_err(|e| ("setgroups", e))?;
        let gid = Gid::from_raw(self.gid);
        set_ids(libc::SYS_setresgid, gid.as_raw()).map_err(|e| ("setresgid", e))?;
        let uid = Uid::from_raw(self.uid);
        set_ids(libc::SYS_setresuid, uid.as_raw()).map_err(|e| ("setresuid", e))?;
        capset(self.effective, self.permitted, self.inheritable).map_err(|e| ("capset", e))?;
        prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as _, 0)
            .map_err(|e| ("clearing the ambient capabilities", e))?;
        for cap in 0..=self.last_cap {
            if self.ambient & (1 << cap) != 0 {
                prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as _,
                    cap.into(),
                )
                .map_err(|e| {
                    (
                        "raising an ambient capability (it must also be permitted and inheritable)",
                        e,
                    )
                })?;
            }
        }
        if self.no_new_privs {
            prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
                .map_err(|e| ("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
        }
        Ok(())
    }
}

/// setresuid/setresgid(id, id, id) for this thread, bypassing glibc (see
/// `Identity::apply`).
pub(crate) fn set_ids(call: libc::c_long, id: u32) -> nix::Result<()> {
    // SAFETY: both calls take three integer ids and touch no memory.
    let rc = unsafe { libc::syscall(call, id, id, id) };
    Errno::result(rc).map(drop)
}

/// prctl with the two arguments our options use; the rest must be zero.
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> nix::Result<()> {
    // SAFETY: every option used here takes integer arguments only; the
    // kernel reads no memory of ours.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    Errno::result(rc).map(drop)
}

/// The kernel's capability header and per-32-bit-word data (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// 64-bit capability sets, two 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the calling thread's effective, permitted and inheritable sets.
fn capset(effective: u64, permitted: u64, inheritable: u64) -> nix::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |m: u64, i: u32| (m >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: word(effective, i),
        permitted: word(permitted, i),
        inheritable: word(inheritable, i),
    });
    // SAFETY: header and data are live, correctly laid out for version 3
    // (which reads two CapData), and the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(rc).map(drop)
}

/// A capability set as a bit mask; `set` names it in errors.
fn mask(caps: Option<&Capabilities>, set: &str, last_cap: u8) -> Result<u64> {
    let mut m = 0u64;
    for cap in caps.into_iter().flatten() {
        let n = capability_number(*cap);
        if n > last_cap {
            return Err(Error::InvalidArgument(format!(
                "process.capabilities.{set}: CAP_{cap} is not known to this kernel \
                 (its last capability is number {last_cap})"
            )));
        }
        m |= 1 << n;
    }
    Ok(m)
}

/// The kernel's number for a capability (linux/capability.h).
pub(crate) fn capability_number(cap: Capability) -> u8 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// Parses a capability name (`CAP_CHOWN`, `chown`): unknown names are an
/// error naming them.
pub(crate) fn parse_capability(name: &str) -> Result<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| Error::InvalidArgument(format!("unknown capability {name:?}")))
}

/// One spec rlimit, checked against our own hard limit: the container
/// inherits ours, and raising a hard limit needs CAP_SYS_RESOURCE, which
/// a runtime cannot count on.
fn rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<Rlimit> {
    macro_rules! table {
        ($($spec:ident => $res:ident),* $(,)?) => {
            match typ {
                $(PosixRlimitType::$spec => (
                    Resource::$res,
                    stringify!($res),
                    concat!("setrlimit ", stringify!($res)),
                    concat!(
                        "setrlimit ",
                        stringify!($res),
                        " (a hard limit above the current one needs CAP_SYS_RESOURCE)"
                    ),
                ),)*
            }
        };
    }
    let (resource, name, step, raise_step) = table! {
        RlimitCpu => RLIMIT_CPU,
        RlimitFsize => RLIMIT_FSIZE,
        RlimitData => RLIMIT_DATA,
        RlimitStack => RLIMIT_STACK,
        RlimitCore => RLIMIT_CORE,
        RlimitRss => RLIMIT_RSS,
        RlimitNproc => RLIMIT_NPROC,
        RlimitNofile => RLIMIT_NOFILE,
        RlimitMemlock => RLIMIT_MEMLOCK,
        RlimitAs => RLIMIT_AS,
        RlimitLocks => RLIMIT_LOCKS,
        RlimitSigpending => RLIMIT_SIGPENDING,
        RlimitMsgqueue => RLIMIT_MSGQUEUE,
        RlimitNice => RLIMIT_NICE,
        RlimitRtprio => RLIMIT_RTPRIO,
        RlimitRttime => RLIMIT_RTTIME,
    };
    if soft > hard {
        return Err(Error::InvalidArgument(format!(
            "process.rlimits {name}: soft limit {soft} is above hard limit {hard}"
        )));
    }
    let (_, current_hard) = getrlimit(resource).map_err(|e| Error::Os {
        action: "reading our own rlimits",
        source: e.into(),
    })?;
    if hard > current_hard {
        return Err(Error::InvalidArgument(format!(
            "process.rlimits {name}: hard limit {hard} is above the current {current_hard}; \
             raising it needs CAP_SYS_RESOURCE"
        )));
    }
    Ok(Rlimit {
        resource,
        soft,
        hard,
        step,
        raise_step,
    })
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use serde_json::json;

    use super::*;

    fn process(v: serde_json::Value) -> Process {
        let mut base = json!({"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}});
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    /// The identity the forked tests apply: an unprivileged user keeping a
    /// few capabilities, one of them ambient.
    fn reduced() -> Process {
        process(json!({
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [2000, 44], "umask": 0o27},
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
                "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
            "noNewPrivileges": true
        }))
    }

    #[test]
    fn capability_sets_become_bit_masks() {
        let id = Identity::build(&reduced(), 40).unwrap();
        assert_eq!(id.bounding, 0x2421);
        assert_eq!(id.permitted, 0x421);
        assert_eq!(id.effective, 0x21);
        assert_eq!(id.inheritable, 0x420);
        assert_eq!(id.ambient, 0x400);
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, [Gid::from_raw(2000), Gid::from_raw(44)]);
        assert_eq!(id.umask, 0o27);
        assert!(id.no_new_privs);
        assert_eq!(id.rlimits.len(), 1);
        assert_eq!(id.rlimits[0].resource, Resource::RLIMIT_NOFILE);
        assert_eq!((id.rlimits[0].soft, id.rlimits[0].hard), (100, 200));
    }

    #[test]
    fn no_capabilities_means_empty_sets() {
        let id = Identity::build(&process(json!({})), 40).unwrap();
        assert_eq!(
            [
                id.bounding,
                id.effective,
                id.permitted,
                id.inheritable,
                id.ambient
            ],
            [0; 5]
        );
        assert!(!id.no_new_privs);
        assert_eq!(id.umask, 0o022, "not the caller's");
    }

    #[test]
    fn every_capability_has_its_kernel_number() {
        assert_eq!(capability_number(Capability::Chown), 0);
        assert_eq!(capability_number(Capability::SysAdmin), 21);
        assert_eq!(capability_number(Capability::AuditWrite), 29);
        assert_eq!(capability_number(Capability::CheckpointRestore), 40);
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN").unwrap(),
            Capability::SysAdmin
        );
        assert_eq!(parse_capability("net_raw").unwrap(), Capability::NetRaw);
        let err = parse_capability("CAP_FLY").unwrap_err();
        assert_eq!(err.to_string(), "unknown capability \"CAP_FLY\"");
        // The spec types refuse unknown names when the spec is read.
        let bad = json!({"cwd": "/", "user": {"uid": 0, "gid": 0},
                         "capabilities": {"bounding": ["CAP_FLY"]}});
        assert!(serde_json::from_value::<Process>(bad).is_err());
    }

    #[test]
    fn a_capability_the_kernel_lacks_is_an_error() {
        let p = process(json!({"capabilities": {"ambient": ["CAP_CHECKPOINT_RESTORE"]}}));
        let err = Identity::build(&p, 39).unwrap_err().to_string();
        assert!(err.contains("ambient"), "{err}");
        assert!(err.contains("CAP_CHECKPOINT_RESTORE"), "{err}");
        Identity::build(&p, 40).unwrap();
    }

    #[test]
    fn rlimits_are_checked_in_the_parent() {
        let p = process(json!({"rlimits": [{"type": "RLIMIT_CORE", "soft": 10, "hard": 5}]}));
        let err = Identity::from_process(&p).unwrap_err().to_string();
        assert!(
            err.contains("RLIMIT_CORE: soft limit 10 is above hard limit 5"),
            "{err}"
        );

        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        if hard != libc::RLIM_INFINITY {
            let p = process(
                json!({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": hard + 1}]}),
            );
            let err = Identity::from_process(&p).unwrap_err().to_string();
            assert!(err.contains("CAP_SYS_RESOURCE"), "{err}");
        }
    }

    #[test]
    fn umask_must_be_a_mode() {
        let p = process(json!({"user": {"uid": 0, "gid": 0, "umask": 0o1777}}));
        assert!(Identity::build(&p, 40).is_err());
    }

    /// Runs `child` in a forked process and returns its exit code. The
    /// child must not allocate: the test harness has other threads.
    fn in_child(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes system calls and reads memory the
        // parent prepared, then leaves with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = child();
                // SAFETY: ends the forked child without running the
                // parent's destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                other => panic!("identity child: {other:?}"),
            },
        }
    }

    /// `/proc/self/status` into `buf`, without allocating.
    fn read_status(buf: &mut [u8]) -> Option<&[u8]> {
        // SAFETY: a NUL-terminated path; the fd is closed below.
        let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        while len < buf.len() {
            // SAFETY: writes at most the rest of `buf`.
            let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        // SAFETY: closes the fd we opened.
        unsafe { libc::close(fd) };
        Some(&buf[..len])
    }

    /// The line of `status` starting with `key`, without trailing blanks.
    fn status_line<'a>(status: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
        status
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(key))
            .map(|l| l.trim_ascii_end())
    }

    #[test]
    fn applied_identity_shows_in_proc_status() {
        let id = Identity::from_process(&reduced()).unwrap();
        let expected: Vec<String> = [
            "Uid:\t1000\t1000\t1000\t1000",
            "Gid:\t1000\t1000\t1000\t1000",
            "Groups:\t44 2000",
            "Umask:\t0027",
            "CapInh:\t0000000000000420",
            "CapPrm:\t0000000000000421",
            "CapEff:\t0000000000000021",
            "CapBnd:\t0000000000002421",
            "CapAmb:\t0000000000000400",
            "NoNewPrivs:\t1",
        ]
        .map(String::from)
        .to_vec();
        let keys: Vec<&[u8]> = expected
            .iter()
            .map(|l| &l.as_bytes()[..=l.find(':').unwrap()])
            .collect();
        let code = in_child(|| {
            if id.apply().is_err() {
                return 2;
            }
            match getrlimit(Resource::RLIMIT_NOFILE) {
                Ok((100, 200)) => {}
                _ => return 3,
            }
            let mut buf = [0u8; 8192];
            let Some(status) = read_status(&mut buf) else {
                return 4;
            };
            for (i, (want, key)) in expected.iter().zip(&keys).enumerate() {
                if status_line(status, key) != Some(want.as_bytes()) {
                    return 10 + i as i32;
                }
            }
            0
        });
        let what = match code {
            0 => "ok".to_string(),
            2 => "apply failed".to_string(),
            3 => "RLIMIT_NOFILE is not 100/200".to_string(),
            4 => "cannot read /proc/self/status".to_string(),
            n => format!("wrong line, expected {:?}", expected.get(n as usize - 10)),
        };
        assert_eq!(code, 0, "{what}");
    }

    #[test]
    fn a_failing_step_is_named_with_its_errno() {
        // Ambient needs the capability inheritable too: here it is not.
        let p = process(json!({
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {"permitted": ["CAP_KILL"], "bounding": ["CAP_KILL"],
                             "ambient": ["CAP_KILL"]}
        }));
        let id = Identity::from_process(&p).unwrap();
        let code = in_child(|| match id.apply() {
            Err((step, Errno::EPERM)) if step.starts_with("raising an ambient") => 0,
            Err(_) => 1,
            Ok(()) => 2,
        });
        assert_eq!(code, 0, "1: other error, 2: no error");
    }

    #[test]
    fn raising_a_hard_rlimit_reports_the_missing_capability() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        if hard == libc::RLIM_INFINITY {
            return;
        }
        // Built past from_process's check, as if our limit had dropped
        // between building and applying.
        let mut id = Identity::build(&process(json!({})), 40).unwrap();
        id.bounding = u64::MAX >> (63 - 40);
        id.permitted = id.bounding;
        id.effective = id.bounding;
        let mut r = rlimit(PosixRlimitType::RlimitNofile, soft, hard).unwrap();
        r.hard = hard + 1;
        id.rlimits.push(r);
        let has_sys_resource = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:\t"))
            .map(|m| u64::from_str_radix(m, 16).unwrap() & (1 << 24) != 0)
            .unwrap();
        let code = in_child(|| match id.apply() {
            Err((step, Errno::EPERM)) if step.contains("CAP_SYS_RESOURCE") => 0,
            Ok(()) => 1,
            Err(_) => 2,
        });
        assert_eq!(code, if has_sys_resource { 1 } else { 0 });
    }

    /// What the container sees of its identity: `/proc/self/status` lines
    /// and `ulimit -a`, from busybox sh.
    const SHOW: &str = "grep -E '^(Uid|Gid|Groups|Umask|Cap...|NoNewPrivs):' /proc/self/status; ulimit -a; ulimit -Ha";

    /// Runs SHOW under runc with `spec`'s process on a busybox root.
    fn under_runc(mut spec: crate::runtime::Spec, dir: &std::path::Path) -> String {
        use std::process::{Command, Stdio};
        let rootfs = dir.join("bundle/rootfs");
        let mut root = spec.root().clone().unwrap();
        root.set_path(rootfs.clone());
        spec.set_root(Some(root));
        spec.save(dir.join("bundle/config.json")).unwrap();
        let id = spec.hostname().clone().unwrap();
        /// `runc delete -f` even when the run fails.
        struct Delete<'a>(&'a std::path::Path, &'a str);
        impl Drop for Delete<'_> {
            fn drop(&mut self) {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(self.0)
                    .args(["delete", "-f", self.1])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let state = dir.join("state");
        let _delete = Delete(&state, &id);
        let out = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .arg("run")
            .arg("--bundle")
            .arg(dir.join("bundle"))
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .expect("runc is not on PATH: run scripts/install-deps.sh");
        assert!(
            out.status.success(),
            "runc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs SHOW on the host after applying `id` in a forked child.
    fn under_identity(id: &Identity) -> String {
        use std::ffi::CString;
        use std::io::Read;
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let sh = CString::new("/bin/busybox").unwrap();
        let args = [
            c"sh".to_owned(),
            c"-c".to_owned(),
            CString::new(SHOW).unwrap(),
        ];
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        use std::os::fd::AsRawFd;
        let w = write_end.as_raw_fd();
        // SAFETY: as in_child; the child only makes system calls.
        let pid = match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: dup2 onto stdout, then exec with argv the parent
                // built; _exit if anything fails.
                unsafe {
                    libc::dup2(w, 1);
                    if id.apply().is_ok() {
                        libc::execv(sh.as_ptr(), argv.as_ptr());
                    }
                    libc::_exit(127)
                }
            }
            ForkResult::Parent { child } => child,
        };
        drop(write_end);
        let mut out = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(
            waitpid(pid, None).unwrap(),
            WaitStatus::Exited(pid, 0),
            "identity child failed: {out}"
        );
        out
    }

    fn compare_with_runc(opts: crate::runtime::RunOptions, tweak: impl FnOnce(&mut Process)) {
        let tmp = tempfile::tempdir().unwrap();
        let container = tmp.path().join("container");
        std::fs::create_dir_all(&container).unwrap();
        let rootfs = tmp.path().join("bundle/rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "grep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        // Reachable by uid 1000 whatever the umask of whoever runs the tests.
        use std::os::unix::fs::PermissionsExt;
        for p in [
            tmp.path().to_path_buf(),
            tmp.path().join("bundle"),
            rootfs.clone(),
        ]
        .into_iter()
        .chain(["bin", "bin/busybox"].map(|p| rootfs.join(p)))
        {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut spec = crate::runtime::build_spec(
            &crate::runtime::ImageConfig::default(),
            &crate::runtime::RunOptions {
                name: format!("berth-identity-{}", std::process::id()),
                args: vec!["sh".into(), "-c".into(), SHOW.into()],
                ..opts
            },
            &rootfs,
            &container,
        )
        .unwrap();
        let mut process = spec.process().clone().unwrap();
        tweak(&mut process);
        spec.set_process(Some(process.clone()));
        let ours = under_identity(&Identity::from_process(&process).unwrap());
        let runc = under_runc(spec, tmp.path());
        assert_eq!(ours, runc);
        assert!(ours.contains("CapBnd:"), "{ours}");
    }

    #[test]
    fn same_as_runc_for_docker_defaults() {
        compare_with_runc(Default::default(), |_| {});
    }

    #[test]
    fn same_as_runc_for_a_user_with_ambient_caps_and_limits() {
        // busybox's /etc/passwd is not there: numeric ids.
        let opts = crate::runtime::RunOptions {
            user: Some("1000:1000".into()),
            cap_drop: vec!["CHOWN".into(), "KILL".into()],
            cap_add: vec!["NET_RAW".into(), "SYS_PTRACE".into()],
            ulimits: vec![
                "nofile=1024:2048".into(),
                "nproc=500:600".into(),
                "core=0".into(),
            ],
            ..Default::default()
        };
        compare_with_runc(opts, |p| {
            let mut user = p.user().clone();
            user.set_additional_gids(Some(vec![2000, 44]));
            user.set_umask(Some(0o027));
            p.set_user(user);
            p.set_no_new_privileges(Some(true));
            let mut caps = p.capabilities().clone().unwrap();
            let nbs: Capabilities = [Capability::NetBindService].into_iter().collect();
            caps.set_inheritable(Some(nbs.clone()));
            caps.set_ambient(Some(nbs));
            p.set_capabilities(Some(caps));
        });
    }
}
