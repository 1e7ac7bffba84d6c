//! `berth-stats`: live resource usage of containers.
//!
//! Each sample takes two readings of every container `--interval` apart
//! (the first reading of a stream is only a baseline), so CPU percent and
//! rates are always over that interval, never since the container started.
//! The metadata database is opened once; each sample lists the containers
//! with one small query (no spec, no write lock), so containers started
//! while streaming appear and stopped ones drop out quietly.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, Parser, ValueEnum};
use serde_json::json;

use super::GlobalArgs;
use crate::metadata::{ContainerRecord, ContainerStatus, Db};
use crate::monitor::{self, Monitor, Sample, Target};
use crate::Error;

/// Exit status of berth-stats (it differs from the other tools for a
/// container that is not there: docker stats exits 1 then).
pub const EXIT_STATUS_HELP: &str = "Exit status:
  0  success (also when stdout is closed, as by `| head`)
  1  a named container does not exist or is not running; or reading the
     store, the cgroups or writing --output failed
  2  usage error (bad flag or argument, ambiguous id prefix)";

/// Show containers' CPU, memory, network, block I/O and process counts.
///
/// With no CONTAINER, every running container (every container with
/// --all). On a terminal the table is redrawn every --interval like
/// docker stats; otherwise (or with --no-stream) each sample is printed
/// as a new block. CPU % is measured over the interval: 100% is one full
/// core. MEM USAGE is the working set (usage minus inactive file cache);
/// MEM % is against the memory limit, or the host's memory when there is
/// none. NET I/O counts every interface of the container's own network
/// namespace, loopback included; a container on the host network shows
/// "--". Containers that stop while sampled are dropped quietly.
///
/// --format json prints one JSON object per container per sample, one
/// per line (like docker stats --format json), with numbers instead of
/// human units and null where a figure is unavailable. --format
/// prometheus prints the text exposition format with cAdvisor-style
/// container_* metrics labelled id, name and image; with --output FILE
/// each sample replaces FILE atomically (a temp file in the same
/// directory, then rename), as node_exporter's textfile collector needs;
/// on stdout each sample's exposition follows the previous one, so use
/// --no-stream (or --count 1) to get one a parser accepts.
#[derive(Debug, Parser)]
#[command(name = "berth-stats", version, after_help = EXIT_STATUS_HELP)]
pub struct StatsArgs {
    /// Containers: id, unique id prefix, or name (default: all running)
    #[arg(value_name = "CONTAINER")]
    pub containers: Vec<String>,
    /// Include stopped containers (shown without figures)
    #[arg(short, long)]
    pub all: bool,
    /// Print one sample and exit (two readings --interval apart)
    #[arg(long)]
    pub no_stream: bool,
    /// Time between readings: 1s, 500ms, 2.5s, 0, or plain seconds
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,
    /// Stop after N samples
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: StatsFormat,
    /// Write each sample to FILE instead of stdout, replacing it atomically
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Show full container ids in the table
    #[arg(long)]
    pub no_trunc: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    Table,
    Json,
    Prometheus,
}

pub fn command() -> clap::Command {
    StatsArgs::command()
}

/// `1s`, `500ms`, `2.5s`, `1m`, or a plain number of seconds.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: not a duration (like 1s, 500ms, 2.5s)");
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn main() -> i32 {
    let args = StatsArgs::parse();
    let prog = "berth-stats";
    match run(&args) {
        Ok(code) => code,
        Err(Failure::Named(messages)) => {
            for m in messages {
                eprintln!("{prog}: error: {m}");
            }
            super::exit::FAILURE
        }
        Err(Failure::Other(e)) => super::report(prog, &e),
    }
}

enum Failure {
    /// Named containers that are not there or not running.
    Named(Vec<String>),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

impl From<crate::metadata::Error> for Failure {
    fn from(e: crate::metadata::Error) -> Self {
        Failure::Other(e.into())
    }
}

impl From<monitor::Error> for Failure {
    fn from(e: monitor::Error) -> Self {
        Failure::Other(e.into())
    }
}

/// Which containers each sample looks at.
enum Selection {
    /// Every running container (every one with `--all`).
    All,
    /// These ids, in this order.
    Named(Vec<String>),
}

fn run(args: &StatsArgs) -> Result<i32, Failure> {
    let (_, root) = args.global.load()?;
    let mut db = Db::open(&root)?;
    let selection = select(&mut db, args)?;
    let mut monitor = Monitor::new()?;
    let stdout = std::io::stdout();
    let redraw = args.format == StatsFormat::Table
        && args.output.is_none()
        && !args.no_stream
        && stdout.is_terminal();
    let count = if args.no_stream {
        1
    } else {
        args.count.unwrap_or(u64::MAX)
    };

    // The baseline reading: nothing is shown from it.
    let start = Instant::now();
    monitor.sample(&targets(&db, &selection, args.all)?)?;
    for n in 1..=count {
        let due = start + args.interval.saturating_mul(n.min(u32::MAX as u64) as u32);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let samples = monitor.sample(&targets(&db, &selection, args.all)?)?;
        let text = render(args, &samples, monitor.host_memory(), redraw);
        match &args.output {
            Some(path) => write_atomically(path, text.as_bytes())?,
            None => {
                let mut out = stdout.lock();
                if out
                    .write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    // Whoever read our output went away (`| head`): done.
                    return Ok(super::exit::SUCCESS);
                }
            }
        }
    }
    Ok(super::exit::SUCCESS)
}

/// Resolves the names given, once: each must exist and (without `--all`)
/// be running.
fn select(db: &mut Db, args: &StatsArgs) -> Result<Selection, Failure> {
    if args.containers.is_empty() {
        return Ok(Selection::All);
    }
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for name in &args.containers {
        match db.container_reconciled(name) {
            Ok(rec) if rec.status == ContainerStatus::Running || args.all => {
                if !ids.contains(&rec.id) {
                    ids.push(rec.id)
                }
            }
            Ok(rec) => missing.push(format!("container {} is not running", rec.name)),
            Err(crate::metadata::Error::NotFound { .. }) => {
                missing.push(format!("no such container: {name}"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !missing.is_empty() {
        return Err(Failure::Named(missing));
    }
    Ok(Selection::Named(ids))
}

/// The containers to read now, in listing order (oldest first) or the
/// order named.
fn targets(db: &Db, selection: &Selection, all: bool) -> Result<Vec<Target>, Error> {
    let recs = db.containers_brief()?;
    let wanted = |r: &ContainerRecord| all || r.status == ContainerStatus::Running;
    Ok(match selection {
        Selection::All => recs.iter().filter(|r| wanted(r)).map(target).collect(),
        Selection::Named(ids) => {
            let set: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let mut found: Vec<&ContainerRecord> = recs
                .iter()
                .filter(|r| set.contains(r.id.as_str()))
                .collect();
            found.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
            found
                .into_iter()
                .filter(|r| wanted(r))
                .map(target)
                .collect()
        }
    })
}

fn target(r: &ContainerRecord) -> Target {
    Target {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.image.clone(),
        running: r.status == ContainerStatus::Running,
        cgroup_path: r.cgroup_path.clone(),
        pid: r.pid,
        pid_start: r.pid_start,
        started_ns: r.started_ns,
    }
}

fn render(args: &StatsArgs, samples: &[Sample], host_memory: u64, redraw: bool) -> String {
    match args.format {
        StatsFormat::Table => {
            let mut text = String::new();
            if redraw {
                // Home and clear, then the table: the previous sample's
                // rows never linger below a shorter one.
                text.push_str("\x1b[H\x1b[2J");
            }
            text.push_str(&table(samples, args.no_trunc));
            text
        }
        StatsFormat::Json => {
            let mut text = String::new();
            for s in samples {
                text.push_str(&json_line(s, host_memory).to_string());
                text.push('\n');
            }
            text
        }
        StatsFormat::Prometheus => monitor::prometheus::render(samples),
    }
}

pub const TABLE_HEADERS: [&str; 8] = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
];

fn table(samples: &[Sample], no_trunc: bool) -> String {
    const NONE: &str = "--";
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            let id = if no_trunc {
                s.target.id.clone()
            } else {
                s.target.id.chars().take(12).collect()
            };
            let stats = s.reading.as_ref().map(|r| &r.cgroup);
            let io = stats.and_then(|c| c.io.as_ref());
            vec![
                id,
                s.target.name.clone(),
                s.cpu_percent.map_or(NONE.into(), |p| format!("{p:.2}%")),
                s.memory.map_or(NONE.into(), |m| {
                    format!(
                        "{} / {}",
                        binary_size(m.working_set),
                        binary_size(m.effective_limit)
                    )
                }),
                s.memory
                    .map_or(NONE.into(), |m| format!("{:.2}%", m.percent)),
                s.net.map_or(NONE.into(), |n| {
                    format!(
                        "{} / {}",
                        super::ls::human_size(n.rx_bytes),
                        super::ls::human_size(n.tx_bytes)
                    )
                }),
                io.map_or(NONE.into(), |i| {
                    format!(
                        "{} / {}",
                        super::ls::human_size(i.read_bytes),
                        super::ls::human_size(i.write_bytes)
                    )
                }),
                stats
                    .and_then(|c| c.pids.as_ref())
                    .map_or(NONE.into(), |p| p.current.to_string()),
            ]
        })
        .collect();
    super::ls::render_table(&TABLE_HEADERS, &rows)
}

/// Memory sizes in binary units, as docker stats prints them: `100MiB`,
/// `1.944GiB`.
pub fn binary_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        // Four significant digits, trailing zeros dropped.
        let decimals = if v < 10.0 {
            3
        } else if v < 100.0 {
            2
        } else {
            1
        };
        let s = format!("{v:.decimals$}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}{}", UNITS[unit])
    }
}

/// One container's sample as a JSON object: numbers, not human units.
pub fn json_line(s: &Sample, host_memory: u64) -> serde_json::Value {
    let r = s.reading.as_ref();
    let c = r.map(|r| &r.cgroup);
    let read = r.map(|r| {
        let ns = r
            .time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        rfc3339_nanos(ns)
    });
    json!({
        "id": s.target.id,
        "name": s.target.name,
        "image": s.target.image,
        "running": r.is_some(),
        "read": read,
        "cpu_percent": s.cpu_percent,
        "cpu": c.and_then(|c| c.cpu.as_ref()),
        "memory": s.memory.map(|m| json!({
            "usage": m.usage,
            "working_set": m.working_set,
            "limit": m.limit,
            "effective_limit": m.effective_limit,
            "host_total": host_memory,
            "percent": m.percent,
            "cache": c.and_then(|c| c.memory.as_ref()).and_then(|m| m.cache),
            "rss": c.and_then(|c| c.memory.as_ref()).and_then(|m| m.rss),
            "inactive_file": c.and_then(|c| c.memory.as_ref()).and_then(|m| m.inactive_file),
        })),
        "oom_kills": c.and_then(|c| c.oom_kills),
        "pids": c.and_then(|c| c.pids.as_ref()),
        "block_io": c.and_then(|c| c.io.as_ref()),
        "block_read_rate": s.block_read_rate,
        "block_write_rate": s.block_write_rate,
        "net": s.net,
        "net_rx_rate": s.net_rx_rate,
        "net_tx_rate": s.net_tx_rate,
        "interfaces": r.and_then(|r| r.net.as_ref()),
        "pressure": c.map(|c| json!({
            "cpu": c.cpu_pressure,
            "memory": c.memory_pressure,
            "io": c.io_pressure,
        })),
    })
}

fn rfc3339_nanos(ns: i64) -> String {
    let whole = super::ls::timestamp(ns);
    // `…:SSZ` → `…:SS.nnnnnnnnnZ`
    let frac = ns.rem_euclid(1_000_000_000);
    format!("{}.{frac:09}Z", whole.trim_end_matches('Z'))
}

/// Replaces `path` with `data` so a reader sees the old file or the new
/// one, never part of either: write a temp file in the same directory
/// (same filesystem, so rename is atomic), then rename it over.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), monitor::Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    // A leading dot and a suffix other than .prom: the textfile collector
    // never reads a half-written temp file.
    let tmp = dir.join(format!(".{file_name}.{}.{nonce}.tmp", std::process::id()));
    let err = |source| monitor::Error::Output {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "x", "1h", "-1s", "nan", "1e10"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binary_sizes() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(binary_size(1024), "1KiB");
        assert_eq!(binary_size(100 * 1024 * 1024), "100MiB");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(binary_size(2_087_354_368), "1.944GiB");
    }

    #[test]
    fn nanosecond_timestamps() {
        assert_eq!(
            rfc3339_nanos(1_500_000_000),
            "1970-01-01T00:00:01.500000000Z"
        );
    }

    #[test]
    fn atomic_output_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("berth.prom");
        write_atomically(&p, b"one\n").unwrap();
        write_atomically(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["berth.prom"]);
        let err = write_atomically(&dir.path().join("no/such/dir/f"), b"x").unwrap_err();
        assert!(err.to_string().contains("no/such/dir/f"), "{err}");
    }
}
