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

/// Argo's parameters of a log request (see `streams::LogQuery`).
pub(super) struct LogOptions {
    pub pod: Option<String>,
    pub container: Option<String>,
    pub follow: Option<String>,
    pub tail_lines: Option<String>,
    pub since_seconds: Option<String>,
    pub timestamps: Option<String>,
    pub grep: Option<String>,
}

/// What lines of which pods a log request wants.
struct LogFilter {
    pod: Option<String>,
    /// None: the task's own lines (`main`); Some(name): a sidecar's or init container's.
    container: Option<String>,
    grep: Option<regex::Regex>,
}

impl LogFilter {
    /// The line's content if the request wants it: the task's own lines, or those a container
    /// beside it wrote (`[NAME] …`, the prefix taken off).
    fn keep(&self, line: &str, beside: &[String]) -> Option<String> {
        let prefixed = beside
            .iter()
            .find_map(|n| line.strip_prefix(&format!("[{n}] ")).map(|rest| (n, rest)));
        let content = match (&self.container, prefixed) {
            (None, None) => line,
            (Some(want), Some((n, rest))) if want == n => rest,
            _ => return None,
        };
        match &self.grep {
            Some(rx) if !rx.is_match(content) => None,
            _ => Some(content.to_string()),
        }
    }
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The names of the containers beside each pod node's task (sidecars and init containers),
/// whose lines its log carries with their name.
fn beside_names(run: &weir_core::run::Run) -> std::collections::HashMap<String, Vec<String>> {
    let sub = run.submission();
    let templates: Vec<&weir_core::spec::Template> = sub
        .workflow
        .spec
        .templates
        .iter()
        .chain(sub.library.iter().flat_map(|d| d.spec.templates.iter()))
        .collect();
    run.nodes()
        .iter()
        .map(|n| {
            let names = templates
                .iter()
                .find(|t| t.name == n.template)
                .map(|t| {
                    t.sidecars
                        .iter()
                        .chain(&t.init_containers)
                        .filter_map(|c| c.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            (n.id.clone(), names)
        })
        .collect()
}

/// A run's log as the Argo Server serves it: one `{"result": {"content", "podName"}}` per line,
/// as JSON lines, or as `data:` lines of an event stream where the request accepts
/// `text/event-stream` (the argo CLI's HTTP/1 client does); followed until the run (or the
/// pod) ends with `logOptions.follow=true`.
pub(super) async fn logs(
    app: std::sync::Arc<super::App>,
    namespace: String,
    name: String,
    o: LogOptions,
    headers: &axum::http::HeaderMap,
) -> super::error::ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    if o.since_seconds.as_deref().is_some_and(|s| s != "0") {
        return Err(ApiError::bad_request(
            "logOptions.sinceSeconds: weir keeps no time per log line; read the whole log or \
             its last lines (logOptions.tailLines)",
        ));
    }
    if truthy(&o.timestamps) {
        return Err(ApiError::bad_request(
            "logOptions.timestamps: weir keeps no time per log line",
        ));
    }
    let tail = match o.tail_lines.as_deref() {
        None | Some("") => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("logOptions.tailLines: `{t}` is not a count"))
        })?),
    };
    let grep = match o.grep.as_deref().filter(|g| !g.is_empty()) {
        None => None,
        Some(g) => Some(regex::Regex::new(g).map_err(|e| {
            ApiError::bad_request(format!("grep: `{g}` is not a regular expression: {e}"))
        })?),
    };
    let filter = std::sync::Arc::new(LogFilter {
        pod: o.pod.filter(|p| !p.is_empty()),
        container: o.container.filter(|c| !c.is_empty() && c != "main"),
        grep,
    });
    let sse = wants_sse(headers);
    let follow = truthy(&o.follow);
    // one poll: the lines written since `offsets`, and whether no more will come
    let poll = {
        let (app, filter) = (app.clone(), filter.clone());
        move |offsets: std::collections::HashMap<String, u64>, first: bool| {
            let (app, filter, namespace, name) =
                (app.clone(), filter.clone(), namespace.clone(), name.clone());
            async move {
                app.db(move |app, store| {
                    let run = super::request::find_run(store, &namespace, &name)?;
                    let want = filter.pod.as_deref();
                    if let Some(w) = want
                        && crate::show::log_nodes(&run, Some(w)).is_empty()
                    {
                        return Err(ApiError::not_found(format!("run {name} has no pod `{w}`")));
                    }
                    let mut offsets = offsets;
                    let beside = beside_names(&run);
                    let entries = crate::show::new_log_entries(
                        &app.env.work_root(),
                        &run,
                        want,
                        &mut offsets,
                    );
                    let mut lines: Vec<(String, String)> = entries
                        .into_iter()
                        .filter_map(|e| {
                            let names = beside.get(&e.node_id).map_or(&[][..], |v| &v[..]);
                            filter.keep(&e.line, names).map(|c| (e.node_id, c))
                        })
                        .collect();
                    if first && let Some(n) = tail {
                        let mut kept = Vec::new();
                        let mut by_pod: std::collections::HashMap<&str, usize> = Default::default();
                        for (pod, _) in lines.iter().rev() {
                            *by_pod.entry(pod).or_default() += 1;
                        }
                        let mut seen: std::collections::HashMap<String, usize> = Default::default();
                        for (pod, c) in &lines {
                            let i = seen.entry(pod.clone()).or_default();
                            *i += 1;
                            if by_pod[pod.as_str()] - *i < n {
                                kept.push((pod.clone(), c.clone()));
                            }
                        }
                        lines = kept;
                    }
                    let done = run.phase().is_done()
                        || want.is_some_and(|w| {
                            let ns = crate::show::log_nodes(&run, Some(w));
                            !ns.is_empty() && ns.iter().all(|n| n.phase.is_done())
                        });
                    Ok((lines, offsets, done))
                })
                .await
            }
        }
    };
    let entry = move |pod: &str, content: &str| {
        frame(
            &serde_json::json!({"content": content, "podName": pod}),
            sse,
        )
    };
    let (first, offsets, done) = poll(Default::default(), true).await?;
    let first: Vec<String> = first.iter().map(|(p, c)| entry(p, c)).collect();
    if !follow || done {
        let ctype = if sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        return Ok(([(axum::http::header::CONTENT_TYPE, ctype)], first.concat()).into_response());
    }
    // followed: what there is, then each new line as it is written, until the end
    let stream = futures_util::stream::unfold(
        (std::collections::VecDeque::from(first), offsets, false),
        move |(mut queue, mut offsets, mut done)| {
            let poll = poll.clone();
            async move {
                loop {
                    if let Some(chunk) = queue.pop_front() {
                        return Some((
                            Ok::<_, std::convert::Infallible>(chunk),
                            (queue, offsets, done),
                        ));
                    }
                    if done {
                        return None;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    match poll(std::mem::take(&mut offsets), false).await {
                        Ok((lines, o, d)) => {
                            offsets = o;
                            done = d;
                            queue.extend(lines.iter().map(|(p, c)| entry(p, c)));
                        }
                        Err(_) => done = true,
                    }
                }
            }
        },
    );
    Ok(stream_body(stream, sse))
}

/// Whether the client reads an event stream (`data:` lines) rather than JSON lines.
fn wants_sse(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// A stream of grpc-gateway messages (see [`frame`]) as the response.
fn stream_body(
    stream: impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> + Send + 'static,
    sse: bool,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ctype = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    (
        [(axum::http::header::CONTENT_TYPE, ctype)],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A grpc-gateway stream message as its client reads it.
fn frame(result: &serde_json::Value, sse: bool) -> String {
    let line = serde_json::json!({ "result": result }).to_string();
    if sse {
        format!("data: {line}\n\n")
    } else {
        format!("{line}\n")
    }
}

/// Argo's watch of a namespace's workflows (or of the one named `only`): `ADDED` with each as it
/// is (the named run; else every unfinished one), then `MODIFIED` with the whole Workflow after
/// each change (several changes of a run in a moment are sent once), `DELETED` when it goes.
pub(super) async fn watch(
    app: std::sync::Arc<super::App>,
    namespace: String,
    only: Option<String>,
    headers: &axum::http::HeaderMap,
) -> super::error::ApiResult<axum::response::Response> {
    let sse = wants_sse(headers);
    let mut rx = app.hub.subscribe(&namespace);
    rx.mark_unchanged();
    let cursor = app.hub.latest();
    // the Workflow of each run named, as the API's GET answers it (secrets masked); None: gone
    let load = {
        let (app, namespace) = (app.clone(), namespace.clone());
        move |names: Vec<String>| {
            let (app, namespace) = (app.clone(), namespace.clone());
            async move {
                app.db(move |_, store| {
                    let mut out = Vec::new();
                    for n in names {
                        let wf = match super::request::find_run(store, &namespace, &n) {
                            Ok(run) => Some(crate::show::mask_value(
                                crate::show::run_json(&run),
                                &run.secret_values(),
                            )),
                            Err(e) if e.status == StatusCode::NOT_FOUND => None,
                            Err(e) => return Err(e),
                        };
                        out.push((n, wf));
                    }
                    Ok(out)
                })
                .await
            }
        }
    };
    let first: Vec<String> = match &only {
        Some(n) => vec![n.clone()],
        None => {
            let ns = namespace.clone();
            app.db(move |_, store| {
                Ok(store
                    .query_runs(&weir_store::RunQuery {
                        namespace: Some(ns),
                        phases: vec!["Running".into(), "Pending".into()],
                        limit: 1000,
                        ..Default::default()
                    })?
                    .0
                    .into_iter()
                    .map(|r| r.name)
                    .collect())
            })
            .await?
        }
    };
    let mut queue = std::collections::VecDeque::new();
    for (n, wf) in load(first).await? {
        match wf {
            Some(wf) => queue.push_back(frame(
                &serde_json::json!({"type": "ADDED", "object": wf}),
                sse,
            )),
            None => {
                return Err(ApiError::not_found(format!(
                    "workflow `{n}` not found in namespace `{namespace}`"
                )));
            }
        }
    }
    let ns: std::sync::Arc<str> = namespace.as_str().into();
    let stream = futures_util::stream::unfold(
        (queue, rx, cursor),
        move |(mut queue, mut rx, mut cursor)| {
            let (app, load, ns, only, namespace) = (
                app.clone(),
                load.clone(),
                ns.clone(),
                only.clone(),
                namespace.clone(),
            );
            async move {
                loop {
                    if let Some(f) = queue.pop_front() {
                        return Some((Ok::<_, std::convert::Infallible>(f), (queue, rx, cursor)));
                    }
                    rx.changed().await.ok()?;
                    rx.borrow_and_update();
                    let keep = |e: &super::hub::Event| {
                        e.namespace == ns && only.as_deref().is_none_or(|n| n == &*e.run)
                    };
                    let changed: Vec<String> = match app.hub.since(cursor, keep) {
                        Some((evs, upto)) => {
                            cursor = upto;
                            let mut names: Vec<String> =
                                evs.iter().map(|e| e.run.to_string()).collect();
                            names.sort();
                            names.dedup();
                            names
                        }
                        // fell behind the ring: every run it may have missed, as it is now
                        None => {
                            cursor = app.hub.latest();
                            only.iter().cloned().collect()
                        }
                    };
                    let Ok(loaded) = load(changed).await else {
                        return None;
                    };
                    for (n, wf) in loaded {
                        let result = match wf {
                            Some(wf) => serde_json::json!({"type": "MODIFIED", "object": wf}),
                            None => serde_json::json!({"type": "DELETED", "object": {
                                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                                "metadata": {"name": n, "namespace": namespace}}}),
                        };
                        queue.push_back(frame(&result, sse));
                    }
                }
            }
        },
    );
    Ok(stream_body(stream, sse))
}
