//! Just enough HTTP/1.1 for the fronts ([`super::TokenFront`],
//! [`super::FaultProxy`]): a threaded server, request parsing, and
//! forwarding to an upstream registry with the body streamed through.
//!
//! Every connection carries one request: each answer says
//! `Connection: close`. Clients that keep connections alive simply open a
//! new one, and no idle connection can keep a thread alive after Drop.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a socket may sit without progress before we give up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

// ---------------------------------------------------------------------------
// Server

/// What a front does with one accepted connection.
pub type Handler = dyn Fn(TcpStream) + Send + Sync;

/// A thread-per-connection server on a listener the caller bound.
///
/// Drop sets the stop flag, wakes the accept loop by connecting to it, shuts
/// down every open connection and joins every thread. Handlers that wait
/// (stalls, throttles) must poll the stop flag they were given.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Conns>,
}

#[derive(Default)]
struct Conns {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Removes a connection from the live set when its worker ends, also when
/// the handler panics.
struct LiveGuard {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.conns.live.lock().unwrap().remove(&self.id);
    }
}

impl Server {
    pub fn serve(listener: TcpListener, stop: Arc<AtomicBool>, handler: Arc<Handler>) -> Server {
        let addr = listener.local_addr().expect("listener address");
        let conns = Arc::new(Conns::default());
        let accept = {
            let stop = stop.clone();
            let conns = conns.clone();
            std::thread::Builder::new()
                .name(format!("front-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, stop, conns, handler))
                .expect("spawning accept thread")
        };
        Server {
            addr,
            stop,
            accept: Some(accept),
            conns,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    conns: Arc<Conns>,
    handler: Arc<Handler>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let id = conns.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            conns.live.lock().unwrap().insert(id, clone);
        }
        let guard = LiveGuard {
            conns: conns.clone(),
            id,
        };
        let handler = handler.clone();
        let worker = std::thread::Builder::new()
            .name(format!("front-conn-{id}"))
            .spawn(move || {
                let _guard = guard;
                handler(stream);
            })
            .expect("spawning connection thread");
        let mut workers = conns.workers.lock().unwrap();
        workers.retain(|w| !w.is_finished());
        workers.push(worker);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self.conns.live.lock().unwrap().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let workers = std::mem::take(&mut *self.conns.workers.lock().unwrap());
        for worker in workers {
            let _ = worker.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// A request read from a client, body included (bodies here are manifests
/// and pushed blobs of test images: small enough to hold).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent: `/v2/repo/blobs/sha256:…?x=y`.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Reads one request. `Ok(None)` if the client closed before sending
    /// anything (as the stop-wakeup connection does).
    pub fn read(stream: &TcpStream) -> io::Result<Option<Request>> {
        let mut reader = BufReader::new(stream);
        let Some((start, headers)) = read_head(&mut reader)? else {
            return Ok(None);
        };
        let mut parts = start.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return Err(bad_data(format!("bad request line {start:?}")));
        };
        let mut request = Request {
            method: method.to_string(),
            target: target.to_string(),
            headers,
            body: Vec::new(),
        };
        if request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            let mut w = stream;
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if request.is_chunked() {
            ChunkedReader::new(&mut reader).read_to_end(&mut request.body)?;
        } else if let Some(len) = request.content_length() {
            request.body.resize(len as usize, 0);
            reader.read_exact(&mut request.body)?;
        }
        Ok(Some(request))
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Every value of query parameter `key`, decoded.
    pub fn query(&self, key: &str) -> Vec<String> {
        let query = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        form_pairs(query)
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// A start line and the headers after it.
type Head = (String, Vec<(String, String)>);

/// Reads a start line and headers, up to the empty line.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if reader.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Some((start.trim_end().to_string(), headers)))
}

pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Decodes `a=1&b=x%20y` (query strings and form bodies).
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

// ---------------------------------------------------------------------------
// Bodies

/// Decodes a `Transfer-Encoding: chunked` body; trailers are skipped.
pub struct ChunkedReader<R> {
    inner: R,
    left_in_chunk: u64,
    done: bool,
}

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkedReader {
            inner,
            left_in_chunk: 0,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = String::new();
        self.inner.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| bad_data(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut trailer = String::new();
                if self.inner.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    break;
                }
            }
            self.done = true;
        }
        self.left_in_chunk = size;
        Ok(())
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left_in_chunk == 0 {
            self.next_chunk()?;
            if self.done {
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left_in_chunk as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left_in_chunk -= n as u64;
        if self.left_in_chunk == 0 {
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Forwarding

/// An upstream answer whose body has not been read yet.
pub struct Upstream {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    body: Box<dyn Read + Send>,
}

impl Upstream {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body length the upstream declared, if it did.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Headers to send to our client: the upstream's minus hop-by-hop ones.
    pub fn end_to_end_headers(&self) -> Vec<(String, String)> {
        end_to_end(&self.headers, &[])
    }
}

impl Read for Upstream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// Sends `request` to `upstream` ("127.0.0.1:PORT") on a fresh connection
/// and reads the answer's head. `Host` is passed through, so the registry
/// writes `Location` headers that point back at the front. Headers named in
/// `drop` (e.g. `authorization`) are not forwarded.
pub fn forward(upstream: &str, request: &Request, drop: &[&str]) -> io::Result<Upstream> {
    assert!(
        upstream.starts_with("127.0.0.1:"),
        "fronts only forward to loopback, not {upstream}"
    );
    let stream = TcpStream::connect(upstream)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in end_to_end(&request.headers, drop) {
        if !name.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if request.header("host").is_none() {
        head.push_str(&format!("Host: {upstream}\r\n"));
    }
    let sends_body =
        !request.body.is_empty() || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH");
    if sends_body {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut writer = &stream;
    writer.write_all(head.as_bytes())?;
    writer.write_all(&request.body)?;

    let mut reader = BufReader::new(stream);
    let (start, headers) = read_head(&mut reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let mut parts = start.splitn(3, ' ');
    let _version = parts.next();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data(format!("bad status line {start:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let no_body = request.method == "HEAD" || status < 200 || status == 204 || status == 304;
    let chunked = find_header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<u64> =
        find_header(&headers, "content-length").and_then(|v| v.trim().parse().ok());
    let body: Box<dyn Read + Send> = if no_body {
        Box::new(io::empty())
    } else if chunked {
        Box::new(ChunkedReader::new(reader))
    } else if let Some(length) = length {
        Box::new(reader.take(length))
    } else {
        Box::new(reader)
    };
    Ok(Upstream {
        status,
        reason,
        headers,
        body,
    })
}

fn end_to_end(headers: &[(String, String)], drop: &[&str]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&k.as_str()) && !drop.iter().any(|d| d.eq_ignore_ascii_case(&k))
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Answers

/// Writes a status line and headers, adding `Connection: close`.
pub fn write_head(
    mut w: impl Write,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    w.write_all(head.as_bytes())
}

/// Writes a whole small answer with its Content-Length.
pub fn respond(
    mut w: impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("Content-Length".into(), body.len().to_string()));
    write_head(&mut w, status, reason(status), &all)?;
    w.write_all(body)
}

/// Streams an upstream answer to the client unchanged. Returns body bytes sent.
pub fn relay(mut w: impl Write, mut upstream: Upstream) -> io::Result<u64> {
    let headers = upstream.end_to_end_headers();
    write_head(&mut w, upstream.status, &upstream.reason, &headers)?;
    io::copy(&mut upstream, &mut w)
}

/// A registry-style JSON error body.
pub fn registry_error(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
        .to_string()
        .into_bytes()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
