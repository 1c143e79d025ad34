//! `/metrics` in Prometheus' text format: API requests and their latencies, the runs in the
//! store by phase, the nodes of the runs this process drives by phase, task durations, queue
//! depth and executor slots in use, and the `metrics.prometheus` that workflows define.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::App;
use super::auth::{Caller, Role};
use super::error::ApiError;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const TASK_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    /// (node type, phase) → nodes now in it, over the runs this process drives.
    nodes: BTreeMap<(String, String), i64>,
    tasks: Histogram,
}

#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut g = self.lock();
        *g.requests
            .entry((method.to_string(), route.to_string(), status))
            .or_insert(0) += 1;
        g.latency
            .entry(route.to_string())
            .or_default()
            .observe(LATENCY_BUCKETS, took.as_secs_f64());
    }

    /// A node moved from `from` (None: it is new) to `to`.
    pub fn node_phase(&self, node_type: &str, from: Option<&str>, to: &str) {
        let mut g = self.lock();
        if let Some(f) = from {
            *g.nodes
                .entry((node_type.to_string(), f.to_string()))
                .or_insert(0) -= 1;
        }
        *g.nodes
            .entry((node_type.to_string(), to.to_string()))
            .or_insert(0) += 1;
    }

    pub fn node_gone(&self, node_type: &str, phase: &str) {
        let mut g = self.lock();
        *g.nodes
            .entry((node_type.to_string(), phase.to_string()))
            .or_insert(0) -= 1;
    }

    pub fn task_finished(&self, seconds: f64) {
        self.lock().tasks.observe(TASK_BUCKETS, seconds);
    }

    fn render(&self, runs: &[(String, i64)], driving: usize) -> String {
        let g = self.lock();
        let mut out = String::new();
        out.push_str("# HELP weir_runs Runs in the store by phase.\n# TYPE weir_runs gauge\n");
        for (phase, n) in runs {
            let _ = writeln!(out, "weir_runs{{phase=\"{phase}\"}} {n}");
        }
        out.push_str("# HELP weir_runs_driven Runs this process is driving now.\n# TYPE weir_runs_driven gauge\n");
        let _ = writeln!(out, "weir_runs_driven {driving}");
        out.push_str("# HELP weir_nodes Nodes of the runs this process drives, by type and phase.\n# TYPE weir_nodes gauge\n");
        for ((t, p), n) in &g.nodes {
            let _ = writeln!(out, "weir_nodes{{type=\"{t}\",phase=\"{p}\"}} {n}");
        }
        let pods = |phase: &str| {
            g.nodes
                .get(&("Pod".to_string(), phase.to_string()))
                .copied()
                .unwrap_or(0)
        };
        out.push_str(
            "# HELP weir_queue_depth Tasks waiting to start.\n# TYPE weir_queue_depth gauge\n",
        );
        let _ = writeln!(out, "weir_queue_depth {}", pods("Pending"));
        out.push_str("# HELP weir_executor_slots_in_use Tasks running.\n# TYPE weir_executor_slots_in_use gauge\n");
        let _ = writeln!(out, "weir_executor_slots_in_use {}", pods("Running"));
        out.push_str("# HELP weir_task_duration_seconds How long finished tasks ran.\n# TYPE weir_task_duration_seconds histogram\n");
        g.tasks
            .render(&mut out, "weir_task_duration_seconds", "", TASK_BUCKETS);
        out.push_str("# HELP weir_api_requests_total API requests by route and status.\n# TYPE weir_api_requests_total counter\n");
        for ((m, r, s), n) in &g.requests {
            let _ = writeln!(
                out,
                "weir_api_requests_total{{method=\"{m}\",route=\"{r}\",code=\"{s}\"}} {n}"
            );
        }
        out.push_str("# HELP weir_api_request_duration_seconds API request latency by route.\n# TYPE weir_api_request_duration_seconds histogram\n");
        for (r, h) in &g.latency {
            h.render(
                &mut out,
                "weir_api_request_duration_seconds",
                &format!("route=\"{r}\""),
                LATENCY_BUCKETS,
            );
        }
        out
    }
}

/// `/metrics`: the process's own metrics for anyone (a scraper needs no token); the metrics
/// that workflows define only for a caller who may view them: every namespace's for a global
/// viewer (or an `--insecure-local` server), one namespace's for a token of that namespace.
pub async fn serve(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    let token = super::request::bearer(&headers);
    let r = app
        .db(move |app, store| {
            let runs = store.count_by_phase()?;
            let caller = if app.opts.insecure_local {
                Some(Caller::Local)
            } else {
                match token {
                    Some(t) => Some(
                        app.verified
                            .check(store, &t, crate::ambient::now_ms(), None)
                            .map_err(|e| match e {
                                super::auth::Rejected::Unavailable(e) => ApiError::unavailable(e),
                                e => ApiError::unauthenticated(e.to_string()),
                            })?,
                    ),
                    None => None,
                }
            };
            let samples = match &caller {
                None => Vec::new(),
                Some(c) if c.is_global(Role::Viewer) => store.metrics()?,
                Some(Caller::Token { namespace, .. }) => store.metrics_in(namespace)?,
                Some(Caller::Local) => store.metrics()?,
            };
            let spec = crate::show::prometheus_text(
                &samples.into_iter().map(|(_, _, m)| m).collect::<Vec<_>>(),
            );
            let driving = app.driving.load(std::sync::atomic::Ordering::SeqCst);
            // PostgreSQL: the task queue's depth, by state (queued, running, done)
            let mut queue = String::new();
            if store.is_postgres() {
                queue.push_str("# HELP weir_queue_tasks Tasks in the PostgreSQL task queue by state.\n# TYPE weir_queue_tasks gauge\n");
                for (state, n) in store.queue_depth()? {
                    let _ = writeln!(queue, "weir_queue_tasks{{state=\"{state}\"}} {n}");
                }
            }
            Ok::<_, ApiError>(app.metrics.render(&runs, driving) + &queue + &spec)
        })
        .await;
    match r {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
