//! `berth-events`: print what happened in the store, from the event log
//! (see `metadata::events`).
//!
//! Single-shot by default: the events that match are printed and the
//! program exits. `-f` is the streaming form: it then polls the log for
//! ids above the last one seen, every [`POLL`], sleeping in `poll(2)` on a
//! signalfd so SIGINT or SIGTERM end it at once (exit 0), as does a closed
//! stdout.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, UNIX_EPOCH};

use clap::{CommandFactory, Parser};
use serde::Serialize;

use super::template::Template;
use super::{exit, GlobalArgs};
use crate::metadata::{Db, Event, EventRange, EventType};
use crate::Error;

const AFTER_HELP: &str = "\
Events (TYPE ACTION):
  container  create start oom kill die remove   (die: exitCode, oomKilled, signal)
  image      pull import tag push remove
  snapshot   commit remove
  content    remove

Times (--since, --until): RFC 3339 (2026-11-28T21:50:01Z, fractions and
offsets allowed; without an offset, UTC), a date (2026-11-28, midnight UTC),
unix seconds (1764366601 or 1764366601.5), or a duration before now (10m,
1h30m, 90s; units ns us ms s m h).

Filters (--filter KEY=VALUE, repeatable; the same key ORs, keys AND):
  type=container|image|snapshot|content
  event=ACTION          also spelled action=; exit means die, destroy and delete mean remove
  container=NAME|ID     a container's events, by name, id or id prefix
  image=NAME|DIGEST     an image's events, and those of containers made from it

Formats: the default prints one line per event, as `docker events` does:
  2026-11-28T21:50:01.123456789Z container start 3f2a... (image=..., name=web)
json prints one object per line: Seq Time TimeNano Type Action ID Attributes;
a template such as '{{.Type}} {{.Action}} {{.Attributes.name}}' uses the
same keys.

Without -f, the matching events are printed and berth-events exits (docker
keeps streaming without --until; here -f is the streaming form). With -f and
no --since, only events from now on are printed; with --until, it stops once
that time has passed. The log keeps the newest events within the bounds of
the config file's [events] table (default: 100000 events, 7 days).

Examples:
  berth-events --since 1h
  berth-events -f --filter type=container --filter event=die --filter event=oom
  berth-events --filter container=web --format json
  berth-events --since 2026-11-28T00:00:00Z --until 2026-11-28T12:00:00Z";

/// Print the events of the berth store: image pulls and removals, snapshot
/// commits, container starts, exits and OOM kills.
#[derive(Debug, Parser)]
#[command(name = "berth-events", version, after_help = format!("{AFTER_HELP}\n\n{}", exit::EXIT_STATUS_HELP))]
pub struct EventsArgs {
    /// Events from this time on: RFC 3339, unix seconds, or a duration before now (10m)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Events up to this time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Keep printing new events until interrupted
    #[arg(short, long)]
    pub follow: bool,
    /// Only matching events: type=T, event=ACTION, container=NAME|ID, image=NAME
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Output format: one line per event (default), json (one object per line), or a template such as '{{.Action}} {{.ID}}'
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

pub fn command() -> clap::Command {
    EventsArgs::command()
}

/// How often `-f` looks for new events.
pub const POLL: Duration = Duration::from_millis(150);

/// Rows read per query, so a big log is printed in bounded memory.
const BATCH: u64 = 1000;

/// The keys of an event as JSON and in templates.
pub const FIELDS: &[&str] = &[
    "Seq",
    "Time",
    "TimeNano",
    "Type",
    "Action",
    "ID",
    "Attributes",
];

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row<'a> {
    seq: i64,
    time: String,
    time_nano: i64,
    #[serde(rename = "Type")]
    kind: EventType,
    action: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    attributes: &'a crate::metadata::Labels,
}

pub fn main() -> i32 {
    let args = EventsArgs::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => super::report("berth-events", &e),
    }
}

/// How events are printed.
enum Output {
    Line,
    Json,
    Template(Template),
}

fn run(args: &EventsArgs) -> Result<i32, Error> {
    let output = match args.format.as_deref() {
        None | Some("table") => Output::Line,
        Some("json") => Output::Json,
        Some(text) => Output::Template(Template::parse(text, FIELDS)?),
    };
    let filters = Filters::parse(&args.filters)?;
    let now = now_ns();
    let time = |flag: &str, text: &Option<String>| -> Result<Option<i64>, Error> {
        text.as_deref()
            .map(|t| parse_time(t, now).map_err(|e| Error::Usage(format!("{flag} {t:?}: {e}"))))
            .transpose()
    };
    let since = time("--since", &args.since)?;
    let until = time("--until", &args.until)?;
    let (_, root) = args.global.load()?;
    let db = Db::open(&root)?;
    // Signals are taken from a signalfd while following, so the wait
    // between polls ends the moment one comes.
    let signals = if args.follow {
        Some(block_signals()?)
    } else {
        None
    };
    let mut after_id = if args.follow && since.is_none() {
        db.last_event_id()?
    } else {
        0
    };
    let mut stdout = std::io::stdout().lock();
    loop {
        // Read everything there is now, in batches.
        loop {
            let batch = db.events(&EventRange {
                after_id,
                since_ns: since,
                until_ns: until,
                limit: Some(BATCH),
            })?;
            let Some(last) = batch.last() else {
                break;
            };
            after_id = last.id;
            let mut text = String::new();
            for e in batch.iter().filter(|e| filters.matches(e)) {
                render(&output, e, &mut text)?;
            }
            if write_out(&mut stdout, &text).is_err() {
                return Ok(exit::SUCCESS);
            }
        }
        let Some(signals) = &signals else {
            return Ok(exit::SUCCESS);
        };
        // Until has passed and everything up to it is printed: done. (An
        // event is stamped before its transaction commits, so look once
        // more after the deadline before stopping.)
        if until.is_some_and(|u| now_ns() > u + POLL.as_nanos() as i64) {
            return Ok(exit::SUCCESS);
        }
        if wait_signal(signals, POLL)? {
            return Ok(exit::SUCCESS);
        }
    }
}

/// Writes `text` and flushes; an error (a closed pipe) ends the program.
fn write_out(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn render(output: &Output, e: &Event, out: &mut String) -> Result<(), Error> {
    let time = rfc3339(e.time_ns);
    match output {
        Output::Line => {
            out.push_str(&format!("{time} {} {} {}", e.kind, e.action, e.subject));
            if !e.attributes.is_empty() {
                let attrs: Vec<String> = e
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push_str(&format!(" ({})", attrs.join(", ")));
            }
        }
        Output::Json | Output::Template(_) => {
            let row = Row {
                seq: e.id,
                time,
                time_nano: e.time_ns,
                kind: e.kind,
                action: &e.action,
                id: &e.subject,
                attributes: &e.attributes,
            };
            let value = serde_json::to_value(&row)
                .map_err(|err| Error::Usage(format!("encoding event {}: {err}", e.id)))?;
            match output {
                Output::Template(t) => t.render(&value, out),
                _ => out.push_str(&value.to_string()),
            }
        }
    }
    out.push('\n');
    Ok(())
}

fn block_signals() -> Result<nix::sys::signalfd::SignalFd, Error> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    let os = |action, e: nix::errno::Errno| crate::runtime::Error::Os {
        action,
        source: e.into(),
    };
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| os("blocking signals", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| os("creating signalfd", e).into())
}

/// Sleeps up to `timeout`; true when a signal came.
fn wait_signal(fd: &nix::sys::signalfd::SignalFd, timeout: Duration) -> Result<bool, Error> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
        Ok(_) => Ok(matches!(fd.read_signal(), Ok(Some(_)))),
        Err(e) => Err(crate::runtime::Error::Os {
            action: "waiting for events",
            source: e.into(),
        }
        .into()),
    }
}

fn now_ns() -> i64 {
    crate::metadata::now_ns()
}

/// `2026-11-28T21:50:01.123456789Z`.
fn rfc3339(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
    crate::runtime::container::logs::rfc3339(t)
}

// ---------------------------------------------------------------- filters

#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    Type(EventType),
    Action(String),
    Container(String),
    Image(String),
}

impl Filter {
    fn key(&self) -> &'static str {
        match self {
            Filter::Type(_) => "type",
            Filter::Action(_) => "event",
            Filter::Container(_) => "container",
            Filter::Image(_) => "image",
        }
    }

    fn matches(&self, e: &Event) -> bool {
        match self {
            Filter::Type(t) => e.kind == *t,
            Filter::Action(a) => e.action == *a,
            Filter::Container(c) => {
                e.kind == EventType::Container
                    && (e.subject.starts_with(c.as_str()) || e.attributes.get("name") == Some(c))
            }
            Filter::Image(want) => {
                let names_it = |have: &str| super::ls::image_matches(have, want);
                match e.kind {
                    EventType::Image => {
                        names_it(&e.subject) || e.attributes.get("digest") == Some(want)
                    }
                    EventType::Container => e.attributes.get("image").is_some_and(|i| names_it(i)),
                    _ => false,
                }
            }
        }
    }
}

/// `--filter` values grouped by key: a key given twice ORs, keys AND.
#[derive(Debug, Default)]
struct Filters {
    groups: Vec<Vec<Filter>>,
}

impl Filters {
    fn parse(specs: &[String]) -> Result<Filters, Error> {
        let mut groups: Vec<Vec<Filter>> = Vec::new();
        for spec in specs {
            let bad = |why: String| Error::Usage(format!("--filter {spec:?}: {why}"));
            let (key, value) = spec
                .split_once('=')
                .ok_or_else(|| bad("expected KEY=VALUE".into()))?;
            if value.is_empty() {
                return Err(bad("empty value".into()));
            }
            let f = match key {
                "type" => Filter::Type(EventType::parse(value).ok_or_else(|| {
                    bad("expected type=container, image, snapshot or content".into())
                })?),
                "event" | "action" => Filter::Action(
                    match value {
                        "exit" => "die",
                        "destroy" | "delete" => "remove",
                        other => other,
                    }
                    .to_string(),
                ),
                "container" => Filter::Container(value.to_string()),
                "image" => Filter::Image(value.to_string()),
                _ => {
                    return Err(bad(
                        "unknown key (keys: type, event, container, image)".into()
                    ))
                }
            };
            match groups.iter_mut().find(|g| g[0].key() == f.key()) {
                Some(g) => g.push(f),
                None => groups.push(vec![f]),
            }
        }
        Ok(Filters { groups })
    }

    fn matches(&self, e: &Event) -> bool {
        self.groups.iter().all(|g| g.iter().any(|f| f.matches(e)))
    }
}

// ------------------------------------------------------------------ times

/// Nanoseconds since the epoch for a `--since`/`--until` value: RFC 3339
/// (offset optional, UTC without), a date, unix seconds with an optional
/// fraction, or a duration before `now_ns`.
pub fn parse_time(text: &str, now_ns: i64) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty time".into());
    }
    if let Some(d) = parse_duration(text) {
        let ns = i64::try_from(d.as_nanos()).map_err(|_| "duration too long".to_string())?;
        return Ok(now_ns.saturating_sub(ns));
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
        let secs: i64 = secs.parse().map_err(|_| format!("{text:?}: not a time"))?;
        return Ok(secs
            .checked_mul(1_000_000_000)
            .ok_or("time too far")?
            .saturating_add(fraction_ns(frac)?));
    }
    parse_rfc3339(text)
}

/// A Go-style duration: one or more `<number><unit>`, units ns, us (µs),
/// ms, s, m, h. `None` when `text` is not one.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// `.123` → 123000000 ns; at most nine digits.
fn fraction_ns(frac: &str) -> Result<i64, String> {
    if frac.is_empty() {
        return Ok(0);
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad fraction of a second {frac:?} (at most 9 digits)"
        ));
    }
    let padded = format!("{frac:0<9}");
    padded.parse().map_err(|_| format!("bad fraction {frac:?}"))
}

/// `YYYY-MM-DD[THH:MM:SS[.frac][Z|±HH:MM]]` (a space may stand for `T`).
fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?}: not a time (expected RFC 3339 such as 2026-11-28T21:50:01Z, unix seconds, or a duration such as 10m)"
        )
    };
    let num = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (date, time) = match text.find(['T', 't', ' ']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    if !(1..=12).contains(&m) || day < 1 || day > days_in_month(y, m) {
        return Err(format!("{text:?}: no such date"));
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    let mut nanos = 0;
    if let Some(time) = time {
        // The offset: Z, or the last + or - (the date's dashes are gone).
        let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = time.rfind(['+', '-']) {
            let (c, o) = time.split_at(i);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
            let (oh, om) = (num(oh)?, num(om)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            (c, sign * (oh * 3600 + om * 60))
        } else {
            (time, 0)
        };
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let t: Vec<&str> = hms.split(':').collect();
        if t.len() != 3 || t.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        let (h, mi, s) = (num(t[0])?, num(t[1])?, num(t[2])?);
        if h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + s - offset;
        nanos = fraction_ns(frac)?;
    }
    secs.checked_mul(1_000_000_000)
        .map(|n| n + nanos)
        .ok_or_else(|| "time too far".to_string())
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian: the
/// inverse of `logs::civil_from_days` (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Labels;

    const S: i64 = 1_000_000_000;

    #[test]
    fn times_in_every_form() {
        let now = 1_764_366_601 * S;
        // 2025-11-28T21:50:01Z is 1764366601.
        assert_eq!(
            parse_time("2025-11-28T21:50:01Z", now),
            Ok(1_764_366_601 * S)
        );
        assert_eq!(
            parse_time("2025-11-28T21:50:01.5Z", now),
            Ok(1_764_366_601 * S + S / 2)
        );
        assert_eq!(
            parse_time("2025-11-28T22:50:01.000000001+01:00", now),
            Ok(1_764_366_601 * S + 1)
        );
        assert_eq!(
            parse_time("2025-11-28T20:20:01-01:30", now),
            Ok(1_764_366_601 * S)
        );
        assert_eq!(
            parse_time("2025-11-28T21:50:01", now),
            Ok(1_764_366_601 * S)
        );
        assert_eq!(
            parse_time("2025-11-28 21:50:01z", now),
            Ok(1_764_366_601 * S)
        );
        assert_eq!(parse_time("2025-11-28", now), Ok(1_764_288_000 * S));
        assert_eq!(parse_time("1970-01-01T00:00:00Z", now), Ok(0));
        assert_eq!(parse_time("2024-02-29", now), Ok(1_709_164_800 * S));
        // Unix seconds.
        assert_eq!(parse_time("1764366601", now), Ok(1_764_366_601 * S));
        assert_eq!(
            parse_time("1764366601.25", now),
            Ok(1_764_366_601 * S + S / 4)
        );
        assert_eq!(parse_time("0", now), Ok(0));
        // Durations before now.
        assert_eq!(parse_time("10m", now), Ok(now - 600 * S));
        assert_eq!(parse_time("1h30m", now), Ok(now - 5400 * S));
        assert_eq!(parse_time("1.5h", now), Ok(now - 5400 * S));
        assert_eq!(parse_time("90s", now), Ok(now - 90 * S));
        assert_eq!(parse_time("250ms", now), Ok(now - S / 4));
        assert_eq!(parse_time("3us", now), Ok(now - 3000));
        for bad in [
            "",
            "soon",
            "10x",
            "m",
            "2025-13-01",
            "2025-02-29",
            "2025-11-28T25:00:00Z",
            "2025-11-28T21:50Z",
            "2025-11-28T21:50:01+0100",
            "1764366601.1234567891",
            "25-11-28",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn days_round_trip_with_the_log_writers_conversion() {
        for days in [-800_000i64, -1, 0, 59, 60, 365, 11_016, 20_420, 2_932_896] {
            let (y, m, d) = crate::runtime::container::logs::civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }

    fn event(kind: EventType, action: &str, subject: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            id: 1,
            time_ns: 1_764_366_601 * S + 123_456_789,
            kind,
            action: action.into(),
            subject: subject.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
        }
    }

    fn filters(specs: &[&str]) -> Filters {
        Filters::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let busybox = "docker.io/library/busybox:latest";
        let start = event(
            EventType::Container,
            "start",
            "3f2a00",
            &[("name", "web"), ("image", busybox)],
        );
        let die = event(
            EventType::Container,
            "die",
            "3f2a00",
            &[("name", "web"), ("image", busybox), ("exitCode", "0")],
        );
        let pull = event(
            EventType::Image,
            "pull",
            busybox,
            &[("digest", "sha256:ab")],
        );
        let other = event(EventType::Image, "pull", "docker.io/library/alpine:3", &[]);
        let commit = event(EventType::Snapshot, "commit", "sha256:cd", &[]);
        let all = [&start, &die, &pull, &other, &commit];
        let pick = |specs: &[&str]| -> Vec<usize> {
            let f = filters(specs);
            all.iter()
                .enumerate()
                .filter(|(_, e)| f.matches(e))
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(pick(&[]), [0, 1, 2, 3, 4]);
        assert_eq!(pick(&["type=container"]), [0, 1]);
        assert_eq!(pick(&["type=container", "type=snapshot"]), [0, 1, 4]);
        assert_eq!(pick(&["event=die"]), [1]);
        assert_eq!(pick(&["event=exit"]), [1]);
        assert_eq!(pick(&["event=die", "event=pull"]), [1, 2, 3]);
        assert_eq!(pick(&["event=pull", "type=container"]), Vec::<usize>::new());
        assert_eq!(pick(&["container=web"]), [0, 1]);
        assert_eq!(pick(&["container=3f2a"]), [0, 1]);
        assert_eq!(pick(&["container=we"]), Vec::<usize>::new());
        // Short names are normalised; containers from the image match.
        assert_eq!(pick(&["image=busybox"]), [0, 1, 2]);
        assert_eq!(pick(&["image=sha256:ab"]), [2]);
        assert_eq!(pick(&["image=busybox", "event=start"]), [0]);
        for bad in ["type=volume", "nope=1", "type", "event="] {
            let err = Filters::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn formats() {
        let e = event(
            EventType::Container,
            "die",
            "3f2a",
            &[("name", "web"), ("exitCode", "137")],
        );
        let mut out = String::new();
        render(&Output::Line, &e, &mut out).unwrap();
        assert_eq!(
            out,
            "2025-11-28T21:50:01.123456789Z container die 3f2a (exitCode=137, name=web)\n"
        );
        let mut out = String::new();
        render(&Output::Json, &e, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Action"], "die");
        assert_eq!(v["ID"], "3f2a");
        assert_eq!(v["Attributes"]["exitCode"], "137");
        assert_eq!(v["TimeNano"], 1_764_366_601 * S + 123_456_789);
        assert_eq!(v["Time"], "2025-11-28T21:50:01.123456789Z");
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = FIELDS.to_vec();
        want.sort();
        assert_eq!(keys, want);
        let t = Template::parse("{{.Action}} {{.Attributes.name}}", FIELDS).unwrap();
        let mut out = String::new();
        render(&Output::Template(t), &e, &mut out).unwrap();
        assert_eq!(out, "die web\n");
        // No attributes: no parentheses.
        let bare = event(EventType::Snapshot, "remove", "k", &[]);
        let mut out = String::new();
        render(&Output::Line, &bare, &mut out).unwrap();
        assert!(out.ends_with(" snapshot remove k\n"), "{out}");
    }
}
