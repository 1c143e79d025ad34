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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonical_as_in_go() {
        assert_eq!(canonical("content-TYPE"), "Content-Type");
        assert_eq!(canonical("x-request-id"), "X-Request-Id");
    }
}
