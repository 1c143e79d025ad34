//! `http` templates: one request with ureq (rustls, the Mozilla root certificates; with
//! `insecureSkipVerify`, any certificate). Every status is an answer: whether it means success
//! is the state machine's call (`successCondition`, else 2xx).

use std::time::Duration;

use weir_core::run::{HttpRequest, HttpResponse};

/// The most of a response body kept (the task's result is cut to its last 256 KiB anyway).
const BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Sends the request; the response's status, headers and body.
pub(crate) fn send(r: &HttpRequest) -> Result<(HttpResponse, String), String> {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(r.insecure)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(r.timeout_ms.max(1))))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(r.method.as_str())
        .uri(&r.url);
    for (k, v) in &r.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(r.body.clone())
        .map_err(|e| format!("{}: {e}", r.url))?;
    let mut resp = agent.run(req).map_err(|e| format!("{}: {e}", r.url))?;
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
    let body = resp
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| format!("{}: reading the answer: {e}", r.url))?;
    Ok((HttpResponse { status, headers }, body))
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
    repo: &weir_store::LocalRepo,
    url: &str,
) -> Result<weir_core::run::ArtifactRef, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
        let resp = match agent.get(url).call() {
            Ok(r) => r,
            Err(e) => {
                last = format!("GET {url}: {e}");
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
        let mut body = resp.into_body().into_reader();
        match repo.put_addressed("fetched", |w| std::io::copy(&mut body, w).map(|_| ())) {
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
