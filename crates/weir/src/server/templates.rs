//! WorkflowTemplates, ClusterWorkflowTemplates and CronWorkflows: create, list, get (any
//! version), update (a new version; the old ones stay), delete; and submitting a run from a
//! stored template. Every run records the versions of the templates it was given.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use weir_core::load::Loaded;
use weir_core::spec::{Definition, Kind};
use weir_store::{Store, TemplateRecord};

use super::App;
use super::accept;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::request::{body_bytes, invalid, ns_ok, params, parse_json, require};
use crate::ambient::now_ms;
use crate::files;

/// The annotation on a run listing the stored templates it was given, `KIND/NAMESPACE/NAME=VERSION`.
pub const VERSIONS_ANNOTATION: &str = "weir.dev/template-versions";

/// Loads one stored document (the templates a caller stored were valid when stored).
fn load(rec: &TemplateRecord) -> ApiResult<Definition> {
    let mut diags = weir_core::diag::Diags::new(&format!(
        "{}/{}/{}@{}",
        rec.kind, rec.namespace, rec.name, rec.version
    ));
    let loaded = weir_core::load::load_str(&rec.body, &mut diags);
    loaded.definitions.into_iter().next().ok_or_else(|| {
        ApiError::internal(format!("stored {} {} cannot be loaded", rec.kind, rec.name))
    })
}

/// The templates a run in `namespace` may reference: the namespace's WorkflowTemplates and every
/// ClusterWorkflowTemplate, latest versions, with their `KIND/NAMESPACE/NAME=VERSION` list.
pub fn library(store: &Store, namespace: &str) -> ApiResult<(Loaded, String)> {
    let mut lib = Loaded::default();
    let mut versions = Vec::new();
    for (kind, ns) in [
        ("WorkflowTemplate", namespace),
        ("ClusterWorkflowTemplate", ""),
    ] {
        for rec in store.templates(kind, ns)? {
            versions.push(format!("{kind}/{ns}/{}={}", rec.name, rec.version));
            lib.definitions.push(load(&rec)?);
        }
    }
    Ok((lib, versions.join(",")))
}

/// The template an API caller sends: YAML (as a file holds it) or Argo's JSON request
/// (`{"template": …}`, `{"cronWorkflow": …}`), checked to be one document of `kind`.
fn parse(kind: Kind, headers: &HeaderMap, body: &[u8]) -> ApiResult<(Definition, String)> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let src = if ctype.contains("json")
        || (!ctype.contains("yaml") && text.trim_start().starts_with('{'))
    {
        let v: Value = parse_json(body)?;
        let field = if kind == Kind::CronWorkflow {
            "cronWorkflow"
        } else {
            "template"
        };
        let mut doc = v
            .get(field)
            .filter(|d| d.is_object())
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(format!("request body: `{field}` must be an object"))
            })?;
        if doc.get("apiVersion").is_none() {
            doc["apiVersion"] = json!("argoproj.io/v1alpha1");
        }
        if doc.get("kind").is_none() {
            doc["kind"] = json!(kind.as_str());
        }
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    } else {
        text.to_string()
    };
    let mut diags = weir_core::diag::Diags::new("request body");
    let loaded = weir_core::load::load_str(&src, &mut diags);
    invalid(&diags)?;
    let mut defs = loaded.definitions.into_iter();
    let def = match (defs.next(), defs.next()) {
        (Some(d), None) if d.kind == kind => d,
        (Some(d), None) => {
            return Err(ApiError::bad_request(format!(
                "request body: a {} was sent where a {} belongs",
                d.kind.as_str(),
                kind.as_str()
            )));
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "request body: exactly one {} document is expected",
                kind.as_str()
            )));
        }
    };
    if def.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "request body: metadata.name is required",
        ));
    }
    Ok((def, src))
}

/// A template's (or CronWorkflow's) `spec` in Argo's shape.
fn spec_json(def: &Definition) -> Value {
    let spec = serde_json::to_value(&def.spec).unwrap_or(Value::Null);
    match &def.cron {
        Some(cron) => {
            let mut c = serde_json::to_value(cron).unwrap_or(json!({}));
            c["workflowSpec"] = spec;
            c
        }
        None => spec,
    }
}

/// A stored version in Argo's shape, with `metadata.resourceVersion` the version number.
fn to_json(rec: &TemplateRecord) -> ApiResult<Value> {
    let def = load(rec)?;
    let spec = spec_json(&def);
    let mut meta = json!({
        "name": rec.name,
        "resourceVersion": rec.version.to_string(),
        "creationTimestamp": weir_core::run::rfc3339_pub(rec.created_at),
        "labels": def.metadata.labels,
        "annotations": def.metadata.annotations,
    });
    if !rec.namespace.is_empty() {
        meta["namespace"] = json!(rec.namespace);
    }
    Ok(
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": rec.kind, "metadata": meta, "spec": spec}),
    )
}

/// A list of templates (or CronWorkflows), as Argo answers one.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateList {
    api_version: &'static str,
    /// `WorkflowTemplateList`, `CronWorkflowList` or `ClusterWorkflowTemplateList`.
    kind: String,
    /// Kubernetes' `ListMeta`: `{"resourceVersion": "0"}` (lists are not versioned).
    #[schema(value_type = Object)]
    metadata: Value,
    /// The latest version of each (Argo's shape).
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A former version (`metadata.resourceVersion`); the latest without it.
    #[param(minimum = 1)]
    version: Option<i64>,
}

fn scope(kind: Kind, namespace: &str) -> String {
    if kind == Kind::ClusterWorkflowTemplate {
        String::new()
    } else {
        namespace.to_string()
    }
}

/// Cluster templates are read by any caller and written by callers with a role in every
/// namespace; the others by role in their namespace.
fn allow(caller: &Caller, kind: Kind, namespace: &str, role: Role) -> ApiResult<()> {
    if kind != Kind::ClusterWorkflowTemplate {
        return require(caller, namespace, role);
    }
    if role == Role::Viewer || caller.is_global(role) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} may not change cluster templates (needs the {} role in every namespace)",
        caller.actor(),
        role.as_str()
    )))
}

async fn do_list(
    app: Arc<App>,
    caller: Caller,
    kind: Kind,
    namespace: String,
) -> ApiResult<Json<TemplateList>> {
    if kind != Kind::ClusterWorkflowTemplate {
        ns_ok(&namespace)?;
    }
    allow(&caller, kind, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let items = store
            .templates(kind.as_str(), &scope(kind, &namespace))?
            .iter()
            .map(to_json)
            .collect::<ApiResult<_>>()?;
        Ok(Json(TemplateList {
            api_version: "argoproj.io/v1alpha1",
            kind: format!("{}List", kind.as_str()),
            metadata: json!({"resourceVersion": "0"}),
            items,
        }))
    })
    .await
}

async fn do_get(
    app: Arc<App>,
    caller: Caller,
    kind: Kind,
    namespace: String,
    name: String,
    version: Option<i64>,
) -> ApiResult<Json<Value>> {
    allow(&caller, kind, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let rec = store
            .template(kind.as_str(), &scope(kind, &namespace), &name, version)?
            .ok_or_else(|| ApiError::not_found(format!("{} `{name}` not found", kind.as_str())))?;
        Ok(Json(to_json(&rec)?))
    })
    .await
}

/// Create (`name` None: the name is the document's, which must be new) or update (a new
/// version of `name`, which must exist).
/// The version just stored, in Argo's shape.
fn stored(
    store: &Store,
    kind: Kind,
    scope: &str,
    name: &str,
    version: i64,
) -> ApiResult<Json<Value>> {
    let rec = store
        .template(kind.as_str(), scope, name, Some(version))?
        .ok_or_else(|| ApiError::internal("the stored version vanished"))?;
    Ok(Json(to_json(&rec)?))
}

/// A template an editor sends, parsed and checked as storing it needs: the document, its
/// source and its name.
fn checked(
    caller: &Caller,
    kind: Kind,
    namespace: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(Definition, String, String)> {
    if kind != Kind::ClusterWorkflowTemplate {
        ns_ok(namespace)?;
    }
    allow(caller, kind, namespace, Role::Editor)?;
    let (def, src) = parse(kind, headers, &body_bytes(body)?)?;
    let name = def.metadata.name.clone().unwrap_or_default();
    weir_core::names::check_name(&name).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("metadata.name: {e}"),
        )
    })?;
    Ok((def, src, name))
}

async fn do_put(
    app: Arc<App>,
    caller: Caller,
    kind: Kind,
    namespace: String,
    name: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let (def, src, doc_name) = checked(&caller, kind, &namespace, &headers, body)?;
    match (&name, &def.metadata.namespace) {
        (Some(n), _) if *n != doc_name => {
            return Err(ApiError::bad_request(format!(
                "metadata.name `{doc_name}` is not the name in the path, `{n}`"
            )));
        }
        (_, Some(ns)) if kind != Kind::ClusterWorkflowTemplate && *ns != namespace => {
            return Err(ApiError::bad_request(format!(
                "metadata.namespace `{ns}` is not the request's namespace `{namespace}`"
            )));
        }
        _ => {}
    }
    app.db(move |_, store| {
        let ns = scope(kind, &namespace);
        let exists = store
            .template(kind.as_str(), &ns, &doc_name, None)?
            .is_some();
        if name.is_none() && exists {
            return Err(ApiError::conflict(format!(
                "{} `{doc_name}` already exists",
                kind.as_str()
            )));
        }
        if name.is_some() && !exists {
            return Err(ApiError::not_found(format!(
                "{} `{doc_name}` not found",
                kind.as_str()
            )));
        }
        let version = store.put_template(kind.as_str(), &ns, &doc_name, &src, now_ms())?;
        stored(store, kind, &ns, &doc_name, version)
    })
    .await
}

#[utoipa::path(put, path = "/api/v1/cron-workflows/{namespace}/{name}/suspend", tag = "cron",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The new version, suspended", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn suspend_cron(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Value>> {
    set_suspend(app, caller, namespace, name, true).await
}

#[utoipa::path(put, path = "/api/v1/cron-workflows/{namespace}/{name}/resume", tag = "cron",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The new version, not suspended", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn resume_cron(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
) -> ApiResult<Json<Value>> {
    set_suspend(app, caller, namespace, name, false).await
}

/// Stores a new version of a CronWorkflow with `spec.suspend` set to `suspend`.
async fn set_suspend(
    app: Arc<App>,
    caller: Caller,
    namespace: String,
    name: String,
    suspend: bool,
) -> ApiResult<Json<Value>> {
    ns_ok(&namespace)?;
    let kind = Kind::CronWorkflow;
    allow(&caller, kind, &namespace, Role::Editor)?;
    app.db(move |_, store| {
        let rec = store
            .template(kind.as_str(), &namespace, &name, None)?
            .ok_or_else(|| ApiError::not_found(format!("CronWorkflow `{name}` not found")))?;
        let mut doc = to_json(&rec)?;
        doc["spec"]["suspend"] = json!(suspend);
        if let Some(m) = doc["metadata"].as_object_mut() {
            // the version's own fields, which the store sets
            m.remove("resourceVersion");
            m.remove("creationTimestamp");
        }
        let src = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let version = store.put_template(kind.as_str(), &namespace, &name, &src, now_ms())?;
        stored(store, kind, &namespace, &name, version)
    })
    .await
}

/// Checks a template as creating it would, storing nothing: the document in Argo's shape, or
/// the error creating it would answer (Argo's `…/lint`).
async fn do_lint(
    app: Arc<App>,
    caller: Caller,
    kind: Kind,
    namespace: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let (def, _, name) = checked(&caller, kind, &namespace, &headers, body)?;
    // what running it would find, with the namespace's stored templates as its library
    let (lib_ns, checked) = (namespace.clone(), def.clone());
    let found = app
        .db(move |_, store| {
            let (lib, _) = library(store, &lib_ns)?;
            Ok(files::lint(
                &checked,
                lib.definitions
                    .into_iter()
                    .filter(|d| d.metadata.name != checked.metadata.name || d.kind != checked.kind)
                    .chain(std::iter::once(checked.clone()))
                    .collect(),
                lib.config_maps,
                lib.secrets,
            ))
        })
        .await?;
    if let Some(found) = found {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_workflow",
            found,
        ));
    }
    let mut meta = json!({"name": name, "labels": def.metadata.labels,
        "annotations": def.metadata.annotations});
    if kind != Kind::ClusterWorkflowTemplate {
        meta["namespace"] = json!(namespace);
    }
    Ok(Json(
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": kind.as_str(), "metadata": meta, "spec": spec_json(&def)}),
    ))
}

async fn do_delete(
    app: Arc<App>,
    caller: Caller,
    kind: Kind,
    namespace: String,
    name: String,
) -> ApiResult<Json<Value>> {
    allow(&caller, kind, &namespace, Role::Editor)?;
    app.db(move |_, store| {
        if !store.delete_template(kind.as_str(), &scope(kind, &namespace), &name, now_ms())? {
            return Err(ApiError::not_found(format!(
                "{} `{name}` not found",
                kind.as_str()
            )));
        }
        Ok(Json(json!({})))
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    items: Vec<VersionItem>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionItem {
    version: i64,
    created_at: String,
    /// This version is the template's deletion.
    deleted: bool,
}

async fn do_versions(
    app: Arc<App>,
    caller: Caller,
    kind: Kind,
    namespace: String,
    name: String,
) -> ApiResult<Json<VersionList>> {
    allow(&caller, kind, &namespace, Role::Viewer)?;
    app.db(move |_, store| {
        let items: Vec<VersionItem> = store
            .template_versions(kind.as_str(), &scope(kind, &namespace), &name)?
            .into_iter()
            .map(|r| VersionItem {
                version: r.version,
                created_at: weir_core::run::rfc3339_pub(r.created_at),
                deleted: r.deleted,
            })
            .collect();
        if items.is_empty() {
            return Err(ApiError::not_found(format!(
                "{} `{name}` not found",
                kind.as_str()
            )));
        }
        Ok(Json(VersionList { items }))
    })
    .await
}

#[derive(Deserialize)]
pub struct Named {
    namespace: String,
    name: String,
}

/// Handlers of a namespaced kind, each with its OpenAPI annotation.
macro_rules! namespaced {
    ($kind:expr, $base:literal, $tag:literal, $list:ident, $create:ident, $get:ident, $update:ident, $delete:ident, $versions:ident, $lint:ident) => {
        #[utoipa::path(post, path = concat!($base, "/{namespace}/lint"), tag = $tag,
            params(("namespace" = String, Path)),
            request_body(content = Object, description = "Argo's JSON request, or the YAML document with Content-Type application/yaml"),
            responses((status = 200, description = "The document, as creating it would store it (nothing is stored)", body = Object),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
        pub async fn $lint(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(namespace): Path<String>,
            headers: HeaderMap,
            body: Result<Bytes, BytesRejection>,
        ) -> ApiResult<Json<Value>> {
            do_lint(app, caller, $kind, namespace, headers, body).await
        }

        #[utoipa::path(get, path = concat!($base, "/{namespace}"), tag = $tag,
            params(("namespace" = String, Path)),
            responses((status = 200, body = TemplateList), (status = 400, body = ErrorBody),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
        pub async fn $list(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(namespace): Path<String>,
        ) -> ApiResult<Json<TemplateList>> {
            do_list(app, caller, $kind, namespace).await
        }

        #[utoipa::path(post, path = concat!($base, "/{namespace}"), tag = $tag,
            params(("namespace" = String, Path)),
            request_body(content = Object, description = "Argo's JSON request, or the YAML document with Content-Type application/yaml"),
            responses((status = 200, description = "The stored version", body = Object), (status = 400, body = ErrorBody),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
                (status = 413, body = ErrorBody)))]
        pub async fn $create(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(namespace): Path<String>,
            headers: HeaderMap,
            body: Result<Bytes, BytesRejection>,
        ) -> ApiResult<Json<Value>> {
            do_put(app, caller, $kind, namespace, None, headers, body).await
        }

        #[utoipa::path(get, path = concat!($base, "/{namespace}/{name}"), tag = $tag,
            params(("namespace" = String, Path), ("name" = String, Path), VersionQuery),
            responses((status = 200, body = Object), (status = 401, body = ErrorBody),
                (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
        pub async fn $get(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(Named { namespace, name }): Path<Named>,
            Query(q): Query<VersionQuery>,
        ) -> ApiResult<Json<Value>> {
            do_get(app, caller, $kind, namespace, name, q.version).await
        }

        #[utoipa::path(put, path = concat!($base, "/{namespace}/{name}"), tag = $tag,
            params(("namespace" = String, Path), ("name" = String, Path)),
            request_body(content = Object, description = "The new version (JSON request or YAML)"),
            responses((status = 200, description = "The new version", body = Object), (status = 400, body = ErrorBody),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
                (status = 413, body = ErrorBody)))]
        pub async fn $update(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(Named { namespace, name }): Path<Named>,
            headers: HeaderMap,
            body: Result<Bytes, BytesRejection>,
        ) -> ApiResult<Json<Value>> {
            do_put(app, caller, $kind, namespace, Some(name), headers, body).await
        }

        #[utoipa::path(delete, path = concat!($base, "/{namespace}/{name}"), tag = $tag,
            params(("namespace" = String, Path), ("name" = String, Path)),
            responses((status = 200, body = Object), (status = 401, body = ErrorBody),
                (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
        pub async fn $delete(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(Named { namespace, name }): Path<Named>,
        ) -> ApiResult<Json<Value>> {
            do_delete(app, caller, $kind, namespace, name).await
        }

        #[utoipa::path(get, path = concat!($base, "/{namespace}/{name}/versions"), tag = $tag,
            params(("namespace" = String, Path), ("name" = String, Path)),
            responses((status = 200, body = VersionList), (status = 401, body = ErrorBody),
                (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
        pub async fn $versions(
            State(app): State<Arc<App>>,
            Extension(caller): Extension<Caller>,
            Path(Named { namespace, name }): Path<Named>,
        ) -> ApiResult<Json<VersionList>> {
            do_versions(app, caller, $kind, namespace, name).await
        }
    };
}

namespaced!(
    Kind::WorkflowTemplate,
    "/api/v1/workflow-templates",
    "templates",
    list_templates,
    create_template,
    get_template,
    update_template,
    delete_template,
    template_versions,
    lint_template
);
namespaced!(
    Kind::CronWorkflow,
    "/api/v1/cron-workflows",
    "cron",
    list_crons,
    create_cron,
    get_cron,
    update_cron,
    delete_cron,
    cron_versions,
    lint_cron
);

const CLUSTER: Kind = Kind::ClusterWorkflowTemplate;

#[utoipa::path(get, path = "/api/v1/cluster-workflow-templates", tag = "templates",
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorBody)))]
pub async fn list_cluster(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TemplateList>> {
    do_list(app, caller, CLUSTER, String::new()).await
}

#[utoipa::path(post, path = "/api/v1/cluster-workflow-templates", tag = "templates",
    request_body(content = Object, description = "Argo's JSON request, or the YAML document"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create_cluster(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    do_put(app, caller, CLUSTER, String::new(), None, headers, body).await
}

#[utoipa::path(get, path = "/api/v1/cluster-workflow-templates/{name}", tag = "templates",
    params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_cluster(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    do_get(app, caller, CLUSTER, String::new(), name, q.version).await
}

#[utoipa::path(put, path = "/api/v1/cluster-workflow-templates/{name}", tag = "templates",
    params(("name" = String, Path)), request_body(content = Object, description = "The new version"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn update_cluster(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    do_put(
        app,
        caller,
        CLUSTER,
        String::new(),
        Some(name),
        headers,
        body,
    )
    .await
}

#[utoipa::path(delete, path = "/api/v1/cluster-workflow-templates/{name}", tag = "templates",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_cluster(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    do_delete(app, caller, CLUSTER, String::new(), name).await
}

#[utoipa::path(post, path = "/api/v1/cluster-workflow-templates/lint", tag = "templates",
    request_body(content = Object, description = "Argo's JSON request, or the YAML document"),
    responses((status = 200, description = "The document, as creating it would store it (nothing is stored)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn lint_cluster(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    do_lint(app, caller, CLUSTER, String::new(), headers, body).await
}

#[utoipa::path(get, path = "/api/v1/cluster-workflow-templates/{name}/versions", tag = "templates",
    params(("name" = String, Path)),
    responses((status = 200, body = VersionList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cluster_versions(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<VersionList>> {
    do_versions(app, caller, CLUSTER, String::new(), name).await
}

// ---------------------------------------------------------------------------------------------
// submitting from a template

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitRequest {
    /// WorkflowTemplate (default) or ClusterWorkflowTemplate.
    #[serde(default)]
    resource_kind: Option<String>,
    resource_name: String,
    #[serde(default)]
    submit_options: SubmitOptions,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubmitOptions {
    /// `NAME=VALUE` overrides of the template's arguments.
    #[serde(default)]
    parameters: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    /// `k=v,k2=v2` labels for the run.
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    entry_point: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/workflows/{namespace}/submit", tag = "workflows",
    params(("namespace" = String, Path)), request_body = SubmitRequest,
    responses((status = 200, description = "The accepted run", body = Object), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn submit_from(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    ns_ok(&namespace)?;
    require(&caller, &namespace, Role::Editor)?;
    let req: SubmitRequest = parse_json(&body_bytes(body)?)?;
    // the kind, by any name Argo's server takes for it (the argo CLI sends what its user typed:
    // `--from workflowtemplate/X`, `cronwf/X`…)
    let kind = match req.resource_kind.as_deref().unwrap_or("WorkflowTemplate") {
        "WorkflowTemplate" | "workflowtemplate" | "workflowtemplates" | "wftmpl" => {
            Kind::WorkflowTemplate
        }
        "ClusterWorkflowTemplate"
        | "clusterworkflowtemplate"
        | "clusterworkflowtemplates"
        | "cwftmpl" => Kind::ClusterWorkflowTemplate,
        "CronWorkflow" | "cronworkflow" | "cronworkflows" | "cronwf" | "cwf" => Kind::CronWorkflow,
        k => {
            return Err(ApiError::bad_request(format!(
                "resourceKind `{k}` cannot be submitted (WorkflowTemplate, \
                 ClusterWorkflowTemplate or CronWorkflow)"
            )));
        }
    };
    let opts = req.submit_options;
    let ps = params(&opts.parameters)?;
    let mut labels = serde_json::Map::new();
    let label = match kind {
        Kind::ClusterWorkflowTemplate => "workflows.argoproj.io/cluster-workflow-template",
        Kind::CronWorkflow => "workflows.argoproj.io/cron-workflow",
        _ => "workflows.argoproj.io/workflow-template",
    };
    labels.insert(label.into(), json!(req.resource_name));
    for kv in opts
        .labels
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| ApiError::bad_request(format!("label `{kv}` is not k=v")))?;
        labels.insert(k.trim().into(), json!(v.trim()));
    }
    let generate = opts
        .generate_name
        .clone()
        .unwrap_or_else(|| format!("{}-", req.resource_name));
    let name = opts.name;
    let resource = req.resource_name;
    let entry_point = opts.entry_point;
    app.db(move |app, store| {
        let scope = scope(kind, &namespace);
        let Some(rec) = store.template(kind.as_str(), &scope, &resource, None)? else {
            return Err(ApiError::not_found(format!(
                "{} `{resource}` not found",
                kind.as_str()
            )));
        };
        // a template is referenced (the run records its version); a CronWorkflow's workflow
        // is its `workflowSpec`, run now as its schedule would run it
        let mut spec = if kind == Kind::CronWorkflow {
            let cron = to_json(&rec)?;
            if let Some(meta) = cron["spec"]
                .get("workflowMetadata")
                .and_then(Value::as_object)
            {
                for (k, v) in meta
                    .get("labels")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    labels.entry(k.clone()).or_insert(v.clone());
                }
            }
            cron["spec"]["workflowSpec"].clone()
        } else {
            json!({"workflowTemplateRef": {"name": resource,
                "clusterScope": kind == Kind::ClusterWorkflowTemplate}})
        };
        if let Some(e) = &entry_point {
            spec["entrypoint"] = json!(e);
        }
        let doc = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"generateName": generate, "namespace": namespace, "labels": labels},
            "spec": spec,
        });
        let src = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let mut diags = weir_core::diag::Diags::new("submission");
        let main = weir_core::load::load_str(&src, &mut diags);
        invalid(&diags)?;
        submit(app, store, main, ps, name).map(Json)
    })
    .await
}

/// Accepts the Workflow of `main` in its namespace with the stored templates as its library,
/// recording their versions on the run.
pub fn submit(
    app: &Arc<App>,
    store: &mut Store,
    main: Loaded,
    ps: Vec<(String, String)>,
    name: Option<String>,
) -> ApiResult<Value> {
    let sub = prepare(app, store, main, ps, name)?;
    accept(app, store, sub)
}

/// The submission of the Workflow of `main`, checked as accepting it would check it.
pub fn prepare(
    app: &Arc<App>,
    store: &mut Store,
    main: Loaded,
    ps: Vec<(String, String)>,
    name: Option<String>,
) -> ApiResult<weir_core::run::Submission> {
    let mut wf = files::pick_workflow(&main, std::path::Path::new("request body"))?;
    let namespace = wf
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let (lib, versions) = library(store, &namespace)?;
    if !versions.is_empty() {
        wf.metadata
            .annotations
            .insert(VERSIONS_ANNOTATION.into(), versions);
    }
    if let Some(repo) = &app.opts.artifact_repository {
        wf.metadata
            .annotations
            .entry("weir.dev/artifact-repository".into())
            .or_insert_with(|| repo.clone());
    }
    // a taken `metadata.name` is a conflict, as in Argo (a retried POST must not make a second
    // run); only `generateName` draws a fresh name
    let name = name.or_else(|| wf.metadata.name.clone());
    let mut sub = files::submission(store, wf, &main, &lib, ps, name)?;
    let executor =
        crate::record::executor_for(&sub, app.env.executor, true).map_err(ApiError::bad_request)?;
    crate::record::annotate(&mut sub, None, executor);
    Ok(sub)
}
