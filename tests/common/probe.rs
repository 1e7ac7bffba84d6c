//! The conformance probe: a busybox shell script that prints what a
//! container sees of itself. Two runtimes given the same spec must make it
//! print the same text.

/// Prints identity, capabilities and signal state, masked paths, the mount
/// table, cgroup limits and membership, pid, network, devices, limits,
/// umask, environment, working directory and open descriptors.
pub const PROBE: &str = r#"
echo "== id"; id
echo "== hostname"; hostname
echo "== status"; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|SigBlk|SigIgn|Seccomp)' /proc/self/status
echo "== masked"
for p in /proc/asound /proc/acpi /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
         /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
  if [ ! -e $p ]; then echo "$p absent"
  elif [ -d $p ]; then echo "$p dir entries=$(ls -A $p | wc -l)"
  elif head -c 64 $p >/dev/null 2>&1; then echo "$p readable bytes=$(head -c 64 $p | wc -c)"
  else echo "$p unreadable"; fi
done
echo "== writable"
for p in /proc/sys/kernel/hostname /proc/sysrq-trigger /sys/kernel/profiling; do
  if [ -e $p ] && sh -c "printf '' > $p" 2>/dev/null; then echo "$p writable"; else echo "$p not writable"; fi
done
echo "== mounts"
while read src mp fs opts rest; do echo "$src $mp $fs $opts"; done < /proc/self/mounts
echo "== cgroup"
for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us \
         /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max \
         /sys/fs/cgroup/cpu.max; do
  if [ -e $f ]; then echo "$f $(cat $f)"; fi
done
cat /proc/self/cgroup
ls /sys/fs/cgroup
echo "== pid"; echo $$
echo "== net"; ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags
echo "== dev"; for d in /dev/* /dev/pts/* /dev/shm /dev/mqueue; do stat -c '%n %F %a %u:%g %t:%T' $d; done
echo "== ulimit"; ulimit -a
echo "== umask"; umask
echo "== env"; env | sort
echo "== pwd"; pwd
echo "== fds"; ls /proc/self/fd
"#;

/// Two differences by design: the overlay root's lower/upper/work dirs
/// name each container's own snapshot directories; and runc's Go runtime
/// leaves signal 32 (reserved by C libraries for thread cancellation)
/// ignored in every container it starts, which no program can rely on.
pub fn normalise_probe(text: &str) -> String {
    text.lines()
        .map(|l| {
            if let Some(mask) = l.strip_prefix("SigIgn:\t") {
                let bits = u64::from_str_radix(mask, 16).unwrap_or(u64::MAX) & !(1 << 31);
                format!("SigIgn:\t{bits:016x}")
            } else if let Some(rest) = l.strip_prefix("overlay / overlay ") {
                let opts: Vec<&str> = rest
                    .split(',')
                    .filter(|o| {
                        !o.starts_with("lowerdir=")
                            && !o.starts_with("upperdir=")
                            && !o.starts_with("workdir=")
                    })
                    .collect();
                format!("overlay / overlay {}", opts.join(","))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
