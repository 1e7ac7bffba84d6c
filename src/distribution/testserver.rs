//! A tiny scripted HTTP server on 127.0.0.1 for the client's tests: one
//! thread, one request per connection (`Connection: close`), canned raw
//! responses so a test can also send broken ones.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ClientOptions, CredentialSources, RetryPolicy};

/// Options for tests: no credential files, fast retries, short timeouts.
pub fn test_options() -> ClientOptions {
    ClientOptions {
        credential_sources: CredentialSources::none(),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        },
        ..ClientOptions::default()
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Raw response bytes, and optionally how long to keep the connection open
/// (silent) afterwards.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub stall: Option<Duration>,
}

impl From<Vec<u8>> for Reply {
    fn from(bytes: Vec<u8>) -> Reply {
        Reply { bytes, stall: None }
    }
}

pub struct TestServer {
    pub addr: String,
    listener: Option<TcpListener>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    pub fn new() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        TestServer {
            addr,
            listener: Some(listener),
            requests: Arc::default(),
        }
    }

    /// Answers every request with `handler`'s reply, then closes. Requests
    /// are read (and recorded) in order; replies are written on their own
    /// threads, so a stalled reply does not block the next connection.
    pub fn serve<R: Into<Reply>>(
        &mut self,
        mut handler: impl FnMut(&Recorded) -> R + Send + 'static,
    ) {
        let listener = self.listener.take().expect("serve called twice");
        let requests = self.requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let Some(req) = read_request(&mut stream) else {
                    continue;
                };
                requests.lock().unwrap().push(req.clone());
                let reply = handler(&req).into();
                std::thread::spawn(move || {
                    let _ = stream.write_all(&reply.bytes);
                    let _ = stream.flush();
                    if let Some(stall) = reply.stall {
                        std::thread::sleep(stall);
                    }
                });
            }
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut impl Read) -> Option<Recorded> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || data.len() > 1 << 20 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

/// A complete response with `Content-Length` and `Connection: close`.
pub fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}
