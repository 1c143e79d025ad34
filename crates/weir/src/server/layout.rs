//! The run graph the web UI draws, laid out here: nodes in layers (longest path from the root),
//! ordered within a layer by the mean position of their predecessors, edges as the UI draws them
//! (a DAG's dependencies, a steps template's groups in sequence, otherwise parent → child).
//!
//! Groups with many members (a loop's fan-out, a very wide DAG) are collapsed into one node that
//! counts its members by phase, so a 5,000-node run is a graph of a few dozen boxes; the members
//! are listed (virtualised) in the UI's side panel.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use utoipa::ToSchema;
use weir_core::run::{Node, NodeType, Run};

/// Children beyond this many are collapsed into a group node.
pub const COLLAPSE_OVER: usize = 24;

pub const NODE_W: f64 = 170.0;
pub const NODE_H: f64 = 38.0;
const GAP_X: f64 = 24.0;
const GAP_Y: f64 = 56.0;

#[derive(Debug, Serialize, ToSchema)]
pub struct Graph {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Members of each collapsed group: group id → node ids.
    pub groups: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphNode {
    /// The node id, or `group:PARENT` for a collapsed group.
    pub id: String,
    pub label: String,
    pub phase: String,
    #[serde(rename = "type")]
    pub node_type: String,
    pub x: f64,
    pub y: f64,
    /// Members by phase, for a collapsed group.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
}

/// Task names a `depends` expression or `dependencies` list mentions.
fn mentioned(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .filter(|t| !t.is_empty())
        .map(|t| t.split('.').next().unwrap_or(t).to_string())
        .collect()
}

/// The dependencies of each task of the DAG template `name`: task → tasks it waits for.
fn dag_deps(run: &Run, template: &str) -> HashMap<String, Vec<String>> {
    let sub = run.submission();
    let all = sub
        .workflow
        .spec
        .templates
        .iter()
        .chain(sub.library.iter().flat_map(|d| d.spec.templates.iter()));
    let mut out = HashMap::new();
    if let Some(dag) = all
        .filter(|t| t.name == template)
        .find_map(|t| t.dag.as_ref())
    {
        for t in &dag.tasks {
            let mut deps: Vec<String> = t.dependencies.clone();
            if let Some(d) = &t.depends {
                deps.extend(mentioned(d));
            }
            deps.retain(|d| dag.tasks.iter().any(|x| x.name == *d));
            deps.dedup();
            out.insert(t.name.clone(), deps);
        }
    }
    out
}

/// The DAG task a child node stands for: its display name up to a loop's `(…)`.
fn task_name(n: &Node) -> &str {
    n.display_name
        .split_once('(')
        .map(|(a, _)| a)
        .unwrap_or(&n.display_name)
}

pub fn layout(run: &Run) -> Graph {
    let nodes = run.nodes();
    // which nodes are drawn: hidden members map to their group
    let mut rep: Vec<Option<String>> = vec![None; nodes.len()];
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut group_nodes: Vec<(String, usize)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(g) = rep[i].clone() {
            // descendants of a collapsed member belong to the same group
            for &c in &n.children {
                rep[c] = Some(g.clone());
            }
            continue;
        }
        if n.children.len() > COLLAPSE_OVER {
            let gid = format!("group:{}", n.id);
            group_nodes.push((gid.clone(), i));
            for &c in &n.children {
                rep[c] = Some(gid.clone());
            }
        }
    }
    // nodes are made after their parents, so one pass in index order reached every descendant
    for (i, r) in rep.iter().enumerate() {
        if let Some(g) = r {
            groups
                .entry(g.clone())
                .or_default()
                .push(nodes[i].id.clone());
        }
    }
    let drawn = |i: usize| rep[i].clone().unwrap_or_else(|| nodes[i].id.clone());

    let mut edges: Vec<(String, String)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if rep[i].is_some() {
            continue;
        }
        match n.node_type {
            NodeType::DAG if n.children.len() <= COLLAPSE_OVER => {
                let deps = dag_deps(run, &n.template);
                let by_task: HashMap<&str, Vec<usize>> =
                    n.children.iter().fold(HashMap::new(), |mut m, &c| {
                        m.entry(task_name(&nodes[c])).or_default().push(c);
                        m
                    });
                for &c in &n.children {
                    let waits: Vec<usize> = deps
                        .get(task_name(&nodes[c]))
                        .into_iter()
                        .flatten()
                        .filter_map(|d| by_task.get(d.as_str()))
                        .flatten()
                        .copied()
                        .collect();
                    if waits.is_empty() {
                        edges.push((n.id.clone(), drawn(c)));
                    }
                    for w in waits {
                        edges.push((drawn(w), drawn(c)));
                    }
                }
            }
            NodeType::Steps => {
                // groups in sequence: each step of a group leads to the next group
                let groups: Vec<usize> = n.children.clone();
                if let Some(&first) = groups.first() {
                    edges.push((n.id.clone(), drawn(first)));
                }
                for w in groups.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    let members = &nodes[a].children;
                    if members.is_empty() || members.len() > COLLAPSE_OVER {
                        edges.push((drawn(a), drawn(b)));
                    } else {
                        for &m in members {
                            edges.push((drawn(m), drawn(b)));
                        }
                    }
                }
            }
            _ => {
                for &c in &n.children {
                    edges.push((n.id.clone(), drawn(c)));
                }
            }
        }
    }
    for (gid, parent) in &group_nodes {
        edges.push((drawn(*parent), gid.clone()));
    }
    edges.sort();
    edges.dedup();
    edges.retain(|(a, b)| a != b);

    // the drawn boxes, in node order (groups right after their parent)
    let mut boxes: Vec<GraphNode> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if rep[i].is_some() {
            continue;
        }
        boxes.push(GraphNode {
            id: n.id.clone(),
            label: n.display_name.clone(),
            phase: n.phase.as_str().to_string(),
            node_type: format!("{:?}", n.node_type),
            x: 0.0,
            y: 0.0,
            counts: BTreeMap::new(),
        });
        for (gid, _) in group_nodes.iter().filter(|(_, p)| *p == i) {
            let members = &groups[gid];
            let mut counts = BTreeMap::new();
            for id in members {
                if let Some(m) = run.node_by_id(id) {
                    *counts.entry(m.phase.as_str().to_string()).or_insert(0) += 1;
                }
            }
            boxes.push(GraphNode {
                id: gid.clone(),
                label: format!("{} nodes", members.len()),
                phase: group_phase(&counts),
                node_type: "Group".into(),
                x: 0.0,
                y: 0.0,
                counts,
            });
        }
    }

    // layers: longest path from a root, in topological order (edges only go to later boxes
    // except between groups, which a visited bound keeps finite)
    let index: HashMap<&str, usize> = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i))
        .collect();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); boxes.len()];
    for (a, b) in &edges {
        if let (Some(&x), Some(&y)) = (index.get(a.as_str()), index.get(b.as_str())) {
            preds[y].push(x);
        }
    }
    let mut layer = vec![0usize; boxes.len()];
    for _ in 0..boxes.len().min(64) {
        let mut changed = false;
        for y in 0..boxes.len() {
            for &x in &preds[y] {
                if layer[x] + 1 > layer[y] && layer[x] + 1 < boxes.len() {
                    layer[y] = layer[x] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let depth = layer.iter().copied().max().map_or(0, |d| d + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        rows[l].push(i);
    }
    // order within a layer by the mean position of predecessors (two sweeps)
    let mut pos = vec![0.0f64; boxes.len()];
    for row in &rows {
        for (k, &i) in row.iter().enumerate() {
            pos[i] = k as f64;
        }
    }
    for _ in 0..2 {
        for row in rows.iter_mut().skip(1) {
            let key = |i: &usize| {
                let p = &preds[*i];
                if p.is_empty() {
                    pos[*i]
                } else {
                    p.iter().map(|&x| pos[x]).sum::<f64>() / p.len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize)> = row.iter().map(|i| (key(i), *i)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *row = keyed.into_iter().map(|(_, i)| i).collect();
            for (k, &i) in row.iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(0) as f64;
    let width = (widest * (NODE_W + GAP_X) + GAP_X).max(NODE_W + 2.0 * GAP_X);
    for (l, row) in rows.iter().enumerate() {
        let row_w = row.len() as f64 * (NODE_W + GAP_X) - GAP_X;
        let left = (width - row_w) / 2.0;
        for (k, &i) in row.iter().enumerate() {
            boxes[i].x = left + k as f64 * (NODE_W + GAP_X);
            boxes[i].y = GAP_Y / 2.0 + l as f64 * (NODE_H + GAP_Y);
        }
    }
    Graph {
        width,
        height: depth as f64 * (NODE_H + GAP_Y),
        nodes: boxes,
        edges: edges
            .into_iter()
            .map(|(from, to)| GraphEdge { from, to })
            .collect(),
        groups,
    }
}

/// A group's colour: failed if any member failed, running while any runs, else the majority.
fn group_phase(counts: &BTreeMap<String, usize>) -> String {
    for p in ["Failed", "Error", "Running", "Pending"] {
        if counts.get(p).copied().unwrap_or(0) > 0 {
            return p.to_string();
        }
    }
    counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| "Pending".into())
}
