//! Lineage: which nodes produced an artifact and from what (upstream), or what used it
//! (downstream), across runs, from the edges the driver records as nodes finish.

use std::collections::HashSet;

use anyhow::Result;
use serde_json::{Value, json};
use weir_store::{LineageEdge, Store};

use crate::usage::Usage;

/// Where a lineage query starts.
pub enum Start {
    /// An artifact by its blake3 (a prefix of at least 8 hex digits).
    Digest(String),
    /// A node of a run (id, or display name), optionally one of its artifacts.
    Node {
        run: String,
        node: String,
        artifact: Option<String>,
    },
}

pub fn parse(target: &str) -> Result<Start> {
    if target.len() >= 8 && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Start::Digest(target.to_ascii_lowercase()));
    }
    let mut parts = target.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(run), Some(node), artifact) if !run.is_empty() && !node.is_empty() => {
            Ok(Start::Node {
                run: run.to_string(),
                node: node.to_string(),
                artifact: artifact.map(str::to_string),
            })
        }
        _ => Err(Usage(format!(
            "lineage: `{target}` is neither a blake3 digest (8+ hex digits) nor RUN/NODE[/ARTIFACT]"
        ))
        .into()),
    }
}

fn params(e: &LineageEdge) -> Value {
    let pairs: Vec<(String, String)> = serde_json::from_str(&e.params).unwrap_or_default();
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn node_json(e: &LineageEdge) -> Value {
    json!({"run": e.run, "node": e.node, "nodeName": e.node_name, "template": e.template,
        "parameters": params(e)})
}

/// The graph from `start` (only runs of `namespace`, when given): upstream (producers and their inputs) or downstream (consumers and
/// their outputs), as nested JSON.
pub fn query(
    store: &Store,
    start: &Start,
    upstream: bool,
    namespace: Option<&str>,
) -> Result<Value> {
    let mut seen = HashSet::new();
    match start {
        Start::Digest(d) => {
            let dir = if upstream { "out" } else { "in" };
            let mut edges = store.lineage_by_digest(d, dir, namespace)?;
            if edges.is_empty() {
                // an artifact nobody produced here (a fetched input) is still known as consumed
                edges =
                    store.lineage_by_digest(d, if upstream { "in" } else { "out" }, namespace)?;
            }
            let first = edges
                .first()
                .ok_or_else(|| Usage(format!("lineage: no artifact with digest {d}")))?;
            Ok(artifact(store, first, upstream, namespace, &mut seen)?)
        }
        Start::Node {
            run,
            node,
            artifact: which,
        } => {
            // the API's caller names a run of its namespace exactly; the CLI, any run its way
            let run = match namespace {
                Some(ns) => store
                    .run_key(ns, run)?
                    .ok_or_else(|| weir_store::Error::RunNotFound(run.clone()))?,
                None => store.resolve(run)?,
            };
            let loaded = crate::driver::load_run(store, &run)?;
            let id = loaded
                .nodes()
                .iter()
                .find(|n| n.id == *node || n.display_name == *node)
                .map(|n| n.id.clone())
                .ok_or_else(|| Usage(format!("lineage: run {run} has no node `{node}`")))?;
            if let Some(a) = which {
                let mut edges = store.lineage_of_node(&run, &id, "out")?;
                edges.extend(store.lineage_of_node(&run, &id, "in")?);
                let e = edges.iter().find(|e| e.artifact == *a).ok_or_else(|| {
                    Usage(format!(
                        "lineage: node `{node}` of {run} has no artifact `{a}`"
                    ))
                })?;
                return artifact(store, e, upstream, namespace, &mut seen);
            }
            let dir = if upstream { "in" } else { "out" };
            let edges = store.lineage_of_node(&run, &id, dir)?;
            let mut v = edges
                .first()
                .map(node_json)
                .unwrap_or_else(|| json!({"run": run, "node": id}));
            let key = if upstream { "inputs" } else { "outputs" };
            v[key] = Value::Array(
                edges
                    .iter()
                    .map(|e| artifact(store, e, upstream, namespace, &mut seen))
                    .collect::<Result<_>>()?,
            );
            Ok(v)
        }
    }
}

/// An artifact with the nodes that produced (upstream) or consumed (downstream) it.
fn artifact(
    store: &Store,
    e: &LineageEdge,
    upstream: bool,
    namespace: Option<&str>,
    seen: &mut HashSet<(String, String)>,
) -> Result<Value> {
    let mut v = json!({"artifact": e.artifact, "blake3": e.digest, "key": e.key});
    if let Some(u) = &e.url {
        v["fetchedFrom"] = json!(u);
    }
    let (dir, next, field) = if upstream {
        ("out", "in", "producedBy")
    } else {
        ("in", "out", "usedBy")
    };
    let mut nodes = Vec::new();
    for n in store.lineage_by_digest(&e.digest, dir, namespace)? {
        if !seen.insert((n.run.clone(), n.node.clone())) {
            continue;
        }
        let mut nv = node_json(&n);
        let further = store.lineage_of_node(&n.run, &n.node, next)?;
        nv[if upstream { "inputs" } else { "outputs" }] = Value::Array(
            further
                .iter()
                .map(|f| artifact(store, f, upstream, namespace, seen))
                .collect::<Result<_>>()?,
        );
        nodes.push(nv);
    }
    v[field] = Value::Array(nodes);
    Ok(v)
}

/// The graph as an indented tree.
pub fn text(v: &Value) -> String {
    let mut out = String::new();
    if v.get("artifact").is_some() {
        art_text(v, "", &mut out);
    } else {
        node_text(v, "", &mut out);
    }
    out
}

fn short(d: &str) -> &str {
    &d[..d.len().min(12)]
}

fn art_text(v: &Value, indent: &str, out: &mut String) {
    out.push_str(&format!(
        "{}  blake3:{}…",
        v["artifact"].as_str().unwrap_or(""),
        short(v["blake3"].as_str().unwrap_or(""))
    ));
    if let Some(u) = v["fetchedFrom"].as_str() {
        out.push_str(&format!("  fetched from {u}"));
    }
    out.push('\n');
    let (field, verb) = if v.get("producedBy").is_some() {
        ("producedBy", "produced by")
    } else {
        ("usedBy", "used by")
    };
    for n in v[field].as_array().into_iter().flatten() {
        out.push_str(&format!("{indent}└─ {verb} "));
        node_text(n, &format!("{indent}   "), out);
    }
}

fn node_text(v: &Value, indent: &str, out: &mut String) {
    let params: Vec<String> = v["parameters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
        .collect();
    out.push_str(&format!(
        "{}  [run {}, template {}]{}\n",
        v["nodeName"].as_str().or(v["node"].as_str()).unwrap_or(""),
        v["run"].as_str().unwrap_or(""),
        v["template"].as_str().unwrap_or(""),
        if params.is_empty() {
            String::new()
        } else {
            format!("  {}", params.join(" "))
        }
    ));
    for a in v["inputs"]
        .as_array()
        .or(v["outputs"].as_array())
        .into_iter()
        .flatten()
    {
        out.push_str(&format!("{indent}└─ "));
        art_text(a, &format!("{indent}   "), out);
    }
}
