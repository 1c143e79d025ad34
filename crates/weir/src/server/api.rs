//! The REST API under `/api/v1`, following the Argo server's paths where it has them. Every
//! handler is annotated for the OpenAPI document (`/api/v1/openapi.json`), which is generated
//! from these annotations.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as Sse_, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use weir_core::run::{Event, Phase, Run};
use weir_store::{AuditEntry, LabelReq, RunQuery, Store};

use super::App;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::hub::{self, mask_value};
use super::layout::{Graph, GraphEdge, GraphNode};
use super::templates as tpl;
use crate::cli::load_run;
use crate::driver::{self, now_ms};
use crate::{files, show};

#[derive(OpenApi)]
#[openapi(
    info(title = "Weir API", description = "Workflows (Argo YAML) submitted, watched and controlled over HTTP."),
    paths(
        list_workflows, create_workflow, get_workflow, delete_workflow, stop_workflow,
        terminate_workflow, suspend_workflow, resume_workflow, set_workflow, retry_workflow,
        resubmit_workflow, workflow_logs, list_artifacts, artifact_file, workflow_events,
        create_token, list_tokens, revoke_token, audit_log, healthz, readyz,
        tpl::submit_from, tpl::list_templates, tpl::create_template, tpl::get_template,
        tpl::update_template, tpl::delete_template, tpl::template_versions, tpl::list_crons,
        tpl::create_cron, tpl::get_cron, tpl::update_cron, tpl::delete_cron, tpl::cron_versions,
        tpl::list_cluster, tpl::create_cluster, tpl::get_cluster, tpl::update_cluster,
        tpl::delete_cluster, tpl::cluster_versions, workflow_graph, userinfo, run_events, run_metrics, lineage
    ),
    components(schemas(ErrorBody, CreateRequest, WorkflowList, WorkflowSummary, ResumeRequest,
        SetRequest, ResubmitRequest, TokenRequest, TokenCreated, TokenInfo, AuditLog, AuditItem,
        ArtifactList, ArtifactItem, tpl::TemplateList, tpl::VersionList, tpl::VersionItem,
        tpl::SubmitRequest, tpl::SubmitOptions, Graph, GraphNode, GraphEdge, UserInfo, RunEvents, RunEvent, RunMetrics)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn router(app: Arc<App>) -> Router {
    let limit = app.opts.body_limit;
    let api = Router::new()
        .route(
            "/api/v1/workflows/{namespace}",
            get(list_workflows).post(create_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}",
            get(get_workflow).delete(delete_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/stop",
            put(stop_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/terminate",
            put(terminate_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/suspend",
            put(suspend_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/resume",
            put(resume_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/set",
            put(set_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/retry",
            put(retry_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/resubmit",
            put(resubmit_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/log",
            get(workflow_logs),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/artifacts",
            get(list_artifacts),
        )
        .route(
            "/api/v1/artifact-files/{namespace}/workflows/{name}/{node}/outputs/{artifact}",
            get(artifact_file),
        )
        .route("/api/v1/workflow-events/{namespace}", get(workflow_events))
        .route(
            "/api/v1/tokens/{namespace}",
            get(list_tokens).post(create_token),
        )
        .route(
            "/api/v1/tokens/{namespace}/{id}",
            axum::routing::delete(revoke_token),
        )
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/userinfo", get(userinfo))
        .route("/api/v1/lineage/{namespace}", get(lineage))
        .route(
            "/api/v1/workflows/{namespace}/{name}/graph",
            get(workflow_graph),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/events",
            get(run_events),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/metrics",
            get(run_metrics),
        )
        .route(
            "/api/v1/workflows/{namespace}/submit",
            post(tpl::submit_from),
        )
        .route(
            "/api/v1/workflow-templates/{namespace}",
            get(tpl::list_templates).post(tpl::create_template),
        )
        .route(
            "/api/v1/workflow-templates/{namespace}/{name}",
            get(tpl::get_template)
                .put(tpl::update_template)
                .delete(tpl::delete_template),
        )
        .route(
            "/api/v1/workflow-templates/{namespace}/{name}/versions",
            get(tpl::template_versions),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}",
            get(tpl::list_crons).post(tpl::create_cron),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/{name}",
            get(tpl::get_cron)
                .put(tpl::update_cron)
                .delete(tpl::delete_cron),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/{name}/versions",
            get(tpl::cron_versions),
        )
        .route(
            "/api/v1/cluster-workflow-templates",
            get(tpl::list_cluster).post(tpl::create_cluster),
        )
        .route(
            "/api/v1/cluster-workflow-templates/{name}",
            get(tpl::get_cluster)
                .put(tpl::update_cluster)
                .delete(tpl::delete_cluster),
        )
        .route(
            "/api/v1/cluster-workflow-templates/{name}/versions",
            get(tpl::cluster_versions),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), gate));
    Router::new()
        .merge(api)
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/", get(super::ui::index))
        .route("/ui/{file}", get(super::ui::asset))
        .route("/metrics", get(super::metrics::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn(super::guard::json_errors))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

// ---------------------------------------------------------------------------------------------
// authentication, authorization and the audit log

/// Authenticates every API request (401 without a valid token) and records every mutating one
/// in the audit log with its outcome.
async fn gate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let now = now_ms();
    // `access_token=` only where a browser cannot send a header: event streams, followed logs
    // and artifact downloads, all GETs
    let query_ok = method == Method::GET
        && (route.starts_with("/api/v1/workflow-events/")
            || route.starts_with("/api/v1/artifact-files/")
            || route.ends_with("/log"));
    let token = bearer(req.headers())
        .or_else(|| query_ok.then(|| query_token(req.uri().query())).flatten());
    let caller = if app.opts.insecure_local {
        super::guard::local_request(req.headers(), &method).map(|()| Caller::Local)
    } else {
        match token {
            None => Err(ApiError::unauthenticated("a bearer token is required")),
            Some(t) => {
                app.db(move |app, store| {
                    app.verified
                        .check(store, &t, now, peer)
                        .map_err(|e| match e {
                            super::auth::Rejected::TooMany => ApiError::new(
                                StatusCode::TOO_MANY_REQUESTS,
                                "too_many_requests",
                                format!(
                                    "more than {} wrong token secrets from this address in {} s; \
                                     try again later",
                                    super::auth::MAX_FAILURES,
                                    super::auth::FAILURE_WINDOW_MS / 1000
                                ),
                            ),
                            super::auth::Rejected::Unavailable(e) => ApiError::unavailable(e),
                            e => ApiError::unauthenticated(e.to_string()),
                        })
                })
                .await
            }
        }
    };
    let (actor, resp) = match caller {
        Ok(c) => {
            let actor = c.actor();
            req.extensions_mut().insert(c);
            (Some(actor), next.run(req).await)
        }
        Err(e) => (None, e.into_response()),
    };
    let status = resp.status().as_u16();
    if let Some(super::error::Internal(detail)) = resp.extensions().get() {
        app.log.error(&format!("{method} {path}: {detail}"));
    }
    let elapsed = started.elapsed();
    app.metrics
        .request(method.as_str(), &route, status, elapsed);
    app.log.request(
        method.as_str(),
        &path,
        status,
        elapsed,
        actor.as_deref().unwrap_or("anonymous"),
    );
    // the audit log records what callers did; requests refused before anyone was identified are
    // counted in the metrics (by status), not written there
    if let Some(actor) = actor
        && method != Method::GET
        && method != Method::HEAD
    {
        let entry = AuditEntry {
            id: 0,
            at: now_ms(),
            actor,
            namespace: route_namespace(&route, &path),
            action: format!("{method} {route}"),
            target: path,
            status,
        };
        if let Err(e) = app
            .db(move |_, store| Ok(store.record_audit(&entry)?))
            .await
        {
            app.log.error(&format!("audit log: {}", e.message));
        }
    }
    resp
}

pub(super) fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(|t| t.trim().to_string())
}

/// `access_token=` in the query: browsers' EventSource cannot send headers.
fn query_token(q: Option<&str>) -> Option<String> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .map(|t| t.to_string())
}

/// The namespace a request acts in, as its handler sees it: the path segment where the route
/// has `{namespace}`, percent-decoded (`%61` is `a`); empty for cluster-scoped routes.
fn route_namespace(route: &str, path: &str) -> String {
    route
        .split('/')
        .position(|seg| seg == "{namespace}")
        .and_then(|i| path.split('/').nth(i))
        .map(percent_decode)
        .unwrap_or_default()
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

// ---------------------------------------------------------------------------------------------
// workflows

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    /// The Workflow (Argo's JSON form). A YAML body (`Content-Type: application/yaml`) may be
    /// sent instead of this request, with the documents as a file would hold them.
    #[schema(value_type = Object)]
    workflow: Value,
    /// `NAME=VALUE` overrides of the workflow's arguments.
    #[serde(default)]
    parameters: Vec<String>,
    /// Overrides `metadata.name` / `generateName`.
    #[serde(default)]
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSummary {
    name: String,
    namespace: String,
    phase: String,
    message: String,
    created_at: String,
    finished_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowList {
    items: Vec<WorkflowSummary>,
    /// Pass as `continue` for the next page; absent on the last page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated phases (Pending, Running, Succeeded, Failed, Error).
    phase: Option<String>,
    /// Kubernetes label selector: `k=v`, `k!=v`, `k`, `!k`, comma-separated.
    label_selector: Option<String>,
    /// Only runs created at or after this time (RFC 3339 or milliseconds since the epoch).
    created_after: Option<String>,
    /// Only runs created before this time.
    created_before: Option<String>,
    /// Only runs whose name starts with this.
    name_prefix: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// From the previous page's `continue`.
    #[serde(rename = "continue")]
    cont: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRequest {
    /// Only the suspended nodes matching this (`displayName=approve`, `name=…`, `id=…`).
    #[serde(default)]
    node_field_selector: Option<String>,
    /// `NAME=VALUE` values for the suspended nodes' `supplied` outputs.
    #[serde(default)]
    parameters: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetRequest {
    /// Which suspended node(s): `displayName=approve`, `name=…`, `id=…`.
    node_field_selector: String,
    /// Output parameter values (NAME → VALUE); the node then succeeds.
    #[serde(default)]
    output_parameters: BTreeMap<String, String>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct ResubmitRequest {
    /// `NAME=VALUE` overrides for the new run.
    #[serde(default)]
    parameters: Vec<String>,
}

#[derive(Deserialize)]
struct Named {
    namespace: String,
    name: String,
}

pub(super) fn ns_ok(namespace: &str) -> ApiResult<()> {
    weir_core::names::check_namespace(namespace).map_err(ApiError::bad_request)
}

/// The run `name` of `namespace`, replayed; 404 if `namespace` has none.
fn find_run(store: &Store, namespace: &str, name: &str) -> ApiResult<Run> {
    Ok(load_run(store, &run_key(store, namespace, name)?)?)
}

/// The key of run `name` of `namespace` ([`weir_core::run::Submission::key`]); 404 if there is
/// none (found without loading the run: a run that cannot be loaded can still be deleted).
fn run_key(store: &Store, namespace: &str, name: &str) -> ApiResult<String> {
    store.run_key(namespace, name)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workflow `{name}` not found in namespace `{namespace}`"
        ))
    })
}

fn workflow_json(run: &Run) -> Value {
    mask_value(show::run_json(run), &run.secret_values())
}

fn millis(s: &str) -> ApiResult<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    weir_core::expr::parse_rfc3339(s)
        .map(|secs| secs * 1000)
        .ok_or_else(|| {
            ApiError::bad_request(format!("`{s}` is not a time (RFC 3339 or milliseconds)"))
        })
}

fn label_selector(s: &str) -> ApiResult<Vec<LabelReq>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            ApiError::bad_request(format!(
                "label selector `{part}` is not `k=v`, `k!=v`, `k` or `!k`"
            ))
        };
        let req = if let Some((k, v)) = part.split_once("!=") {
            LabelReq::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            LabelReq::Absent(k.trim().into())
        } else {
            LabelReq::Exists(part.into())
        };
        let key = match &req {
            LabelReq::Eq(k, _)
            | LabelReq::NotEq(k, _)
            | LabelReq::Exists(k)
            | LabelReq::Absent(k) => k,
        };
        if key.is_empty() || key.contains(['"', '\\', ' ']) {
            return Err(bad());
        }
        out.push(req);
    }
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}", tag = "workflows",
    params(("namespace" = String, Path), ListQuery),
    responses((status = 200, body = WorkflowList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_workflows(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<WorkflowList>> {
    ns_ok(&namespace)?;
    require(&caller, &namespace, Role::Viewer)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let offset = match &q.cont {
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("`continue` is not from a previous page"))?,
        None => 0,
    };
    let query = RunQuery {
        namespace: Some(namespace),
        phases: q
            .phase
            .as_deref()
            .map(|p| {
                p.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        labels: q
            .label_selector
            .as_deref()
            .map(label_selector)
            .transpose()?
            .unwrap_or_default(),
        created_after: q.created_after.as_deref().map(millis).transpose()?,
        created_before: q.created_before.as_deref().map(millis).transpose()?,
        name_prefix: q.name_prefix,
        limit,
        offset,
    };
    let (rows, more) = app
        .db(move |_, store| Ok(store.query_runs(&query)?))
        .await?;
    Ok(Json(WorkflowList {
        next: more.then(|| (offset + rows.len()).to_string()),
        items: rows
            .into_iter()
            .map(|r| WorkflowSummary {
                name: r.name,
                namespace: r.namespace,
                phase: r.phase,
                message: r.message,
                created_at: weir_core::run::rfc3339_pub(r.created_at),
                finished_at: r.finished_at.map(weir_core::run::rfc3339_pub),
            })
            .collect(),
    }))
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

/// The documents of a request body: YAML as a file holds them, or Argo's `{"workflow": …}`.
fn parse_submission(
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<(weir_core::load::Loaded, Vec<String>, Option<String>)> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let (src, params, name) = if ctype.contains("json")
        || (!ctype.contains("yaml") && text.trim_start().starts_with('{'))
    {
        super::guard::no_duplicate_keys(text)?;
        let req: CreateRequest = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("request body:{}:{}: {e}", e.line(), e.column()))
        })?;
        if !req.workflow.is_object() {
            return Err(ApiError::bad_request(
                "request body: `workflow` must be an object",
            ));
        }
        let mut wf = req.workflow;
        if wf.get("apiVersion").is_none() {
            wf["apiVersion"] = json!("argoproj.io/v1alpha1");
        }
        if wf.get("kind").is_none() {
            wf["kind"] = json!("Workflow");
        }
        let src = serde_json::to_string_pretty(&wf).unwrap_or_default();
        (src, req.parameters, req.name)
    } else {
        (text.to_string(), Vec::new(), None)
    };
    let mut diags = weir_core::diag::Diags::new("request body");
    let loaded = weir_core::load::load_str(&src, &mut diags);
    invalid(&diags)?;
    Ok((loaded, params, name))
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
fn json_body<T: serde::de::DeserializeOwned + Default>(b: &[u8]) -> ApiResult<T> {
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

/// Query parameters of a YAML submission (a JSON request carries them in its body).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CreateQuery {
    /// `NAME=VALUE` override of an argument (repeatable).
    parameter: Option<Vec<String>>,
    /// Overrides `metadata.name` / `generateName`.
    name: Option<String>,
}

/// `%XX` and `+` decoded.
fn percent_decode(s: &str) -> String {
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
fn query_values(q: Option<&str>, key: &str) -> Vec<String> {
    q.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

#[utoipa::path(post, path = "/api/v1/workflows/{namespace}", tag = "workflows",
    params(("namespace" = String, Path), CreateQuery),
    request_body(content = CreateRequest, description = "Argo's JSON form, or the YAML documents with Content-Type application/yaml"),
    responses((status = 200, description = "The accepted run (Argo's Workflow shape)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn create_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    ns_ok(&namespace)?;
    require(&caller, &namespace, Role::Editor)?;
    let body = body_bytes(body)?;
    let (loaded, mut ps, mut name) = parse_submission(&headers, &body)?;
    ps.extend(query_values(query.as_deref(), "parameter"));
    if let Some(n) = query_values(query.as_deref(), "name").pop() {
        name = Some(n);
    }
    let ps = params(&ps)?;
    let mut loaded = loaded;
    for d in &mut loaded.definitions {
        match &d.metadata.namespace {
            Some(ns) if *ns != namespace => {
                return Err(ApiError::bad_request(format!(
                    "metadata.namespace `{ns}` is not the request's namespace `{namespace}`"
                )));
            }
            _ => d.metadata.namespace = Some(namespace.clone()),
        }
    }
    let v = app
        .db(move |app, store| tpl::submit(app, store, loaded, ps, name))
        .await?;
    Ok(Json(v))
}

/// Stores a new run and starts driving it.
pub(super) fn accept(
    app: &Arc<App>,
    store: &mut Store,
    sub: weir_core::run::Submission,
) -> ApiResult<Value> {
    // backpressure: a namespace at its quota of unfinished runs takes no more for now
    if store.is_postgres()
        && let Some(max) = store.quota(&sub.namespace)?.and_then(|q| q.max_runs)
    {
        let running = store.running_runs(&sub.namespace)?;
        if running >= max {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "namespace {} has {running} unfinished runs, its quota (max_runs {max}); submit again when one finishes",
                    sub.namespace
                ),
            ));
        }
    }
    let driver::Admitted { run, actions, lock } = driver::admit(&app.env, store, sub)?;
    let v = workflow_json(&run);
    app.spawn_driver(run, actions, Vec::new(), lock);
    Ok(v)
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The run (Argo's Workflow shape)", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Viewer)?;
    let v = app
        .db(move |_, store| Ok(workflow_json(&find_run(store, &namespace, &name)?)))
        .await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/api/v1/workflows/{namespace}/{name}", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The run is still running", body = ErrorBody)))]
async fn delete_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Editor)?;
    app.db(move |app, store| {
        let key = run_key(store, &namespace, &name)?;
        if !driver::delete_run(&app.env, store, &key)? {
            return Err(ApiError::conflict(format!(
                "run {name} is running; stop it first"
            )));
        }
        app.hub.publish(
            &namespace,
            &name,
            json!({"type": "DELETED", "namespace": namespace, "run": name}),
        );
        Ok(Json(json!({})))
    })
    .await
}

/// Sends `ev` to the run's driver: the process that drives it, or this one after taking it over.
fn control(
    app: &Arc<App>,
    store: &mut Store,
    namespace: &str,
    name: &str,
    ev: Event,
) -> ApiResult<Value> {
    let run = find_run(store, namespace, name)?;
    if run.phase().is_done() {
        return Err(ApiError::conflict(format!(
            "run {name} already finished: {}",
            run.phase()
        )));
    }
    let key = run.submission().key();
    if !app.adopt(store, key, vec![ev.clone()])? {
        store.push_control(key, &ev)?;
    }
    Ok(workflow_json(&run))
}

macro_rules! control_route {
    ($fn:ident, $verb:literal, $event:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(put, path = concat!("/api/v1/workflows/{namespace}/{name}/", $verb), tag = "workflows",
            params(("namespace" = String, Path), ("name" = String, Path)),
            responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
                (status = 404, body = ErrorBody), (status = 409, description = "The run already finished", body = ErrorBody)))]
        async fn $fn(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(Named { namespace, name }): Path<Named>,
        ) -> ApiResult<Json<Value>> {
            require(&caller, &namespace, Role::Editor)?;
            app.db(move |app, store| control(app, store, &namespace, &name, $event).map(Json)).await
        }
    };
}

control_route!(
    stop_workflow,
    "stop",
    Event::Stop,
    "Stops the run: running tasks are stopped, exit handlers run."
);
control_route!(
    terminate_workflow,
    "terminate",
    Event::Terminate,
    "Terminates the run at once (no exit handlers)."
);
control_route!(
    suspend_workflow,
    "suspend",
    Event::Suspend,
    "Suspends the run: no new task starts until it is resumed."
);

#[utoipa::path(put, path = "/api/v1/workflows/{namespace}/{name}/resume", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = ResumeRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Editor)?;
    let req: ResumeRequest = json_body(&body_bytes(body)?)?;
    let ps = params(&req.parameters)?;
    resume(app, namespace, name, ps, req.node_field_selector).await
}

async fn resume(
    app: Arc<App>,
    namespace: String,
    name: String,
    ps: Vec<(String, String)>,
    selector: Option<String>,
) -> ApiResult<Json<Value>> {
    app.db(move |app, store| {
        let run = find_run(store, &namespace, &name)?;
        let problems = run.supplied_problems(&ps, selector.as_deref());
        if !problems.is_empty() {
            return Err(ApiError::bad_request(problems.join("\n")));
        }
        control(
            app,
            store,
            &namespace,
            &name,
            Event::Resume {
                parameters: ps,
                selector,
            },
        )
        .map(Json)
    })
    .await
}

#[utoipa::path(put, path = "/api/v1/workflows/{namespace}/{name}/set", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = SetRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn set_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Editor)?;
    let b = body_bytes(body)?;
    let req: SetRequest = parse_json(&b)?;
    let ps = req.output_parameters.into_iter().collect();
    resume(app, namespace, name, ps, Some(req.node_field_selector)).await
}

#[utoipa::path(put, path = "/api/v1/workflows/{namespace}/{name}/retry", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not Failed or Error, or being driven", body = ErrorBody)))]
async fn retry_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Editor)?;
    app.db(move |app, store| {
        let run = find_run(store, &namespace, &name)?;
        if !matches!(run.phase(), Phase::Failed | Phase::Error) {
            return Err(ApiError::conflict(format!(
                "run {name} is {}; only Failed or Errored runs can be retried",
                run.phase()
            )));
        }
        let lock = driver::try_lock(&app.env, run.submission().key())?.ok_or_else(|| {
            ApiError::conflict(format!(
                "run {name} is being driven by another weir process"
            ))
        })?;
        let v = workflow_json(&run);
        app.spawn_driver(run, Vec::new(), vec![Event::Retry], lock);
        Ok(Json(v))
    })
    .await
}

#[utoipa::path(put, path = "/api/v1/workflows/{namespace}/{name}/resubmit", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = ResubmitRequest,
    responses((status = 200, description = "The new run", body = Object), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resubmit_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Editor)?;
    let req: ResubmitRequest = json_body(&body_bytes(body)?)?;
    let ps = params(&req.parameters)?;
    app.db(move |app, store| {
        let run = find_run(store, &namespace, &name)?;
        let sub = files::resubmission(run.submission().clone(), ps);
        accept(app, store, sub).map(Json)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/graph", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The run's graph, laid out (large groups collapsed)", body = Graph),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn workflow_graph(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Graph>> {
    require(&caller, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let run = find_run(store, &namespace, &name)?;
        let mut g = super::layout::layout(&run);
        let secrets = run.secret_values();
        if !secrets.is_empty() {
            for n in &mut g.nodes {
                n.label = weir_exec::mask(&n.label, &secrets);
            }
        }
        Ok(Json(g))
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct RunEvents {
    /// The run's stored events, oldest first: what the state machine was told, in order.
    items: Vec<RunEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct RunEvent {
    /// Position in the run's log.
    seq: usize,
    at: String,
    /// The event as stored (`{"Started": {...}}`, `{"Finished": {...}}`, `"Stop"`…).
    #[schema(value_type = Object)]
    event: Value,
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/events", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The run's event log", body = RunEvents),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<RunEvents>> {
    require(&caller, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let run = find_run(store, &namespace, &name)?;
        let secrets = run.secret_values();
        let rec = store.load(run.submission().key())?;
        let items = rec
            .events
            .iter()
            .enumerate()
            .map(|(seq, (at, ev))| RunEvent {
                seq,
                at: weir_core::run::rfc3339_pub(*at),
                event: mask_value(serde_json::to_value(ev).unwrap_or(Value::Null), &secrets),
            })
            .collect();
        Ok(Json(RunEvents { items }))
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct RunMetrics {
    /// The parameters the run ran with.
    parameters: BTreeMap<String, String>,
    /// Each (node, metric) series: `{nodeId, nodeName, name, points: [{step, value}]}`.
    #[schema(value_type = Vec<Object>)]
    series: Vec<Value>,
    /// Each metric's final value.
    #[serde(rename = "final")]
    last: BTreeMap<String, f64>,
    phase: String,
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/metrics", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "What the run's tasks reported (experiment tracking)", body = RunMetrics),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_metrics(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<RunMetrics>> {
    require(&caller, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let run = find_run(store, &namespace, &name)?;
        let secrets = run.secret_values();
        let (series, last) = show::run_metrics(&run);
        let parameters = show::run_parameters(&run)
            .into_iter()
            .map(|(k, v)| (k, weir_exec::mask(&v, &secrets)))
            .collect();
        Ok(Json(RunMetrics {
            parameters,
            series,
            last,
            phase: run.phase().as_str().to_string(),
        }))
    })
    .await
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
async fn lineage(
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

#[derive(Serialize, ToSchema)]
pub struct UserInfo {
    /// `token:ID`, or `local` on an `--insecure-local` server.
    actor: String,
    /// The namespace the caller's role holds in; `*` for every namespace.
    namespace: String,
    role: Role,
}

#[utoipa::path(get, path = "/api/v1/userinfo", tag = "access",
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody)))]
async fn userinfo(Extension(caller): Extension<Caller>) -> Json<UserInfo> {
    let (namespace, role) = match &caller {
        Caller::Local => ("*".to_string(), Role::Admin),
        Caller::Token {
            namespace, role, ..
        } => (namespace.clone(), *role),
    };
    Json(UserInfo {
        actor: caller.actor(),
        namespace,
        role,
    })
}

// ---------------------------------------------------------------------------------------------
// logs and artifacts

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// One node (id, name or display name); all task nodes without it.
    node_id: Option<String>,
    /// Stream as Server-Sent Events (`log` events, then `end`) until the node or run finishes.
    follow: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/log", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path), LogQuery),
    responses((status = 200, description = "Log lines (text/plain), or an event stream with follow=true", content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn workflow_logs(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    require(&caller, &namespace, Role::Viewer)?;
    let want = q.node_id.clone();
    let (ns2, name2, want2) = (namespace.clone(), name.clone(), want.clone());
    let (text, _) = app
        .db(move |app, store| {
            let run = find_run(store, &ns2, &name2)?;
            if let Some(w) = &want2
                && show::log_nodes(&run, Some(w)).is_empty()
                && run.node_by_id(w).is_none()
            {
                return Err(ApiError::not_found(format!(
                    "run {name2} has no task node `{w}`"
                )));
            }
            let mut offsets = Default::default();
            Ok((
                show::new_log_lines(&app.env.work_root(), &run, want2.as_deref(), &mut offsets),
                (),
            ))
        })
        .await?;
    if q.follow != Some(true) {
        let mut body = text.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response());
    }
    struct St {
        app: Arc<App>,
        namespace: String,
        name: String,
        want: Option<String>,
        offsets: std::collections::HashMap<String, u64>,
        queue: VecDeque<Sse_>,
        done: bool,
    }
    let st = St {
        app,
        namespace,
        name,
        want,
        offsets: Default::default(),
        queue: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            if st.done {
                return None;
            }
            let (ns, name, want, offsets) = (
                st.namespace.clone(),
                st.name.clone(),
                st.want.clone(),
                std::mem::take(&mut st.offsets),
            );
            let r = st
                .app
                .db(move |app, store| {
                    let run = find_run(store, &ns, &name)?;
                    let mut offsets = offsets;
                    let lines = show::new_log_lines(
                        &app.env.work_root(),
                        &run,
                        want.as_deref(),
                        &mut offsets,
                    );
                    let done = run.phase().is_done()
                        || want.as_deref().is_some_and(|w| {
                            let ns = show::log_nodes(&run, Some(w));
                            !ns.is_empty() && ns.iter().all(|n| n.phase.is_done())
                        });
                    Ok((lines, offsets, done))
                })
                .await;
            match r {
                Ok((lines, offsets, done)) => {
                    st.offsets = offsets;
                    st.queue.extend(
                        lines
                            .into_iter()
                            .map(|l| Sse_::default().event("log").data(l)),
                    );
                    if done {
                        st.queue.push_back(Sse_::default().event("end").data(""));
                        st.done = true;
                    }
                }
                Err(e) => {
                    st.queue
                        .push_back(Sse_::default().event("error").data(e.message));
                    st.done = true;
                }
            }
            if st.queue.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new())
        .into_response())
}

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
async fn list_artifacts(
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
struct ArtifactPath {
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
async fn artifact_file(
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

// ---------------------------------------------------------------------------------------------
// live updates

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this run; it begins with a `SNAPSHOT` of the run.
    name: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workflow-events/{namespace}", tag = "workflows",
    params(("namespace" = String, Path), EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-Sent Events: `workflow` events whose data is {type: SNAPSHOT|MODIFIED|DELETED, namespace, run, phase, message, nodes}", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn workflow_events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Sse_, Infallible>>>> {
    require(&caller, &namespace, Role::Viewer)?;
    let last: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok());
    let mut rx = app.hub.subscribe(&namespace);
    rx.mark_unchanged();
    let ns: Arc<str> = namespace.as_str().into();
    let only: Option<Arc<str>> = q.name.as_deref().map(Into::into);
    let keep = {
        let (ns, only) = (ns.clone(), only.clone());
        move |e: &hub::Event| e.namespace == ns && only.as_ref().is_none_or(|n| *n == e.run)
    };
    // from where: after Last-Event-ID if the hub still has what followed it, else snapshots
    let mut cursor = app.hub.latest();
    let mut queue = VecDeque::new();
    let caught_up = last.and_then(|l| app.hub.since(l, &keep));
    match caught_up {
        Some((evs, upto)) => {
            queue.extend(evs.iter().map(sse_event));
            cursor = cursor.max(upto);
        }
        None if only.is_some() || last.is_some() => {
            let (ns2, only2) = (namespace.clone(), q.name.clone());
            let snaps = app
                .db(move |_, store| {
                    let names = match only2 {
                        Some(n) => vec![run_key(store, &ns2, &n)?],
                        None => store
                            .query_runs(&RunQuery {
                                namespace: Some(ns2.clone()),
                                phases: vec!["Running".into(), "Pending".into()],
                                limit: 1000,
                                ..Default::default()
                            })?
                            .0
                            .into_iter()
                            .map(|r| r.key)
                            .collect(),
                    };
                    let mut out = Vec::new();
                    for n in names {
                        let run = load_run(store, &n)?;
                        out.push(mask_value(hub::snapshot(&run), &run.secret_values()));
                    }
                    Ok(out)
                })
                .await?;
            for s in snaps {
                queue.push_back(
                    Sse_::default()
                        .event("workflow")
                        .id(cursor.to_string())
                        .data(s.to_string()),
                );
            }
        }
        None => {}
    }
    struct St<K> {
        app: Arc<App>,
        rx: tokio::sync::watch::Receiver<u64>,
        cursor: u64,
        queue: VecDeque<Sse_>,
        keep: K,
    }
    let st = St {
        app,
        rx,
        cursor,
        queue,
        keep,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            st.rx.changed().await.ok()?;
            st.rx.borrow_and_update();
            match st.app.hub.since(st.cursor, &st.keep) {
                Some((evs, upto)) => {
                    st.queue.extend(evs.iter().map(sse_event));
                    st.cursor = upto;
                }
                None => {
                    // fell behind the ring: tell the client to start over from a snapshot
                    st.cursor = st.app.hub.latest();
                    st.queue.push_back(
                        Sse_::default()
                            .event("resync")
                            .id(st.cursor.to_string())
                            .data("{}"),
                    );
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(e: &hub::Event) -> Sse_ {
    Sse_::default()
        .event("workflow")
        .id(e.id.to_string())
        .data(&*e.data)
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
async fn create_token(
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

fn token_info(t: weir_store::TokenRecord) -> TokenInfo {
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
async fn list_tokens(
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
async fn revoke_token(
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
async fn audit_log(
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

// ---------------------------------------------------------------------------------------------
// health

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process serves requests", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "The store answers", body = String),
        (status = 503, body = ErrorBody)))]
async fn readyz(State(app): State<Arc<App>>) -> ApiResult<&'static str> {
    app.db(|_, store| Ok(store.name_taken("", "")?))
        .await
        .map_err(|e| match e.status {
            StatusCode::SERVICE_UNAVAILABLE => e,
            _ => ApiError::unavailable(e.message),
        })?;
    Ok("ready\n")
}
