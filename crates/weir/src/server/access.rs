//! Who may call: tokens (create, list, revoke), the audit log, and who the caller is.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::App;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::request::*;
use crate::ambient::now_ms;

#[derive(Serialize, ToSchema)]
pub struct UserInfo {
    /// `token:ID`, or `local` on an `--insecure-local` server.
    actor: String,
    /// The namespace the caller's role holds in; `*` for every namespace.
    namespace: String,
    role: Role,
    /// Argo's fields (`argo auth`, the UI): the issuer is always `weir`, the subject the actor,
    /// the groups `ROLE@NAMESPACE`.
    issuer: String,
    subject: String,
    groups: Vec<String>,
    email: String,
}

#[utoipa::path(get, path = "/api/v1/userinfo", tag = "access",
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody)))]
pub(super) async fn userinfo(Extension(caller): Extension<Caller>) -> Json<UserInfo> {
    let (namespace, role) = match &caller {
        Caller::Local => ("*".to_string(), Role::Admin),
        Caller::Token {
            namespace, role, ..
        } => (namespace.clone(), *role),
    };
    Json(UserInfo {
        issuer: "weir".into(),
        subject: caller.actor(),
        groups: vec![format!("{}@{namespace}", role.as_str())],
        email: String::new(),
        actor: caller.actor(),
        namespace,
        role,
    })
}

// ---------------------------------------------------------------------------------------------
// tokens and audit

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// viewer, editor or admin.
    role: String,
    #[serde(default)]
    description: String,
    /// Lifetime in seconds; no expiry without it.
    #[serde(default)]
    #[schema(minimum = 1)]
    expires_in_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    id: String,
    /// The bearer token: shown once, stored only as a hash.
    token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    id: String,
    namespace: String,
    role: String,
    description: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tokens/{namespace}", tag = "access",
    params(("namespace" = String, Path)), request_body = TokenRequest,
    responses((status = 200, body = TokenCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn create_token(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<TokenCreated>> {
    ns_ok(&namespace)?;
    require(&caller, &namespace, Role::Admin)?;
    let b = body_bytes(body)?;
    let req: TokenRequest = parse_json(&b)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role `{}` is not viewer, editor or admin",
            req.role
        ))
    })?;
    let now = now_ms();
    let expires = req
        .expires_in_seconds
        .map(|s| {
            i64::try_from(s)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .and_then(|ms| now.checked_add(ms))
        })
        .map(|t| t.ok_or_else(|| ApiError::bad_request("expiresInSeconds is too large")))
        .transpose()?;
    app.db(move |_, store| {
        let (rec, token) = super::new_token(&namespace, role, &req.description, now, expires)?;
        store.create_token(&rec)?;
        Ok(Json(TokenCreated { id: rec.id, token }))
    })
    .await
}

pub(super) fn token_info(t: weir_store::TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id,
        namespace: t.namespace,
        role: t.role,
        description: t.description,
        created_at: weir_core::run::rfc3339_pub(t.created_at),
        expires_at: t.expires_at.map(weir_core::run::rfc3339_pub),
        revoked_at: t.revoked_at.map(weir_core::run::rfc3339_pub),
    }
}

#[utoipa::path(get, path = "/api/v1/tokens/{namespace}", tag = "access",
    params(("namespace" = String, Path)),
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_tokens(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    require(&caller, &namespace, Role::Admin)?;
    app.db(move |_, store| {
        Ok(Json(
            store
                .tokens(Some(&namespace))?
                .into_iter()
                .map(token_info)
                .collect(),
        ))
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/tokens/{namespace}/{id}", tag = "access",
    params(("namespace" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Json<TokenInfo>> {
    require(&caller, &namespace, Role::Admin)?;
    app.db(move |_, store| {
        let missing = || ApiError::not_found(format!("no token `{id}` in namespace `{namespace}`"));
        let t = store.token(&id)?.ok_or_else(missing)?;
        if t.namespace != namespace {
            return Err(missing());
        }
        store.revoke_token(&id, now_ms())?;
        let t = store.token(&id)?.ok_or_else(missing)?;
        Ok(Json(token_info(t)))
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    id: i64,
    at: String,
    actor: String,
    namespace: String,
    action: String,
    target: String,
    status: u16,
}

#[derive(Serialize, ToSchema)]
pub struct AuditLog {
    items: Vec<AuditItem>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this namespace (required unless the token is for every namespace).
    namespace: Option<String>,
    /// Entries older than this id (paging backwards).
    before: Option<i64>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "access", params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn audit_log(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditLog>> {
    match &q.namespace {
        Some(ns) => require(&caller, ns, Role::Admin)?,
        None if caller.is_global(Role::Admin) => {}
        None => {
            return Err(ApiError::forbidden(
                "the whole audit log needs an admin token for every namespace; pass ?namespace=",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    app.db(move |_, store| {
        let items = store
            .audit(q.namespace.as_deref(), q.before, limit)?
            .into_iter()
            .map(|e| AuditItem {
                id: e.id,
                at: weir_core::run::rfc3339_pub(e.at),
                actor: e.actor,
                namespace: e.namespace,
                action: e.action,
                target: e.target,
                status: e.status,
            })
            .collect();
        Ok(Json(AuditLog { items }))
    })
    .await
}
