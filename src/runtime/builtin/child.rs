//! The container's init between `clone` and `execve`.
//!
//! Everything here runs in the child of a `clone` that may have happened
//! while other threads of the caller held locks (the test harness is
//! multi-threaded), so nothing allocates: the [`Plan`] was prepared by the
//! parent, paths are built in stack buffers, and failures are written to
//! the report pipe as one message before `_exit`.
//!
//! Order of work: wait for the parent (cgroup joined, id maps written) →
//! join/unshare the remaining namespaces → session, stdio → `lo`, hostname
//! → mounts, devices and `/dev` links inside the rootfs → `pivot_root` →
//! console → read-only root → sysctls, read-only and masked paths →
//! identity → working directory → find the command → report ready → wait
//! on `exec.fifo` for `start` → `execve`.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{self, fchownat, Gid, Uid};

use super::plan::{MountStep, MountWhat, Plan};
use crate::rootfs::open_in_root;
use crate::runtime::identity::set_ids;

/// Report kinds: the first byte of every message on the report pipe.
pub(super) const READY: u8 = b'R';
pub(super) const FAILED: u8 = b'E';
pub(super) const NOT_FOUND: u8 = b'N';
pub(super) const NOT_EXECUTABLE: u8 = b'X';

/// Longest message body; a whole message fits in one atomic pipe write.
pub(super) const MAX_MESSAGE: usize = 2048;

/// Descriptors the init inherits from the parent.
pub(super) struct Fds {
    pub sync: RawFd,
    pub report: RawFd,
    pub stdio: Option<[RawFd; 3]>,
    /// Connected to the console socket, for terminal mode.
    pub console: Option<RawFd>,
    /// `exec.fifo`, opened with `O_PATH`.
    pub fifo: RawFd,
    /// NULL-terminated argv and envp pointing into the plan.
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
}

/// A message assembled on the stack.
struct Msg {
    buf: [u8; MAX_MESSAGE + 3],
    len: usize,
}

impl Msg {
    fn new(kind: u8) -> Msg {
        let mut m = Msg {
            buf: [0; MAX_MESSAGE + 3],
            len: 3,
        };
        m.buf[0] = kind;
        m
    }

    fn push(&mut self, b: &[u8]) -> &mut Msg {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }

    fn send(&mut self, fd: RawFd) {
        let body = (self.len - 3) as u16;
        self.buf[1..3].copy_from_slice(&body.to_le_bytes());
        // SAFETY: buf holds len initialised bytes; a short or failed write
        // leaves the parent to report the init's exit instead.
        unsafe { libc::write(fd, self.buf.as_ptr().cast(), self.len) };
    }
}

#[derive(Clone, Copy)]
struct Reporter(RawFd);

impl Reporter {
    /// Reports "`what` `arg`: `errno`" and exits.
    fn die(self, what: &str, arg: &[u8], errno: Errno) -> ! {
        let mut m = Msg::new(FAILED);
        m.push(what.as_bytes());
        if !arg.is_empty() {
            m.push(b" ").push(arg);
        }
        m.push(b": ").push(errno.desc().as_bytes());
        m.send(self.0);
        exit(1)
    }

    fn check<T>(self, r: nix::Result<T>, what: &str, arg: &[u8]) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.die(what, arg, e),
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or flushing its stdio copies, which belong to the parent.
    unsafe { libc::_exit(code) }
}

/// `/proc/self/fd/N` in a stack buffer.
struct FdPath([u8; 32]);

impl FdPath {
    fn new(fd: RawFd) -> FdPath {
        let mut b = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        b[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 12];
        let mut n = fd as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let d = &digits[i..];
        b[prefix.len()..prefix.len() + d.len()].copy_from_slice(d);
        FdPath(b)
    }

    fn as_cstr(&self) -> &CStr {
        // The buffer is zeroed past the digits, so a NUL ends it.
        CStr::from_bytes_until_nul(&self.0).unwrap_or(c"/proc/self/fd")
    }
}

/// Opens `rel` inside `root` with `O_PATH`, creating what is missing on
/// the way: directories, and for `file` the last component as an empty
/// file.
fn ensure(root: BorrowedFd<'_>, rel: &[u8], file: bool) -> nix::Result<OwnedFd> {
    match open_in_root(root, rel, OFlag::O_PATH) {
        Err(Errno::ENOENT) => {}
        other => return other,
    }
    let mut parent = open_in_root(root, b"", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let mut start = 0;
    while start < rel.len() {
        let end = rel[start..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(rel.len(), |p| start + p);
        let name = &rel[start..end];
        if !name.is_empty() {
            match open_in_root(root, &rel[..end], OFlag::O_PATH) {
                Ok(fd) => parent = fd,
                Err(Errno::ENOENT) => {
                    let last = end == rel.len();
                    let made = if last && file {
                        nix::fcntl::openat(
                            parent.as_fd(),
                            name,
                            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map(drop)
                    } else {
                        nix::sys::stat::mkdirat(
                            parent.as_fd(),
                            name,
                            Mode::from_bits_truncate(0o755),
                        )
                    };
                    match made {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    parent = open_in_root(root, &rel[..end], OFlag::O_PATH)?;
                }
                Err(e) => return Err(e),
            }
        }
        start = end + 1;
    }
    Ok(parent)
}

/// A descriptor the parent passed down and keeps open until we exec.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the parent's descriptors stay open in this process for its
    // whole life before execve.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn none() -> Option<&'static CStr> {
    None
}

fn data_of(d: &CStr) -> Option<&CStr> {
    if d.is_empty() {
        None
    } else {
        Some(d)
    }
}

/// Runs the init; never returns.
pub(super) fn init(plan: &Plan, fds: &Fds) -> ! {
    let r = Reporter(fds.report);
    let mut go = [0u8; 1];
    match unistd::read(borrow(fds.sync), &mut go) {
        Ok(1) => {}
        // The parent gave up on us.
        _ => exit(1),
    }

    for (fd, flag, path) in &plan.joins {
        r.check(setns(fd, *flag), "joining namespace", path.to_bytes());
    }
    if plan.bind_devices {
        // In a user namespace we start as ids it does not map: become its
        // root, or nothing we create could be owned by anyone. (Raw calls:
        // glibc's wrappers may block in a child of a threaded process.)
        r.check(set_ids(libc::SYS_setresgid, 0), "setresgid", b"0");
        r.check(set_ids(libc::SYS_setresuid, 0), "setresuid", b"0");
    }
    if plan.new_cgroupns {
        r.check(
            unshare(CloneFlags::CLONE_NEWCGROUP),
            "creating cgroup namespace",
            b"",
        );
    }
    r.check(unistd::setsid(), "creating session", b"");
    nix::sys::stat::umask(Mode::empty());
    if let Some(adj) = &plan.oom_score_adj {
        write_file(r, c"/proc/self/oom_score_adj", adj);
    }
    if let Some(stdio) = fds.stdio {
        // Copies above 2 first, so a source that is itself 0, 1 or 2 is not
        // overwritten before it is used.
        let mut high = [0; 3];
        for (h, fd) in high.iter_mut().zip(stdio) {
            *h = r.check(
                nix::fcntl::fcntl(borrow(fd), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)),
                "duplicating stdio",
                b"",
            );
        }
        for (i, h) in high.into_iter().enumerate() {
            // SAFETY: dup2 on descriptors we hold.
            let rc = unsafe { libc::dup2(h, i as RawFd) };
            r.check(Errno::result(rc), "setting up stdio", b"");
        }
    }
    if plan.loopback {
        loopback_up(r);
    }
    if let Some(h) = &plan.hostname {
        r.check(
            unistd::sethostname(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(h.to_bytes()),
            ),
            "setting hostname",
            h.to_bytes(),
        );
    }
    if let Some(d) = &plan.domainname {
        // SAFETY: d is a valid C string of the given length.
        let rc = unsafe { libc::setdomainname(d.as_ptr(), d.to_bytes().len()) };
        r.check(Errno::result(rc), "setting domainname", d.to_bytes());
    }

    prepare_root(r, plan);
    if let Some(sock) = fds.console {
        console(r, sock);
    }
    if plan.root_readonly {
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if mount(none(), c"/", none(), ro, none()).is_err() {
            // Flags the kernel locked on this mount must be kept.
            let kept = locked_flags(r, c"/");
            r.check(
                mount(none(), c"/", none(), ro | kept, none()),
                "remounting / read-only",
                b"",
            );
        }
    }
    for (path, value) in &plan.sysctls {
        write_file(r, path, value);
    }
    for p in &plan.readonly {
        readonly_path(r, p);
    }
    for p in &plan.masked {
        mask_path(r, p);
    }

    if let Err((what, e)) = plan.identity.apply() {
        r.die(what, b"", e);
    }
    r.check(
        unistd::chdir(plan.cwd.as_c_str()),
        "changing to working directory",
        plan.cwd.to_bytes(),
    );
    nix::sys::stat::umask(plan.umask);

    let mut path_buf = [0u8; 4096];
    let program = find_command(r, plan, &mut path_buf);

    Msg::new(READY).send(fds.report);
    let fifo = FdPath::new(fds.fifo);
    // Blocks until `start` opens the fifo for reading.
    let w = r.check(
        nix::fcntl::open(
            fifo.as_cstr(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
        "opening exec fifo",
        b"",
    );
    let _ = unistd::write(&w, b"0");
    // Descriptors the caller leaked to us (anything not CLOEXEC, from any
    // of its threads) must not reach the container.
    // SAFETY: close_range only changes flags on our own descriptor table.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // Ignored signals survive execve: the caller's SIGPIPE (Rust programs
    // ignore it for their own writes), and whatever the shell or service
    // that started the caller ignored (nohup's SIGHUP, a background job's
    // SIGINT and SIGQUIT). The command starts with every default, as under
    // runc. Its blocked signals go too.
    crate::runtime::reset_ignored_signals(&[]);
    // SAFETY: sigprocmask() only changes this process's own signal state;
    // the empty set lives on our stack.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    // SAFETY: program is NUL-terminated; argv and envp are NULL-terminated
    // arrays of C strings owned by the plan, which outlives this call.
    unsafe { libc::execve(program.as_ptr(), fds.argv, fds.envp) };
    // The parent has gone: all that is left to tell is our stderr.
    let e = Errno::last();
    let mut m = Msg::new(0);
    m.push(b"berth: exec ")
        .push(program.to_bytes())
        .push(b": ")
        .push(e.desc().as_bytes())
        .push(b"\n");
    // SAFETY: writing initialised bytes of m to fd 2.
    unsafe { libc::write(2, m.buf[3..].as_ptr().cast(), m.len - 3) };
    exit(127)
}

fn write_file(r: Reporter, path: &CStr, value: &CStr) {
    let fd = r.check(
        nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()),
        "opening",
        path.to_bytes(),
    );
    r.check(
        unistd::write(&fd, value.to_bytes()),
        "writing",
        path.to_bytes(),
    );
}

fn loopback_up(r: Reporter) {
    // SAFETY: plain socket(2); the result is checked.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let s = r.check(Errno::result(s), "bringing up lo: socket", b"");
    // SAFETY: s is a new descriptor we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of the ifreq we pass.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    r.check(Errno::result(rc), "bringing up lo", b"");
    // SAFETY: the union member just filled by SIOCGIFFLAGS.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    r.check(Errno::result(rc), "bringing up lo", b"");
}

fn prepare_root(r: Reporter, plan: &Plan) {
    r.check(
        mount(none(), c"/", none(), plan.root_propagation, none()),
        "setting propagation of /",
        b"",
    );
    let rootfs = plan.rootfs.as_c_str();
    r.check(
        mount(
            Some(rootfs),
            rootfs,
            none(),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none(),
        ),
        "binding root filesystem",
        rootfs.to_bytes(),
    );
    let root = r.check(
        nix::fcntl::open(
            rootfs,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
        "opening root filesystem",
        rootfs.to_bytes(),
    );
    let root = root.as_fd();

    for m in &plan.mounts {
        do_mount(r, root, m);
    }
    make_devices(r, plan, root);
    let _ = r.check(
        ensure(root, &plan.cwd_rel, false),
        "creating working directory",
        plan.cwd.to_bytes(),
    );

    r.check(
        unistd::fchdir(root),
        "entering root filesystem",
        rootfs.to_bytes(),
    );
    r.check(
        unistd::pivot_root(c".", c"."),
        "pivot_root into",
        rootfs.to_bytes(),
    );
    // The old root is stacked under the new one: detach it without letting
    // the unmount reach the host.
    r.check(
        mount(
            none(),
            c".",
            none(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            none(),
        ),
        "making old root a slave",
        b"",
    );
    r.check(
        umount2(c".", MntFlags::MNT_DETACH),
        "detaching old root",
        b"",
    );
    r.check(unistd::chdir(c"/"), "changing to /", b"");
}

fn do_mount(r: Reporter, root: BorrowedFd<'_>, m: &MountStep) {
    let dest = m.dest.to_bytes();
    let file = matches!(m.what, MountWhat::Bind { file: true, .. });
    let target = r.check(ensure(root, &m.rel, file), "creating mount point", dest);
    let at = FdPath::new(target.as_raw_fd());
    match &m.what {
        MountWhat::Fs {
            fstype,
            source,
            flags,
            data,
        } => {
            let e = mount(
                Some(source.as_c_str()),
                at.as_cstr(),
                Some(fstype.as_c_str()),
                *flags,
                data_of(data),
            );
            if let Err(e) = e {
                let mut msg = Msg::new(FAILED);
                msg.push(b"mounting ")
                    .push(fstype.to_bytes())
                    .push(b" at ")
                    .push(dest);
                msg.push(b": ").push(e.desc().as_bytes());
                msg.send(r.0);
                exit(1);
            }
        }
        MountWhat::Bind { source, flags, .. } => {
            let bind = MsFlags::MS_BIND | (*flags & MsFlags::MS_REC);
            r.check(
                mount(Some(source.as_c_str()), at.as_cstr(), none(), bind, none()),
                "bind-mounting onto",
                dest,
            );
            if !(*flags - MsFlags::MS_BIND - MsFlags::MS_REC).is_empty() {
                let now = r.check(open_in_root(root, &m.rel, OFlag::O_PATH), "reopening", dest);
                let at = FdPath::new(now.as_raw_fd());
                let remount = |extra| {
                    mount(
                        Some(source.as_c_str()),
                        at.as_cstr(),
                        none(),
                        *flags | MsFlags::MS_REMOUNT | extra,
                        none(),
                    )
                };
                if let Err(e) = remount(MsFlags::empty()) {
                    // In a user namespace the source's nosuid/nodev/noexec
                    // are locked: keep them and try again.
                    if e != Errno::EPERM {
                        r.die("remounting bind mount", dest, e);
                    }
                    let kept = locked_flags(r, at.as_cstr());
                    r.check(remount(kept), "remounting bind mount", dest);
                }
            }
        }
        MountWhat::Cgroup2 { flags } => {
            r.check(
                mount(
                    Some(c"cgroup2"),
                    at.as_cstr(),
                    Some(c"cgroup2"),
                    *flags,
                    none(),
                ),
                "mounting cgroup2 at",
                dest,
            );
        }
        MountWhat::CgroupV1 { flags, hierarchies } => {
            let base = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            r.check(
                mount(
                    Some(c"tmpfs"),
                    at.as_cstr(),
                    Some(c"tmpfs"),
                    base,
                    Some(c"mode=755"),
                ),
                "mounting tmpfs at",
                dest,
            );
            let ro = *flags & MsFlags::MS_RDONLY;
            for h in hierarchies {
                let sub = r.check(
                    ensure(root, &h.rel, false),
                    "creating mount point",
                    h.dest.to_bytes(),
                );
                let at = FdPath::new(sub.as_raw_fd());
                match &h.bind_from {
                    None => r.check(
                        mount(
                            Some(h.source.as_c_str()),
                            at.as_cstr(),
                            Some(c"cgroup"),
                            base | ro,
                            Some(h.data.as_c_str()),
                        ),
                        "mounting cgroup at",
                        h.dest.to_bytes(),
                    ),
                    Some(src) => {
                        r.check(
                            mount(
                                Some(src.as_c_str()),
                                at.as_cstr(),
                                none(),
                                MsFlags::MS_BIND | MsFlags::MS_REC,
                                none(),
                            ),
                            "binding cgroup onto",
                            h.dest.to_bytes(),
                        );
                        let now = r.check(
                            open_in_root(root, &h.rel, OFlag::O_PATH),
                            "reopening",
                            h.dest.to_bytes(),
                        );
                        let at = FdPath::new(now.as_raw_fd());
                        r.check(
                            mount(
                                Some(src.as_c_str()),
                                at.as_cstr(),
                                none(),
                                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro,
                                none(),
                            ),
                            "remounting cgroup",
                            h.dest.to_bytes(),
                        );
                    }
                }
                if !h.links.is_empty() {
                    let dir = r.check(
                        open_in_root(root, &m.rel, OFlag::O_PATH | OFlag::O_DIRECTORY),
                        "opening",
                        dest,
                    );
                    for (name, target) in &h.links {
                        match unistd::symlinkat(target.as_c_str(), &dir, name.as_c_str()) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => r.die("linking cgroup controller", name.to_bytes(), e),
                        }
                    }
                }
            }
            // The tmpfs itself stays writable, as under runc (docker's
            // containers show it rw); the hierarchies in it are read-only.
        }
    }
    if !m.propagation.is_empty() {
        let now = r.check(open_in_root(root, &m.rel, OFlag::O_PATH), "reopening", dest);
        let at = FdPath::new(now.as_raw_fd());
        for p in &m.propagation {
            r.check(
                mount(none(), at.as_cstr(), none(), *p, none()),
                "setting propagation of",
                dest,
            );
        }
    }
}

/// Splits `dev/net/tun` into (`dev/net`, `tun`).
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

fn make_devices(r: Reporter, plan: &Plan, root: BorrowedFd<'_>) {
    for d in &plan.devices {
        let dest = d.dest.to_bytes();
        if plan.bind_devices {
            let target = r.check(ensure(root, &d.rel, true), "creating device", dest);
            let at = FdPath::new(target.as_raw_fd());
            r.check(
                mount(
                    Some(d.host.as_c_str()),
                    at.as_cstr(),
                    none(),
                    MsFlags::MS_BIND,
                    none(),
                ),
                "binding device",
                dest,
            );
            continue;
        }
        let (parent, name) = split_last(&d.rel);
        let dir = r.check(
            ensure(root, parent, false),
            "creating device directory",
            dest,
        );
        let dir = dir.as_fd();
        let mut made = mknodat(dir, name, d.kind, d.mode, d.dev);
        if made == Err(Errno::EEXIST) {
            let _ = unistd::unlinkat(dir, name, unistd::UnlinkatFlags::NoRemoveDir);
            made = mknodat(dir, name, d.kind, d.mode, d.dev);
        }
        r.check(made, "creating device", dest);
        r.check(
            fchownat(
                dir,
                name,
                Some(Uid::from_raw(d.uid)),
                Some(Gid::from_raw(d.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
            "changing owner of device",
            dest,
        );
    }

    let dev = r.check(
        open_in_root(root, b"dev", OFlag::O_PATH | OFlag::O_DIRECTORY),
        "opening",
        b"/dev",
    );
    let dev = dev.as_fd();
    let _ = unistd::unlinkat(dev, c"ptmx", unistd::UnlinkatFlags::NoRemoveDir);
    let mut links: [(&CStr, &CStr); 6] = [
        (c"pts/ptmx", c"ptmx"),
        (c"/proc/self/fd", c"fd"),
        (c"/proc/self/fd/0", c"stdin"),
        (c"/proc/self/fd/1", c"stdout"),
        (c"/proc/self/fd/2", c"stderr"),
        (c"/proc/kcore", c"core"),
    ];
    let n = if plan.dev_core {
        links.len()
    } else {
        links.len() - 1
    };
    for (target, name) in &mut links[..n] {
        match unistd::symlinkat(*target, dev, *name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => r.die("creating symlink /dev/", name.to_bytes(), e),
        }
    }
}

/// Flags a remount must keep: the ones the kernel locks when an
/// unprivileged user namespace sees a mount.
fn locked_flags(r: Reporter, path: &CStr) -> MsFlags {
    let st = r.check(nix::sys::statvfs::statvfs(path), "statfs", path.to_bytes());
    let f = st.flags();
    let mut out = MsFlags::empty();
    use nix::sys::statvfs::FsFlags;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

fn readonly_path(r: Reporter, p: &CStr) {
    match mount(
        Some(p),
        p,
        none(),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none(),
    ) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return,
        Err(e) => r.die("binding read-only path", p.to_bytes(), e),
    }
    let kept = locked_flags(r, p);
    r.check(
        mount(
            Some(p),
            p,
            none(),
            kept | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none(),
        ),
        "remounting read-only",
        p.to_bytes(),
    );
}

fn mask_path(r: Reporter, p: &CStr) {
    match mount(Some(c"/dev/null"), p, none(), MsFlags::MS_BIND, none()) {
        Ok(()) | Err(Errno::ENOENT) => {}
        // A directory: hide it under an empty read-only tmpfs.
        Err(Errno::ENOTDIR) => r.check(
            mount(
                Some(c"tmpfs"),
                p,
                Some(c"tmpfs"),
                MsFlags::MS_RDONLY,
                none(),
            ),
            "masking",
            p.to_bytes(),
        ),
        Err(e) => r.die("masking", p.to_bytes(), e),
    }
}

/// A new pty from the container's devpts becomes the controlling terminal
/// and stdio; its master goes to the console socket.
fn console(r: Reporter, sock: RawFd) {
    let master = r.check(
        nix::fcntl::open(
            c"/dev/ptmx",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
        "opening",
        b"/dev/ptmx",
    );
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    r.check(Errno::result(rc), "unlocking pty", b"");
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    r.check(Errno::result(rc), "finding pty number", b"");
    let mut path = [0u8; 32];
    let prefix = b"/dev/pts/";
    path[..prefix.len()].copy_from_slice(prefix);
    let num = FdPath::new(n as RawFd);
    let digits = &num.0[b"/proc/self/fd/".len()..];
    let dl = digits.iter().position(|&c| c == 0).unwrap_or(0);
    path[prefix.len()..prefix.len() + dl].copy_from_slice(&digits[..dl]);
    let slave_path = CStr::from_bytes_until_nul(&path).unwrap_or(c"/dev/pts/0");
    let slave = r.check(
        nix::fcntl::open(
            slave_path,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
        "opening",
        slave_path.to_bytes(),
    );
    // /dev/console is the terminal too, as programs expect.
    match nix::fcntl::open(
        c"/dev/console",
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => drop(fd),
        Err(e) => r.die("creating", b"/dev/console", e),
    }
    r.check(
        mount(
            Some(slave_path),
            c"/dev/console",
            none(),
            MsFlags::MS_BIND,
            none(),
        ),
        "binding terminal onto",
        b"/dev/console",
    );
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal).
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    r.check(Errno::result(rc), "making the terminal controlling", b"");
    for i in 0..3 {
        // SAFETY: dup2 on descriptors we hold.
        let rc = unsafe { libc::dup2(slave.as_raw_fd(), i) };
        r.check(Errno::result(rc), "setting up terminal stdio", b"");
    }
    send_fd(r, sock, master.as_raw_fd());
}

/// Sends `fd` over the connected unix socket `sock` as SCM_RIGHTS, the
/// way [`crate::runtime::console::receive_master`] expects.
fn send_fd(r: Reporter, sock: RawFd, fd: RawFd) {
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let name = b"/dev/ptmx";
    let mut iov = libc::iovec {
        iov_base: name.as_ptr() as *mut libc::c_void,
        iov_len: name.len(),
    };
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: msg_control points at 64 aligned bytes, more than
    // CMSG_SPACE(4); CMSG_FIRSTHDR/CMSG_DATA stay inside it.
    let rc = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            (&fd as *const RawFd).cast::<u8>(),
            libc::CMSG_DATA(c),
            std::mem::size_of::<RawFd>(),
        );
        libc::sendmsg(sock, &msg, 0)
    };
    r.check(Errno::result(rc), "sending terminal to console socket", b"");
    // SAFETY: the socket is not used again; closing our copy is all.
    unsafe { libc::close(sock) };
}

/// Result of checking one candidate path for the command.
enum Candidate {
    Runnable,
    Missing,
    NotRunnable(Errno),
}

fn candidate(path: &CStr) -> Candidate {
    match nix::sys::stat::stat(path) {
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Candidate::Missing,
        Err(e) => Candidate::NotRunnable(e),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG => {
            Candidate::NotRunnable(Errno::EACCES)
        }
        Ok(_) => {
            // SAFETY: path is a valid C string.
            let rc = unsafe {
                libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS)
            };
            match Errno::result(rc) {
                Ok(_) => Candidate::Runnable,
                Err(e) => Candidate::NotRunnable(e),
            }
        }
    }
}

/// Finds `argv[0]` as execvp would, reporting a missing or unrunnable
/// command to the parent.
fn find_command<'a>(r: Reporter, plan: &'a Plan, buf: &'a mut [u8; 4096]) -> &'a CStr {
    let arg0 = plan.exec.argv[0].as_c_str();
    let not_found = |detail: &[u8]| -> ! {
        let mut m = Msg::new(NOT_FOUND);
        m.push(b"exec: \"")
            .push(arg0.to_bytes())
            .push(b"\": ")
            .push(detail);
        m.send(r.0);
        exit(1)
    };
    let not_runnable = |e: Errno| -> ! {
        let mut m = Msg::new(NOT_EXECUTABLE);
        m.push(b"exec: \"")
            .push(arg0.to_bytes())
            .push(b"\": ")
            .push(e.desc().as_bytes());
        m.send(r.0);
        exit(1)
    };
    if plan.exec.direct {
        return match candidate(arg0) {
            Candidate::Runnable => arg0,
            Candidate::Missing => not_found(b"no such file or directory"),
            Candidate::NotRunnable(e) => not_runnable(e),
        };
    }
    let mut refused = None;
    let name = arg0.to_bytes();
    let mut found = None;
    for dir in &plan.exec.search {
        let d = dir.to_bytes();
        let len = d.len() + 1 + name.len();
        if len + 1 > buf.len() {
            continue;
        }
        buf[..d.len()].copy_from_slice(d);
        buf[d.len()] = b'/';
        buf[d.len() + 1..len].copy_from_slice(name);
        buf[len] = 0;
        let Ok(path) = CStr::from_bytes_with_nul(&buf[..=len]) else {
            continue;
        };
        match candidate(path) {
            Candidate::Runnable => {
                found = Some(len);
                break;
            }
            Candidate::Missing => {}
            Candidate::NotRunnable(e) => refused = refused.or(Some(e)),
        }
    }
    if let Some(len) = found {
        return CStr::from_bytes_with_nul(&buf[..=len]).unwrap_or(arg0);
    }
    match refused {
        Some(e) => not_runnable(e),
        None => not_found(b"executable file not found in $PATH"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths() {
        assert_eq!(FdPath::new(0).as_cstr(), c"/proc/self/fd/0");
        assert_eq!(FdPath::new(1234).as_cstr(), c"/proc/self/fd/1234");
    }

    #[test]
    fn split_last_component() {
        assert_eq!(split_last(b"dev/net/tun"), (&b"dev/net"[..], &b"tun"[..]));
        assert_eq!(split_last(b"null"), (&b""[..], &b"null"[..]));
    }

    #[test]
    fn messages_are_length_prefixed() {
        let mut m = Msg::new(FAILED);
        m.push(b"abc");
        assert_eq!(&m.buf[..m.len], &[FAILED, 0, 0, b'a', b'b', b'c']);
    }
}
