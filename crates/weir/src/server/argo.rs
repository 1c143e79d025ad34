//! The parts of the Argo Server's API that Argo's clients call and no Weir feature of its own
//! answers: the server's version and info, and the operations Weir cannot back (event sources,
//! sensors), which answer 501 with gRPC's "unimplemented" rather than a misleading 404.

use axum::Json;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};

/// `GET /api/v1/version`, in the Argo Server's shape (`argo version` prints it).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// Weir's version, as `vMAJOR.MINOR.PATCH`.
    version: String,
    build_date: String,
    git_commit: String,
    git_tag: String,
    git_tree_state: String,
    /// Empty: Weir is not written in Go.
    go_version: String,
    compiler: String,
    platform: String,
}

#[utoipa::path(get, path = "/api/v1/version", tag = "argo",
    responses((status = 200, body = Version), (status = 401, body = ErrorBody)))]
pub(super) async fn version() -> Json<Version> {
    let v = format!("v{}", env!("CARGO_PKG_VERSION"));
    Json(Version {
        git_tag: v.clone(),
        version: v,
        build_date: String::new(),
        git_commit: String::new(),
        git_tree_state: String::new(),
        go_version: String::new(),
        compiler: "rustc".into(),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `GET /api/v1/info`, in the Argo Server's shape: no managed namespace (every namespace is
/// served), no links.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    managed_namespace: String,
    #[schema(value_type = Vec<Object>)]
    links: Vec<serde_json::Value>,
    #[schema(value_type = Object)]
    modals: serde_json::Value,
}

#[utoipa::path(get, path = "/api/v1/info", tag = "argo",
    responses((status = 200, body = Info), (status = 401, body = ErrorBody)))]
pub(super) async fn info() -> Json<Info> {
    Json(Info {
        managed_namespace: String::new(),
        links: Vec::new(),
        modals: serde_json::json!({}),
    })
}

/// What Argo serves and Weir cannot back: answered 501, gRPC code 12 (unimplemented).
pub(super) async fn unimplemented(uri: axum::http::Uri) -> ApiError {
    let what = uri.path().split('/').nth(3).unwrap_or_default().to_string();
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "unimplemented",
        format!(
            "weir does not serve Argo Events' `{what}` (event sources and sensors need Argo \
             Events on Kubernetes)"
        ),
    )
}
