//! The REST API under `/api/v1`, following the Argo server's paths where it has them. Every
//! handler is annotated for the OpenAPI document (`/api/v1/openapi.json`), which is generated
//! from these annotations.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use weir_core::run::Event;
use weir_store::{AuditEntry, LabelReq, RunQuery, Store};

use super::App;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::layout::{Graph, GraphEdge, GraphNode};
use super::request::*;
use super::templates as tpl;
use super::{access, artifacts, inspect, streams};
use crate::ambient::now_ms;
use crate::driver;
use crate::files;
use crate::server::accept;

#[derive(OpenApi)]
#[openapi(
    info(title = "Weir API", description = "Workflows (Argo YAML) submitted, watched and controlled over HTTP."),
    paths(
        list_workflows, create_workflow, lint_workflow, get_workflow, delete_workflow, stop_workflow,
        terminate_workflow, suspend_workflow, resume_workflow, set_workflow, retry_workflow,
        resubmit_workflow, healthz, readyz,
        streams::workflow_logs, streams::workflow_events,
        artifacts::list_artifacts, artifacts::artifact_file, artifacts::lineage,
        access::create_token, access::list_tokens, access::revoke_token, access::audit_log,
        access::userinfo,
        inspect::workflow_graph, inspect::run_events, inspect::run_metrics,
        tpl::submit_from, tpl::list_templates, tpl::create_template, tpl::get_template,
        tpl::update_template, tpl::delete_template, tpl::template_versions, tpl::list_crons,
        tpl::create_cron, tpl::get_cron, tpl::update_cron, tpl::delete_cron, tpl::cron_versions,
        tpl::list_cluster, tpl::create_cluster, tpl::get_cluster, tpl::update_cluster,
        tpl::delete_cluster, tpl::cluster_versions, super::argo::version, super::argo::info,
        tpl::lint_template, tpl::lint_cron, tpl::lint_cluster, tpl::suspend_cron, tpl::resume_cron
    ),
    components(schemas(ErrorBody, CreateRequest, WorkflowList, WorkflowSummary, ListMeta,
        ItemMeta, ItemStatus, super::argo::Version, super::argo::Info, ResumeRequest,
        SetRequest, ResubmitRequest, Graph, GraphNode, GraphEdge,
        access::TokenRequest, access::TokenCreated, access::TokenInfo, access::AuditLog,
        access::AuditItem, access::UserInfo,
        artifacts::ArtifactList, artifacts::ArtifactItem,
        inspect::RunEvents, inspect::RunEvent, inspect::RunMetrics,
        tpl::TemplateList, tpl::VersionList, tpl::VersionItem, tpl::SubmitRequest,
        tpl::SubmitOptions)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub(super) struct ApiDoc;

pub(super) struct BearerAuth;

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
        .route("/api/v1/workflows/{namespace}/lint", post(lint_workflow))
        .route(
            "/api/v1/workflow-templates/{namespace}/lint",
            post(tpl::lint_template),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/lint",
            post(tpl::lint_cron),
        )
        .route(
            "/api/v1/cluster-workflow-templates/lint",
            post(tpl::lint_cluster),
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
            get(streams::workflow_logs),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/artifacts",
            get(artifacts::list_artifacts),
        )
        .route(
            "/api/v1/artifact-files/{namespace}/workflows/{name}/{node}/outputs/{artifact}",
            get(artifacts::artifact_file),
        )
        .route(
            "/api/v1/workflow-events/{namespace}",
            get(streams::workflow_events),
        )
        .route(
            "/api/v1/tokens/{namespace}",
            get(access::list_tokens).post(access::create_token),
        )
        .route(
            "/api/v1/tokens/{namespace}/{id}",
            axum::routing::delete(access::revoke_token),
        )
        .route("/api/v1/audit", get(access::audit_log))
        .route("/api/v1/userinfo", get(access::userinfo))
        .route("/api/v1/lineage/{namespace}", get(artifacts::lineage))
        .route(
            "/api/v1/workflows/{namespace}/{name}/graph",
            get(inspect::workflow_graph),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/events",
            get(inspect::run_events),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/metrics",
            get(inspect::run_metrics),
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
            "/api/v1/cron-workflows/{namespace}/{name}/suspend",
            put(tpl::suspend_cron),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/{name}/resume",
            put(tpl::resume_cron),
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
        .route("/api/v1/version", get(super::argo::version))
        .route("/api/v1/info", get(super::argo::info))
        .route(
            "/api/v1/event-sources/{*rest}",
            axum::routing::any(super::argo::unimplemented),
        )
        .route(
            "/api/v1/sensors/{*rest}",
            axum::routing::any(super::argo::unimplemented),
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
pub(super) async fn gate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
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

/// The namespace a request acts in, as its handler sees it: the path segment where the route
/// has `{namespace}`, percent-decoded (`%61` is `a`); empty for cluster-scoped routes.
pub(super) fn route_namespace(route: &str, path: &str) -> String {
    route
        .split('/')
        .position(|seg| seg == "{namespace}")
        .and_then(|i| path.split('/').nth(i))
        .map(percent_decode)
        .unwrap_or_default()
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

/// A run in a list: a Workflow as Argo lists one (`metadata`, `status`; its `spec` and nodes
/// left out: get the run for those), and the same facts flat, as Weir's UI and CLI read them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSummary {
    api_version: &'static str,
    kind: &'static str,
    metadata: ItemMeta,
    #[schema(value_type = Object)]
    spec: Value,
    status: ItemStatus,
    name: String,
    namespace: String,
    phase: String,
    message: String,
    created_at: String,
    finished_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemMeta {
    name: String,
    namespace: String,
    creation_timestamp: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemStatus {
    phase: String,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

/// A list's Kubernetes `ListMeta`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// Always "0": lists are not versioned.
    resource_version: String,
    /// Pass as `listOptions.continue` for the next page; absent on the last page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A WorkflowList, as Argo answers one.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowList {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: Vec<WorkflowSummary>,
    /// The same as `metadata.continue` (what Weir's UI reads).
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
    /// Argo's name for `labelSelector`.
    #[serde(rename = "listOptions.labelSelector")]
    #[param(rename = "listOptions.labelSelector")]
    list_label_selector: Option<String>,
    /// Argo's name for `limit`.
    #[serde(rename = "listOptions.limit")]
    #[param(rename = "listOptions.limit", minimum = 1, maximum = 1000)]
    list_limit: Option<u32>,
    /// Argo's name for `continue`.
    #[serde(rename = "listOptions.continue")]
    #[param(rename = "listOptions.continue")]
    list_continue: Option<String>,
    /// `metadata.name=NAME` (also `==`, and `metadata.namespace=NS`), comma-separated.
    #[serde(rename = "listOptions.fieldSelector")]
    #[param(rename = "listOptions.fieldSelector")]
    field_selector: Option<String>,
    /// How `metadata.name` of `listOptions.fieldSelector` matches: `Exact` (the default) or
    /// `Prefix` (Argo's `Contains` is refused).
    name_filter: Option<String>,
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

pub(super) fn millis(s: &str) -> ApiResult<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    weir_core::expr::parse_rfc3339(s)
        .map(|secs| secs * 1000)
        .ok_or_else(|| {
            ApiError::bad_request(format!("`{s}` is not a time (RFC 3339 or milliseconds)"))
        })
}

pub(super) fn label_selector(s: &str) -> ApiResult<Vec<LabelReq>> {
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
pub(super) async fn list_workflows(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<WorkflowList>> {
    ns_ok(&namespace)?;
    require(&caller, &namespace, Role::Viewer)?;
    let limit = q.limit.or(q.list_limit).unwrap_or(100).clamp(1, 1000) as usize;
    let offset = match q.cont.as_ref().or(q.list_continue.as_ref()) {
        Some(c) if !c.is_empty() => c
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("`continue` is not from a previous page"))?,
        _ => 0,
    };
    // Argo's field selector: the run's name (exact unless `nameFilter=Prefix`) and namespace
    let mut exact_name = None;
    let mut name_prefix = q.name_prefix;
    for term in q.field_selector.as_deref().unwrap_or_default().split(',') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (field, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "listOptions.fieldSelector: `{term}` is not FIELD=VALUE"
                ))
            })?;
        match field.trim() {
            "metadata.name" => match q.name_filter.as_deref().unwrap_or("Exact") {
                "Exact" | "" => {
                    exact_name = Some(value.trim().to_string());
                    name_prefix = Some(value.trim().to_string());
                }
                "Prefix" => name_prefix = Some(value.trim().to_string()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "nameFilter `{other}`: weir matches names Exact or by Prefix"
                    )));
                }
            },
            "metadata.namespace" if value.trim() == namespace => {}
            "metadata.namespace" => {
                return Ok(Json(workflow_list(Vec::new(), None)));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "listOptions.fieldSelector: weir selects by metadata.name and metadata.namespace, not `{other}`"
                )));
            }
        }
    }
    let labels = q
        .label_selector
        .as_deref()
        .or(q.list_label_selector.as_deref());
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
        labels: labels.map(label_selector).transpose()?.unwrap_or_default(),
        created_after: q.created_after.as_deref().map(millis).transpose()?,
        created_before: q.created_before.as_deref().map(millis).transpose()?,
        name_prefix,
        limit,
        offset,
    };
    let (rows, more) = app
        .db(move |_, store| Ok(store.query_runs(&query)?))
        .await?;
    let next = more.then(|| (offset + rows.len()).to_string());
    let rows = rows
        .into_iter()
        .filter(|r| exact_name.as_ref().is_none_or(|n| &r.name == n))
        .collect();
    Ok(Json(workflow_list(rows, next)))
}

/// A WorkflowList of these runs; `next` continues it.
fn workflow_list(rows: Vec<weir_store::RunSummary>, next: Option<String>) -> WorkflowList {
    let items = rows
        .into_iter()
        .map(|r| {
            let created = weir_core::run::rfc3339_pub(r.created_at);
            let finished = r.finished_at.map(weir_core::run::rfc3339_pub);
            WorkflowSummary {
                api_version: "argoproj.io/v1alpha1",
                kind: "Workflow",
                metadata: ItemMeta {
                    name: r.name.clone(),
                    namespace: r.namespace.clone(),
                    creation_timestamp: created.clone(),
                },
                spec: json!({}),
                status: ItemStatus {
                    phase: r.phase.clone(),
                    started_at: created.clone(),
                    finished_at: finished.clone(),
                    message: r.message.clone(),
                },
                name: r.name,
                namespace: r.namespace,
                phase: r.phase,
                message: r.message,
                created_at: created,
                finished_at: finished,
            }
        })
        .collect();
    WorkflowList {
        api_version: "argoproj.io/v1alpha1",
        kind: "WorkflowList",
        metadata: ListMeta {
            resource_version: "0".into(),
            next: next.clone(),
        },
        items,
        next,
    }
}

/// The documents of a request body: YAML as a file holds them, or Argo's `{"workflow": …}`.
pub(super) fn parse_submission(
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

#[utoipa::path(post, path = "/api/v1/workflows/{namespace}", tag = "workflows",
    params(("namespace" = String, Path), CreateQuery),
    request_body(content = CreateRequest, description = "Argo's JSON form, or the YAML documents with Content-Type application/yaml"),
    responses((status = 200, description = "The accepted run (Argo's Workflow shape)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn create_workflow(
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
    let loaded = in_namespace(loaded, &namespace)?;
    let v = app
        .db(move |app, store| tpl::submit(app, store, loaded, ps, name))
        .await?;
    Ok(Json(v))
}

/// The documents of a request to `namespace`, each placed in it (one naming another is refused).
fn in_namespace(
    mut loaded: weir_core::load::Loaded,
    namespace: &str,
) -> ApiResult<weir_core::load::Loaded> {
    for d in &mut loaded.definitions {
        match &d.metadata.namespace {
            Some(ns) if ns != namespace => {
                return Err(ApiError::bad_request(format!(
                    "metadata.namespace `{ns}` is not the request's namespace `{namespace}`"
                )));
            }
            _ => d.metadata.namespace = Some(namespace.to_string()),
        }
    }
    Ok(loaded)
}

#[utoipa::path(post, path = "/api/v1/workflows/{namespace}/lint", tag = "workflows",
    params(("namespace" = String, Path)), request_body = CreateRequest,
    responses((status = 200, description = "The Workflow, as submitting it would run it (nothing runs)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(super) async fn lint_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    ns_ok(&namespace)?;
    // as submitting does: a lint is a submission that stops short of running
    require(&caller, &namespace, Role::Editor)?;
    let (loaded, ps, name) = parse_submission(&headers, &body_bytes(body)?)?;
    let ps = params(&ps)?;
    let loaded = in_namespace(loaded, &namespace)?;
    let sub = app
        .db(move |app, store| tpl::prepare(app, store, loaded, ps, name))
        .await?;
    // what starting it would find
    if let Err(found) = weir_core::run::Run::start(sub.clone()) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_workflow",
            files::locate(&found, &sub.workflow, &sub.library),
        ));
    }
    let mut meta = serde_json::to_value(&sub.workflow.metadata).unwrap_or(json!({}));
    meta["name"] = json!(sub.name);
    meta["namespace"] = json!(sub.namespace);
    Ok(Json(
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": meta, "spec": sub.workflow.spec}),
    ))
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The run (Argo's Workflow shape)", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_workflow(
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
pub(super) async fn delete_workflow(
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
pub(super) fn control(
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
    if let super::Delivery::Finished(phase) =
        app.deliver(store, run.submission().key(), vec![ev])?
    {
        return Err(ApiError::conflict(format!(
            "run {name} already finished: {phase}"
        )));
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
pub(super) async fn resume_workflow(
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

pub(super) async fn resume(
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
pub(super) async fn set_workflow(
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
pub(super) async fn retry_workflow(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Value>> {
    require(&caller, &namespace, Role::Editor)?;
    app.db(move |app, store| {
        let key = run_key(store, &namespace, &name)?;
        let (run, lock) = driver::retry(&app.env, store, &key)?;
        // the run as the retry leaves it (Argo answers the reset Workflow): its failed nodes
        // and its phase reset, on a copy, while its driver applies the retry itself
        let mut shown = driver::load_run(store, &key)?;
        shown.step(Event::Retry, crate::ambient::now_ms());
        let v = workflow_json(&shown);
        app.spawn_driver(run, Vec::new(), vec![Event::Retry], lock);
        Ok(Json(v))
    })
    .await
}

#[utoipa::path(put, path = "/api/v1/workflows/{namespace}/{name}/resubmit", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = ResubmitRequest,
    responses((status = 200, description = "The new run", body = Object), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn resubmit_workflow(
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

// ---------------------------------------------------------------------------------------------
// health

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process serves requests", body = String)))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "The store answers", body = String),
        (status = 503, body = ErrorBody)))]
pub(super) async fn readyz(State(app): State<Arc<App>>) -> ApiResult<&'static str> {
    app.db(|_, store| Ok(store.name_taken("", "")?))
        .await
        .map_err(|e| match e.status {
            StatusCode::SERVICE_UNAVAILABLE => e,
            _ => ApiError::unavailable(e.message),
        })?;
    Ok("ready\n")
}
