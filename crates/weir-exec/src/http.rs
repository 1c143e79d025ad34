//! `http` templates: one HTTP/1.0 request over a plain TCP connection. `https` needs TLS,
//! which this build does not include: such a URL fails the task with that reason.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use weir_core::run::{HttpRequest, HttpResponse};

/// The most of a response body kept (the task's result is cut to its last 256 KiB anyway).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Sends the request; the response's status, headers and body.
pub(crate) fn send(r: &HttpRequest) -> Result<(HttpResponse, String), String> {
    let rest = match r.url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "{}: https needs TLS, which this weir build does not include yet; use an http:// URL",
                r.url
            ));
        }
        _ => return Err(format!("{}: not an http:// URL", r.url)),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let timeout = Duration::from_millis(r.timeout_ms.max(1));
    let deadline = Instant::now() + timeout;
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{}: {e}", r.url))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let _ = s.set_write_timeout(Some(left()));
    let mut req = format!(
        "{} {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: weir\r\nConnection: close\r\n",
        r.method
    );
    for (k, v) in &r.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !r.body.is_empty() || matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&r.body);
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{}: {e}", r.url))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let _ = s.set_read_timeout(Some(left()));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > BODY_LIMIT {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: {e}", r.url)),
        }
        if Instant::now() >= deadline {
            return Err(format!("{}: no complete answer within {timeout:?}", r.url));
        }
    }
    parse(&raw).ok_or_else(|| format!("{}: not an HTTP answer", r.url))
}

/// Splits a raw HTTP/1.x response (close-delimited, or chunked) into its parts.
fn parse(raw: &[u8]) -> Option<(HttpResponse, String)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (canonical(k.trim()), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = unchunk(&body)?;
    }
    Some((
        HttpResponse { status, headers },
        String::from_utf8_lossy(&body).into_owned(),
    ))
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

fn unchunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let (r, body) = parse(b"HTTP/1.0 201 Created\r\ncontent-TYPE: x\r\n\r\nhello").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.headers, [("Content-Type".to_string(), "x".to_string())]);
        assert_eq!(body, "hello");
        let (_, body) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(body, "hello world");
        assert!(parse(b"garbage").is_none());
    }
}
