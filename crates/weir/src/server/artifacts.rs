//! Artifacts and lineage: what a run stored, the download of one file, and what produced or used an artifact.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::App;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::request::*;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactItem {
    node_id: String,
    node_name: String,
    name: String,
    key: String,
    size: u64,
    /// blake3 of the stored bytes.
    blake3: String,
    /// The stored bytes are a tar.gz of the path.
    archived: bool,
    /// Where to download it.
    url: String,
}

#[derive(Serialize, ToSchema)]
pub struct ArtifactList {
    items: Vec<ArtifactItem>,
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/artifacts", tag = "artifacts",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ArtifactList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_artifacts(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<ArtifactList>> {
    require(&caller, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let run = find_run(store, &namespace, &name)?;
        let mut items = Vec::new();
        for n in run.nodes() {
            for a in n.outputs.artifacts.iter().filter(|a| !a.key.is_empty()) {
                items.push(ArtifactItem {
                    node_id: n.id.clone(),
                    node_name: n.display_name.clone(),
                    name: a.name.clone(),
                    key: a.key.clone(),
                    size: a.size,
                    blake3: a.hash.clone(),
                    archived: a.archived,
                    url: format!(
                        "/api/v1/artifact-files/{namespace}/workflows/{name}/{}/outputs/{}",
                        n.id, a.name
                    ),
                });
            }
        }
        Ok(Json(ArtifactList { items }))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct ArtifactPath {
    namespace: String,
    name: String,
    node: String,
    artifact: String,
}

#[utoipa::path(get, path = "/api/v1/artifact-files/{namespace}/workflows/{name}/{node}/outputs/{artifact}", tag = "artifacts",
    params(("namespace" = String, Path), ("name" = String, Path), ("node" = String, Path, description = "Node id"),
        ("artifact" = String, Path)),
    responses((status = 200, description = "The stored bytes (a tar.gz when archived)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn artifact_file(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(p): Path<ArtifactPath>,
) -> ApiResult<Response> {
    require(&caller, &p.namespace, Role::Viewer)?;
    let (file, art) = app
        .db(move |app, store| {
            let run = find_run(store, &p.namespace, &p.name)?;
            let art = run
                .node_by_id(&p.node)
                .and_then(|n| {
                    n.outputs
                        .artifacts
                        .iter()
                        .find(|a| a.name == p.artifact && !a.key.is_empty())
                })
                .cloned()
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "node `{}` of {} has no stored artifact `{}`",
                        p.node, p.name, p.artifact
                    ))
                })?;
            let path = app.env.repo().path(&art.key)?;
            let f = std::fs::File::open(&path).map_err(|e| {
                ApiError::not_found(format!(
                    "artifact `{}` is gone from the repository: {e}",
                    art.key
                ))
            })?;
            Ok((f, art))
        })
        .await?;
    // streamed in chunks read on the blocking pool: an artifact is never held whole in memory
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = file;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let ctype = if art.archived {
        "application/gzip"
    } else {
        "application/octet-stream"
    };
    let fname = if art.archived {
        format!("{}.tgz", art.name)
    } else {
        art.name.clone()
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_LENGTH, art.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", fname.replace('"', "")),
            ),
            (
                header::HeaderName::from_static("x-weir-blake3"),
                art.hash.clone(),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LineageQuery {
    /// A blake3 digest (8+ hex digits), RUN/NODE or RUN/NODE/ARTIFACT (required).
    target: Option<String>,
    /// `upstream` (what produced it, the default) or `downstream` (what used it).
    direction: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/lineage/{namespace}", tag = "artifacts",
    params(("namespace" = String, Path), LineageQuery),
    responses((status = 200, description = "The lineage graph, nested: artifacts with producedBy/usedBy nodes, nodes with their parameters and inputs/outputs", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn lineage(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Query(q): Query<LineageQuery>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Viewer)?;
    let target = q.target.ok_or_else(|| {
        ApiError::bad_request(
            "`target` is required: a blake3 digest, RUN/NODE or RUN/NODE/ARTIFACT",
        )
    })?;
    let downstream = match q.direction.as_deref() {
        None | Some("upstream") => false,
        Some("downstream") => true,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "direction `{d}` is not upstream or downstream"
            )));
        }
    };
    app.db(move |_, store| {
        let start = crate::lineage::parse(&target)?;
        let v =
            crate::lineage::query(store, &start, !downstream, Some(&namespace)).map_err(|e| {
                // "no such digest or node" is a 404, not a malformed request
                let api = ApiError::from(e);
                if api.code == "bad_request" && api.message.contains("no ") {
                    ApiError::not_found(api.message)
                } else {
                    api
                }
            })?;
        Ok(Json(v))
    })
    .await
}
