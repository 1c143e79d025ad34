//! What every route does with a request: the bearer token, the role it needs, path and query
//! parameters, bodies, and the run a path names.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use weir_core::run::Run;
use weir_store::Store;

use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult};
use crate::driver::load_run;
use crate::show::mask_value;
use crate::{files, show};

pub(super) fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(|t| t.trim().to_string())
}

/// `access_token=` in the query: browsers' EventSource cannot send headers.
pub(super) fn query_token(q: Option<&str>) -> Option<String> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .map(|t| t.to_string())
}

pub(super) fn require(caller: &Caller, namespace: &str, role: Role) -> ApiResult<()> {
    if caller.allows(namespace, role) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} may not do this in namespace `{namespace}` (needs the {} role)",
        caller.actor(),
        role.as_str()
    )))
}

#[derive(Deserialize)]
pub(super) struct Named {
    pub(super) namespace: String,
    pub(super) name: String,
}

pub(super) fn ns_ok(namespace: &str) -> ApiResult<()> {
    weir_core::names::check_namespace(namespace).map_err(ApiError::bad_request)
}

/// The run `name` of `namespace`, replayed; 404 if `namespace` has none.
pub(super) fn find_run(store: &Store, namespace: &str, name: &str) -> ApiResult<Run> {
    Ok(load_run(store, &run_key(store, namespace, name)?)?)
}

/// The key of run `name` of `namespace` ([`weir_core::run::Submission::key`]); 404 if there is
/// none (found without loading the run: a run that cannot be loaded can still be deleted).
pub(super) fn run_key(store: &Store, namespace: &str, name: &str) -> ApiResult<String> {
    store.run_key(namespace, name)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workflow `{name}` not found in namespace `{namespace}`"
        ))
    })
}

pub(super) fn workflow_json(run: &Run) -> Value {
    mask_value(show::run_json(run), &run.secret_values())
}

/// The load errors of a document, as one 400 `invalid_workflow` listing each with its location.
pub(super) fn invalid(diags: &weir_core::diag::Diags) -> ApiResult<()> {
    let errors: Vec<String> = diags
        .items
        .iter()
        .filter(|d| d.severity == weir_core::diag::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_workflow",
        errors.join("\n"),
    ))
}

pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts (--max-body)",
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// A JSON body; an empty body is the default request.
pub(super) fn json_body<T: serde::de::DeserializeOwned + Default>(b: &[u8]) -> ApiResult<T> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(b)
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(b).map_err(|e| {
        ApiError::bad_request(format!("request body:{}:{}: {e}", e.line(), e.column()))
    })
}

pub(super) fn params(ps: &[String]) -> ApiResult<Vec<(String, String)>> {
    files::parameters(ps, None).map_err(ApiError::from)
}

/// `%XX` and `+` decoded.
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value of a query key, decoded.
pub(super) fn query_values(q: Option<&str>, key: &str) -> Vec<String> {
    q.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}
