//! Checks on requests and answers that do not depend on a route: an `--insecure-local`
//! server's `Host` and cross-site checks, JSON for every error answer (axum's own included),
//! and JSON bodies refused when an object repeats a key.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};

/// Every error answer is JSON with a stable code, including those axum makes itself (a query
/// string it cannot parse, a method a route does not have: 405 keeps its `Allow` header).
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status.as_u16() {
        400 | 422 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        503 => "unavailable",
        _ if status.is_client_error() => "bad_request",
        _ => "internal",
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut r = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// On an `--insecure-local` server, where anyone who reaches the port may act: the request must
/// name a loopback host (a page of another site that rebinds its DNS name to 127.0.0.1 names
/// its own host), and a request that changes anything must not come from another site's page.
pub(super) fn local_request(h: &HeaderMap, method: &Method) -> ApiResult<()> {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_loopback_host(host) {
        return Err(ApiError::forbidden(format!(
            "Host `{}` is not a loopback name: an --insecure-local server answers only \
             localhost, 127.0.0.1 and [::1]",
            host.chars().take(100).collect::<String>()
        )));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err(ApiError::forbidden(
            "a cross-site request may not change anything on an --insecure-local server",
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if origin_host != host || !is_loopback_host(origin_host) {
            return Err(ApiError::forbidden(format!(
                "Origin `{}` is not this server: an --insecure-local server takes changes only \
                 from its own pages and from clients that send no Origin",
                origin.chars().take(100).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// `localhost`, `127.0.0.1` (any 127/8 address) or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A JSON body with a key twice in one object is refused (serde would keep the last silently,
/// and two readers of the same body could then disagree on what it says).
pub(super) fn no_duplicate_keys(text: &str) -> ApiResult<()> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess};
    struct Check;
    impl<'de> DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(A::Error::custom(format!("duplicate key `{k}`")));
                }
                m.next_value_seed(Check)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    Check.deserialize(&mut de).map_err(|e| {
        ApiError::bad_request(format!("request body:{}:{}: {e}", e.line(), e.column()))
    })
}
