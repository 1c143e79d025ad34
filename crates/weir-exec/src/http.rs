//! `http` templates: one request with reqwest (rustls, the platform's certificates; with
//! `insecureSkipVerify`, any certificate). Every status is an answer: whether it means success
//! is the state machine's call (`successCondition`, else 2xx).

use std::io::Read;
use std::time::Duration;

use weir_core::run::{HttpAccess, HttpRequest, HttpResponse, HttpTarget, OAuth2};

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

/// A client for an artifact's URL: with its client certificate, when it has one; no overall
/// timeout (a large transfer takes as long as it takes).
fn artifact_client(
    url: &str,
    access: Option<&HttpAccess>,
) -> Result<reqwest::blocking::Client, String> {
    let mut b = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(None);
    if let Some((cert, key)) = access.and_then(|a| a.client_cert.as_ref()) {
        let pem = format!("{cert}\n{key}\n");
        let id = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| format!("{url}: the client certificate: {}", chain(&e)))?;
        b = b.identity(id);
    }
    b.build().map_err(|e| format!("{url}: {}", chain(&e)))
}

/// A request with the artifact's headers and credentials: basic authentication, or a bearer
/// token from its OAuth2 client-credentials grant (`token`, fetched once per transfer).
fn authorize(
    mut req: reqwest::blocking::RequestBuilder,
    access: Option<&HttpAccess>,
    token: Option<&str>,
) -> reqwest::blocking::RequestBuilder {
    let Some(a) = access else {
        return req;
    };
    for (k, v) in &a.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some((user, pass)) = &a.basic {
        req = req.basic_auth(user, Some(pass));
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req
}

/// The access token of an OAuth2 client-credentials grant (RFC 6749, 4.4): the client
/// authenticates with HTTP basic authentication, its id and secret form-encoded (section
/// 2.3.1), as Go's `clientcredentials` package, which Argo uses, does first.
fn oauth2_token(client: &reqwest::blocking::Client, o: &OAuth2) -> Result<String, String> {
    let enc = |s: &str| form_urlencoded(s);
    let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
    if !o.scopes.is_empty() {
        form.push(("scope".into(), o.scopes.join(" ")));
    }
    form.extend(o.params.iter().cloned());
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let resp = client
        .post(&o.token_url)
        .basic_auth(enc(&o.client_id), Some(enc(&o.client_secret)))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .map_err(|e| format!("oauth2 token: {}", chain(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .map_err(|e| format!("oauth2 token: {}", chain(&e)))?;
    if !status.is_success() {
        return Err(format!("oauth2 token: {status}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("oauth2 token: not JSON: {e}"))?;
    v.get("access_token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "oauth2 token: the answer has no access_token".to_string())
}

/// `application/x-www-form-urlencoded` encoding of one value, as Go's `url.QueryEscape` (which
/// Argo's OAuth2 client uses) writes it.
fn form_urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Downloads `url` into the repository under `fetched/BLAKE3`, streaming (never held whole in
/// memory); a server error or a broken connection is tried again, twice, with backoff. Sent
/// with the artifact's headers and credentials (`access`), as Argo's HTTP artifact driver does.
pub(crate) fn fetch(
    repo: &crate::repo::LocalRepo,
    url: &str,
    access: Option<&HttpAccess>,
) -> Result<weir_core::run::ArtifactRef, String> {
    let client = artifact_client(url, access)?;
    let token = match access.and_then(|a| a.oauth2.as_ref()) {
        Some(o) => Some(oauth2_token(&client, o).map_err(|e| format!("GET {url}: {e}"))?),
        None => None,
    };
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
        let mut resp = match authorize(client.get(url), access, token.as_deref()).send() {
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
                // a tarball is unpacked where the task wants it, as Argo's executor does
                // with whatever its driver loaded
                let archived = repo.path(&key).is_ok_and(|p| crate::s3::is_tar_gz(&p));
                return Ok(weir_core::run::ArtifactRef {
                    name: String::new(),
                    key,
                    hash,
                    size,
                    archived,
                    raw: None,
                    sub_path: None,
                    url: Some(url.to_string()),
                    http: None,
                });
            }
            Err(e) => last = format!("GET {url}: {e}"),
        }
    }
    Err(last)
}

/// Sends a stored output to its `http` or `artifactory` URL: a PUT of the file, as Argo's HTTP
/// artifact driver's `Save` does; any status but 2xx is an error.
pub(crate) fn upload(target: &HttpTarget, file: &std::path::Path) -> Result<(), String> {
    let url = &target.url;
    let access = Some(&target.access);
    let client = artifact_client(url, access)?;
    let token = match target.access.oauth2.as_ref() {
        Some(o) => Some(oauth2_token(&client, o).map_err(|e| format!("PUT {url}: {e}"))?),
        None => None,
    };
    let body = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let len = body
        .metadata()
        .map_err(|e| format!("{}: {e}", file.display()))?
        .len();
    let resp = authorize(client.put(url), access, token.as_deref())
        .body(reqwest::blocking::Body::sized(body, len))
        .send()
        .map_err(|e| format!("PUT {url}: {}", chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("PUT {url}: {status}"));
    }
    Ok(())
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
