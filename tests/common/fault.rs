//! A proxy in front of a [`Registry`] that misbehaves on request, for fault
//! tests: corrupted blobs, connections cut or stalled mid-body, slow links,
//! error statuses. Range requests are forwarded as they are (the registry
//! honours them), so resumed downloads work through it.
//!
//! The fault can be changed at any time from the test ([`FaultProxy::set`]),
//! or armed for a number of matching responses ([`FaultProxy::set_for`]),
//! after which the proxy passes traffic through again. It records every
//! request it served and counts, per blob, the body bytes it actually sent,
//! so a test can show that a resumed pull fetched less than the blob's size.
//!
//! Lifecycle: started on a free loopback port; Drop closes every open
//! connection (a stall or throttle ends there too) and joins all threads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::content::Digest;

use super::http::{self, forward, respond, write_head, Request, Server};
use super::registry::Registry;

const CHUNK: usize = 64 * 1024;

/// What the proxy does to the responses it relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Relay everything unchanged.
    Pass,
    /// In `GET …/blobs/<digest>` bodies, invert the byte at the middle of
    /// the blob (offset size/2, also when it falls inside a Range answer).
    FlipByte { digest: Digest },
    /// Send the first `after_bytes` body bytes of `GET …/blobs/<digest>`
    /// answers, then close the connection (the declared length stays).
    Cut { digest: Digest, after_bytes: u64 },
    /// Like `Cut`, but hold the connection open without sending, until the
    /// fault is changed or the proxy dropped.
    Stall { digest: Digest, after_bytes: u64 },
    /// Send every response body at this rate.
    Throttle { bytes_per_sec: u64 },
    /// Answer requests whose path contains `path_part` with `status` and a
    /// registry error body, without asking the registry.
    Status { path_part: String, status: u16 },
}

/// One request the proxy received, and how far its answer got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    pub path: String,
    /// The client's `Range` header, if any.
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// The fault applied, if any (`Debug` of [`Fault`]).
    pub fault: Option<String>,
}

struct Mode {
    fault: Fault,
    /// Matching responses left before the fault reverts to `Pass`.
    remaining: Option<usize>,
    /// Bumped on every change, so a stall knows when to let go.
    generation: u64,
}

struct State {
    upstream: String,
    stop: Arc<AtomicBool>,
    mode: Mutex<Mode>,
    served: Mutex<Vec<Served>>,
    blob_bytes: Mutex<HashMap<Digest, u64>>,
}

/// See the module docs.
pub struct FaultProxy {
    state: Arc<State>,
    server: Server,
}

impl FaultProxy {
    /// A proxy in front of `registry`, passing traffic through.
    pub fn start(registry: &Registry) -> FaultProxy {
        FaultProxy::start_upstream(registry.addr())
    }

    /// A proxy in front of any loopback HTTP server (a registry or a
    /// [`super::TokenFront`]). `Authorization` headers are passed on.
    pub fn start_upstream(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding fault proxy");
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            stop: stop.clone(),
            mode: Mutex::new(Mode {
                fault: Fault::Pass,
                remaining: None,
                generation: 0,
            }),
            served: Mutex::default(),
            blob_bytes: Mutex::default(),
        });
        let handler_state = state.clone();
        let server = Server::serve(
            listener,
            stop,
            Arc::new(move |conn: TcpStream| handle(&handler_state, conn)),
        );
        FaultProxy { state, server }
    }

    /// `127.0.0.1:PORT`: use it as the registry host in references.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn host(&self) -> String {
        self.addr()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Applies `fault` to every matching response from now on.
    pub fn set(&self, fault: Fault) {
        self.set_mode(fault, None);
    }

    /// Applies `fault` to the next `responses` matching responses, then
    /// passes traffic through again.
    pub fn set_for(&self, fault: Fault, responses: usize) {
        self.set_mode(fault, Some(responses));
    }

    fn set_mode(&self, fault: Fault, remaining: Option<usize>) {
        let mut mode = self.state.mode.lock().unwrap();
        mode.fault = fault;
        mode.remaining = remaining;
        mode.generation += 1;
    }

    pub fn fault(&self) -> Fault {
        self.state.mode.lock().unwrap().fault.clone()
    }

    /// Every request so far, in arrival order. A request shows up when it
    /// arrives; its `status` is 0 until the answer starts, and `bytes` grows
    /// as the body is sent.
    pub fn served(&self) -> Vec<Served> {
        self.state.served.lock().unwrap().clone()
    }

    /// Body bytes of `GET …/blobs/<digest>` sent so far, over all requests,
    /// counted as they are sent.
    pub fn bytes_served(&self, digest: &Digest) -> u64 {
        self.state
            .blob_bytes
            .lock()
            .unwrap()
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// How many `GET …/blobs/<digest>` requests arrived.
    pub fn blob_gets(&self, digest: &Digest) -> usize {
        self.blob_requests(digest).len()
    }

    /// The `GET …/blobs/<digest>` requests, with their ranges and bytes.
    pub fn blob_requests(&self, digest: &Digest) -> Vec<Served> {
        let part = format!("/blobs/{digest}");
        self.served()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path.contains(&part))
            .collect()
    }

    /// Waits until at least `bytes` of `digest` were sent; false on timeout.
    /// For tests that kill a client in the middle of a (throttled) blob.
    pub fn wait_for_bytes(&self, digest: &Digest, bytes: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.bytes_served(digest) >= bytes {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.bytes_served(digest) >= bytes
    }
}

/// The digest in `/v2/<name>/blobs/<digest>`, if the path is a blob.
fn blob_digest(path: &str) -> Option<Digest> {
    let (_, tail) = path.rsplit_once("/blobs/")?;
    tail.parse().ok()
}

fn handle(state: &State, conn: TcpStream) {
    let Ok(Some(request)) = Request::read(&conn) else {
        return;
    };
    let blob = (request.method == "GET")
        .then(|| blob_digest(request.path()))
        .flatten();
    let (fault, generation) = take_fault(state, &request, blob.as_ref());
    let record = {
        let mut served = state.served.lock().unwrap();
        served.push(Served {
            method: request.method.clone(),
            path: request.path().to_string(),
            range: request.header("range").map(str::to_string),
            status: 0,
            bytes: 0,
            fault: (fault != Fault::Pass).then(|| format!("{fault:?}")),
        });
        served.len() - 1
    };
    let answer = Answer {
        state,
        record,
        blob: blob.as_ref(),
    };
    // I/O errors are the client going away: the record says how far we got.
    let _ = serve(&answer, &conn, &request, &fault, generation);
}

/// Where one answer is recorded as it goes.
struct Answer<'a> {
    state: &'a State,
    /// Index in `state.served`.
    record: usize,
    blob: Option<&'a Digest>,
}

impl Answer<'_> {
    fn status(&self, status: u16) {
        self.state.served.lock().unwrap()[self.record].status = status;
    }

    fn sent(&self, n: i64) {
        let add = |count: &mut u64| *count = count.saturating_add_signed(n);
        add(&mut self.state.served.lock().unwrap()[self.record].bytes);
        if let Some(blob) = self.blob {
            add(self
                .state
                .blob_bytes
                .lock()
                .unwrap()
                .entry(blob.clone())
                .or_default());
        }
    }
}

/// The fault for this request, counting it against `set_for`.
fn take_fault(state: &State, request: &Request, blob: Option<&Digest>) -> (Fault, u64) {
    let mut mode = state.mode.lock().unwrap();
    let applies = match &mode.fault {
        Fault::Pass => false,
        Fault::FlipByte { digest } | Fault::Cut { digest, .. } | Fault::Stall { digest, .. } => {
            blob == Some(digest)
        }
        Fault::Throttle { .. } => request.method != "HEAD",
        Fault::Status { path_part, .. } => request.path().contains(path_part.as_str()),
    };
    if !applies {
        return (Fault::Pass, mode.generation);
    }
    let fault = mode.fault.clone();
    if let Some(left) = mode.remaining.as_mut() {
        *left = left.saturating_sub(1);
        if *left == 0 {
            mode.fault = Fault::Pass;
            mode.remaining = None;
            mode.generation += 1;
        }
    }
    (fault, mode.generation)
}

fn serve(
    answer: &Answer,
    conn: &TcpStream,
    request: &Request,
    fault: &Fault,
    generation: u64,
) -> std::io::Result<()> {
    let state = answer.state;
    if let Fault::Status { status, .. } = fault {
        answer.status(*status);
        let body = http::registry_error("UNAVAILABLE", "fault injected by test proxy");
        return respond(
            conn,
            *status,
            &[("Content-Type", "application/json")],
            &body,
        );
    }
    let mut upstream = match forward(&state.upstream, request, &[]) {
        Ok(upstream) => upstream,
        Err(e) => {
            answer.status(502);
            return respond(conn, 502, &[], format!("upstream: {e}\n").as_bytes());
        }
    };
    answer.status(upstream.status);
    let (start, total) = body_span(&upstream);
    write_head(
        conn,
        upstream.status,
        &upstream.reason,
        &upstream.end_to_end_headers(),
    )?;

    // Where this answer's body must stop early, if it must.
    let limit = match fault {
        Fault::Cut { after_bytes, .. } | Fault::Stall { after_bytes, .. } => Some(*after_bytes),
        _ => None,
    };
    let flip_at = match (fault, total) {
        (Fault::FlipByte { .. }, Some(total)) if total > 0 => Some(total / 2),
        _ => None,
    };
    let rate = match fault {
        Fault::Throttle { bytes_per_sec } => Some((*bytes_per_sec).max(1)),
        _ => None,
    };
    let chunk = rate.map_or(CHUNK, |r| (r as usize / 20).clamp(1, CHUNK));
    let began = Instant::now();
    let mut buf = vec![0u8; chunk];
    let mut sent: u64 = 0;
    let mut w = conn;
    loop {
        let mut want = buf.len();
        if let Some(limit) = limit {
            if sent >= limit {
                break;
            }
            want = want.min((limit - sent) as usize);
        }
        let n = upstream.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(());
        }
        if let Some(at) = flip_at {
            let offset = start + sent;
            if (offset..offset + n as u64).contains(&at) {
                buf[(at - offset) as usize] ^= 0xff;
            }
        }
        // Counted before the write, so a client that has the bytes never
        // sees a count without them; taken back if the write fails.
        answer.sent(n as i64);
        if let Err(e) = w.write_all(&buf[..n]) {
            answer.sent(-(n as i64));
            return Err(e);
        }
        sent += n as u64;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            pause_until(state, began + due);
        }
    }
    // The limit was reached before the body ended.
    if let Fault::Stall { .. } = fault {
        while !state.stop.load(Ordering::SeqCst)
            && state.mode.lock().unwrap().generation == generation
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// (offset of the body in the whole resource, size of the whole resource)
/// from `Content-Range: bytes a-b/total`, else from Content-Length.
fn body_span(upstream: &http::Upstream) -> (u64, Option<u64>) {
    if let Some(range) = upstream.header("content-range") {
        let spec = range.trim().trim_start_matches("bytes").trim();
        if let Some((span, total)) = spec.split_once('/') {
            let start = span
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return (start, total.parse().ok());
        }
    }
    (0, upstream.content_length())
}

fn pause_until(state: &State, when: Instant) {
    while !state.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= when {
            return;
        }
        std::thread::sleep((when - now).min(Duration::from_millis(20)));
    }
}
