//! What a run did, beyond its Workflow: its laid-out graph, its event log and its metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::App;
use super::auth::{Caller, Role};
use super::error::{ApiResult, ErrorBody};
use super::layout::Graph;
use super::request::*;
use crate::show;
use crate::show::mask_value;

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/graph", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The run's graph, laid out (large groups collapsed)", body = Graph),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn workflow_graph(
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
pub(super) async fn run_events(
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
pub(super) async fn run_metrics(
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
