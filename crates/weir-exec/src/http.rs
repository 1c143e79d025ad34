//! `http` templates: one request with reqwest (rustls, the platform's certificates; with
//! `insecureSkipVerify`, any certificate). Every status is an answer: whether it means success
//! is the state machine's call (`successCondition`, else 2xx).

use std::io::Read;
use std::time::Duration;

use weir_core::run::{HttpRequest, HttpResponse};

/// The most of a response body kept (the task's result is cut to its last 256 KiB anyway).
const BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Sends the request; the response's status, headers and body.
pub(crate) fn send(r: &HttpRequest) -> Result<(HttpResponse, String), String> {
    let fail = |e: &dyn std::error::Error| format!("{}: {}", r.url, chain(e));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(r.timeout_ms.max(1)))
        .danger_accept_invalid_certs(r.insecure)
        .build()
        .map_err(|e| fail(&e))?;
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|e| fail(&e))?;
    let mut req = client.request(method, &r.url);
    for (k, v) in &r.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.body(r.body.clone()).send().map_err(|e| fail(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                canonical(k.as_str()),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut bytes = Vec::new();
    resp.take(BODY_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: reading the answer: {}", r.url, chain(&e)))?;
    Ok((
        HttpResponse { status, headers },
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// An error with its causes (`error sending request: connection refused`): reqwest's own
/// message names only the outermost.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        cause = c.source();
    }
    out
}

/// A header name as Go's `http.Header` keys it (`content-type` → `Content-Type`), which is how
/// Argo's `response.headers` sees it.
fn canonical(name: &str) -> String {
    let mut up = true;
    name.chars()
        .map(|c| {
            let out = if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            up = c == '-';
            out
        })
        .collect()
}

/// Downloads `url` into the repository under `fetched/BLAKE3`, streaming (never held whole in
/// memory); a server error or a broken connection is tried again, twice, with backoff.
pub(crate) fn fetch(
    repo: &crate::repo::LocalRepo,
    url: &str,
) -> Result<weir_core::run::ArtifactRef, String> {
    // no overall timeout: a large download takes as long as it takes
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .build()
        .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
        let mut resp = match client.get(url).send() {
            Ok(r) => r,
            Err(e) => {
                last = format!("GET {url}: {}", chain(&e));
                continue;
            }
        };
        let status = resp.status();
        if status.is_client_error() {
            return Err(format!("GET {url}: {status}"));
        }
        if !status.is_success() {
            last = format!("GET {url}: {status}");
            continue;
        }
        match repo.put_addressed("fetched", |w| std::io::copy(&mut resp, w).map(|_| ())) {
            Ok((key, hash, size)) => {
                return Ok(weir_core::run::ArtifactRef {
                    name: String::new(),
                    key,
                    hash,
                    size,
                    archived: false,
                    raw: None,
                    sub_path: None,
                    url: Some(url.to_string()),
                });
            }
            Err(e) => last = format!("GET {url}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonical_as_in_go() {
        assert_eq!(canonical("content-TYPE"), "Content-Type");
        assert_eq!(canonical("x-request-id"), "X-Request-Id");
    }
}
