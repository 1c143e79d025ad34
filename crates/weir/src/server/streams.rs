//! Logs and events as they happen: the log lines of a run (text, or followed as SSE) and the
//! workflow event stream of a namespace.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as Sse_, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use weir_store::RunQuery;

use super::App;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::hub;
use super::request::*;
use crate::driver::load_run;
use crate::show;
use crate::show::mask_value;

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
    /// Without `nodeId` or `follow`, the log is Argo's: a `{"result": {"content", "podName"}}`
    /// object per line (JSON lines, or `data:` lines of an event stream where the request
    /// accepts `text/event-stream`), read with Argo's parameters: this one the pod (node id,
    /// name or display name); all without it.
    pod_name: Option<String>,
    /// `main` (the default): the task's own lines; a sidecar's or init container's name: its
    /// lines.
    #[serde(rename = "logOptions.container")]
    #[param(rename = "logOptions.container")]
    container: Option<String>,
    /// `true`: lines as they come, until the run (or the pod) ends.
    #[serde(rename = "logOptions.follow")]
    #[param(rename = "logOptions.follow")]
    argo_follow: Option<String>,
    /// The last N lines of each pod.
    #[serde(rename = "logOptions.tailLines")]
    #[param(rename = "logOptions.tailLines")]
    tail_lines: Option<String>,
    /// Refused unless 0: weir keeps no time per log line.
    #[serde(rename = "logOptions.sinceSeconds")]
    #[param(rename = "logOptions.sinceSeconds")]
    since_seconds: Option<String>,
    /// Refused (true): weir keeps no time per log line.
    #[serde(rename = "logOptions.timestamps")]
    #[param(rename = "logOptions.timestamps")]
    timestamps: Option<String>,
    /// Only lines matching this regular expression.
    grep: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workflows/{namespace}/{name}/log", tag = "workflows",
    params(("namespace" = String, Path), ("name" = String, Path), LogQuery),
    responses((status = 200, description = "Log lines (text/plain), or an event stream with follow=true", content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn workflow_logs(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(Named { namespace, name }): Path<Named>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    require(&caller, &namespace, Role::Viewer)?;
    if q.node_id.is_none() && q.follow.is_none() {
        let opts = super::argo::LogOptions {
            pod: q.pod_name,
            container: q.container,
            follow: q.argo_follow,
            tail_lines: q.tail_lines,
            since_seconds: q.since_seconds,
            timestamps: q.timestamps,
            grep: q.grep,
        };
        return super::argo::logs(app, namespace, name, opts, &headers).await;
    }
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

// ---------------------------------------------------------------------------------------------
// live updates

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this run; it begins with a `SNAPSHOT` of the run.
    name: Option<String>,
    /// Argo's watch (what `argo submit --watch`, `argo watch` and `argo wait` read): with it,
    /// the stream is `{"result": {"type": "ADDED|MODIFIED|DELETED", "object": Workflow}}` per
    /// change (`data:` lines for an event-stream client, else JSON lines), of the run this
    /// selects (`metadata.name=NAME`), else of every run of the namespace, beginning with an
    /// `ADDED` of the run (of each unfinished run).
    #[serde(rename = "listOptions.fieldSelector")]
    #[param(rename = "listOptions.fieldSelector")]
    field_selector: Option<String>,
    /// Accepted with Argo's watch and not needed: it begins with the runs as they are.
    #[serde(rename = "listOptions.resourceVersion")]
    #[param(rename = "listOptions.resourceVersion")]
    resource_version: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workflow-events/{namespace}", tag = "workflows",
    params(("namespace" = String, Path), EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-Sent Events: `workflow` events whose data is {type: SNAPSHOT|MODIFIED|DELETED, namespace, run, phase, message, nodes}; with listOptions.*, Argo's watch: {result: {type: ADDED|MODIFIED|DELETED, object: Workflow}} per change", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn workflow_events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require(&caller, &namespace, Role::Viewer)?;
    if q.field_selector.is_some() || q.resource_version.is_some() {
        let only = match q.field_selector.as_deref().unwrap_or_default().trim() {
            "" => None,
            s => Some(
                s.strip_prefix("metadata.name==")
                    .or_else(|| s.strip_prefix("metadata.name="))
                    .filter(|n| !n.contains(','))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "listOptions.fieldSelector: weir watches one run \
                             (metadata.name=NAME) or all, not `{s}`"
                        ))
                    })?
                    .to_string(),
            ),
        };
        return super::argo::watch(app, namespace, only, &headers).await;
    }
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
                return Some((Ok::<_, Infallible>(e), st));
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
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

pub(super) fn sse_event(e: &hub::Event) -> Sse_ {
    Sse_::default()
        .event("workflow")
        .id(e.id.to_string())
        .data(&*e.data)
}
