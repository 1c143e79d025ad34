//! Live updates: drivers publish what changed after each batch of events (a run's phase, the
//! nodes whose phase or message changed), watchers (SSE streams) read them in order.
//!
//! Every event has an id, increasing for the life of the process and starting from the clock
//! (milliseconds × 1000) so that ids from an earlier server process are smaller. A watcher that
//! reconnects with `Last-Event-ID` gets what it missed from a ring of recent events; if that is
//! gone (it fell too far behind, or the server restarted) it gets a snapshot of each run instead,
//! so it never misses a phase: only intermediate phases can be folded into the snapshot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;
use weir_core::run::{Phase, Run};

use crate::driver::Watch;
use crate::show;
use crate::show::mask_value;

/// How many recent events a reconnecting watcher can catch up from.
const RING: usize = 200_000;

#[derive(Clone)]
pub struct Event {
    pub id: u64,
    pub namespace: Arc<str>,
    pub run: Arc<str>,
    /// The SSE data: `{"type":"MODIFIED"|"SNAPSHOT"|"DELETED", "run", "namespace", "phase", "nodes": […]}`.
    pub data: Arc<str>,
}

struct Inner {
    next_id: u64,
    ring: VecDeque<Event>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    /// Per namespace, the id of its newest event: watchers wait for theirs to change, so a
    /// change wakes only the watchers of its namespace.
    latest: Mutex<HashMap<Arc<str>, watch::Sender<u64>>>,
}

impl Hub {
    pub fn new(now_ms: i64) -> Hub {
        let first = (now_ms.max(0) as u64) * 1000;
        Hub {
            inner: Mutex::new(Inner {
                next_id: first,
                ring: VecDeque::new(),
            }),
            latest: Mutex::new(HashMap::new()),
        }
    }

    pub fn publish(&self, namespace: &str, run: &str, data: Value) {
        let ns: Arc<str> = namespace.into();
        let id = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let id = g.next_id;
            g.next_id += 1;
            if g.ring.len() == RING {
                g.ring.pop_front();
            }
            g.ring.push_back(Event {
                id,
                namespace: ns.clone(),
                run: run.into(),
                data: data.to_string().into(),
            });
            id
        };
        if let Some(tx) = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ns)
        {
            tx.send_replace(id);
        }
    }

    /// Wakes when an event of `namespace` is published.
    pub fn subscribe(&self, namespace: &str) -> watch::Receiver<u64> {
        let mut m = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(namespace.into())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The id of the newest event (a watcher starting now resumes after it).
    pub fn latest(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.next_id - 1
    }

    /// Events after `after` that `keep` accepts, and the id of the newest event looked at (where
    /// the next call should start); `None` if some of them have left the ring.
    pub fn since(&self, after: u64, keep: impl Fn(&Event) -> bool) -> Option<(Vec<Event>, u64)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = g.ring.front().map(|e| e.id).unwrap_or(g.next_id);
        if after + 1 < first && after + 1 < g.next_id {
            return None;
        }
        let start = g.ring.partition_point(|e| e.id <= after);
        let evs = g.ring.range(start..).filter(|e| keep(e)).cloned().collect();
        Some((evs, after.max(g.next_id - 1)))
    }
}

/// A whole run as one event's data.
pub fn snapshot(run: &Run) -> Value {
    let sub = run.submission();
    json!({
        "type": "SNAPSHOT",
        "namespace": sub.namespace,
        "run": sub.name,
        "phase": run.phase().as_str(),
        "message": run.message(),
        "finishedAt": run.finished_at().map(weir_core::run::rfc3339_pub),
        "nodes": run.nodes().iter().map(|n| show::node_json(n, run)).collect::<Vec<_>>(),
    })
}

/// Publishes a driven run's changes: the driver's [`Watch`].
pub struct HubWatch {
    hub: Arc<Hub>,
    metrics: Arc<super::metrics::Metrics>,
    phase: Option<Phase>,
    /// node index → (phase, message length) last published
    nodes: Vec<(Phase, usize)>,
    secrets: Vec<String>,
}

impl HubWatch {
    pub fn new(hub: Arc<Hub>, metrics: Arc<super::metrics::Metrics>) -> HubWatch {
        HubWatch {
            hub,
            metrics,
            phase: None,
            nodes: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

impl Watch for HubWatch {
    fn wants_logs(&self) -> bool {
        false
    }
    fn log(&mut self, _: &Run, _: &str, _: &str) {}
    fn update(&mut self, run: &Run) {
        if self.phase.is_none() {
            self.secrets = run.secret_values();
        }
        let mut changed = Vec::new();
        for (i, n) in run.nodes().iter().enumerate() {
            let now = (n.phase, n.message.len());
            let before = self.nodes.get(i).copied();
            if before != Some(now) {
                changed.push(show::node_json(n, run));
                if before.map(|b| b.0) != Some(n.phase) {
                    let t = format!("{:?}", n.node_type);
                    self.metrics
                        .node_phase(&t, before.map(|b| b.0.as_str()), n.phase.as_str());
                    if n.node_type == weir_core::run::NodeType::Pod
                        && n.phase.is_done()
                        && let (Some(s), Some(f)) = (n.started_at, n.finished_at)
                    {
                        self.metrics.task_finished((f - s).max(0) as f64 / 1000.0);
                    }
                }
                if i < self.nodes.len() {
                    self.nodes[i] = now;
                } else {
                    self.nodes.push(now);
                }
            }
        }
        if changed.is_empty() && self.phase == Some(run.phase()) {
            return;
        }
        self.phase = Some(run.phase());
        let sub = run.submission();
        let mut data = json!({
            "type": "MODIFIED",
            "namespace": sub.namespace,
            "run": sub.name,
            "phase": run.phase().as_str(),
            "message": run.message(),
            "finishedAt": run.finished_at().map(weir_core::run::rfc3339_pub),
            "nodes": changed,
        });
        if !self.secrets.is_empty() {
            data = mask_value(data, &self.secrets);
        }
        self.hub.publish(&sub.namespace, &sub.name, data);
    }
    fn tick(&mut self, _: &Run) {}
    fn note(&mut self, _: &str) {}
    fn finish(&mut self, run: &Run) {
        self.update(run);
        // the gauge counts the nodes of runs being driven: this one is done
        for (n, (phase, _)) in run.nodes().iter().zip(&self.nodes) {
            self.metrics
                .node_gone(&format!("{:?}", n.node_type), phase.as_str());
        }
    }
}
