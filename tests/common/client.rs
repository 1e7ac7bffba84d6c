//! A plain HTTP client for tests that talk to a registry or a front directly.

use std::time::Duration;

use berth::content::Digest;

/// An `Accept` header naming every manifest and index type we meet.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A ureq agent for loopback tests: no proxy from the environment, HTTP
/// errors are answers (not `Err`), redirects are shown rather than followed,
/// and nothing waits longer than 30 s.
pub fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// A whole answer: status, headers (names lowercase) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Sends `method url` with `headers` and reads the whole body.
    /// Panics if the request cannot be sent or the body is cut short.
    pub fn fetch(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
        Reply::try_fetch(method, url, headers)
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
    }

    /// Like [`Reply::fetch`], but a transport error is returned, not a panic.
    pub fn try_fetch(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        assert_loopback(url);
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(()).map_err(|e| e.to_string())?;
        let response = agent().run(request).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_ascii_lowercase(), value)
            })
            .collect();
        let body = if method.eq_ignore_ascii_case("HEAD") {
            Vec::new()
        } else {
            response
                .into_body()
                .into_with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .map_err(|e| e.to_string())?
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub fn get(url: &str) -> Reply {
        Reply::fetch("GET", url, &[])
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The sha256 of the body.
    pub fn body_digest(&self) -> Digest {
        Digest::of(&self.body)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// The one rule of this harness: no traffic to anything but loopback.
pub fn assert_loopback(url: &str) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs are used in tests: {url}"));
    assert!(
        rest.starts_with("127.0.0.1:") || rest.starts_with("localhost:"),
        "refusing to send test traffic off loopback: {url}"
    );
}
