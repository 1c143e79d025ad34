//! What the CLI prints: the node tree, `get`, `list`, `logs`, and JSON/YAML renderings.

use std::fmt::Write as _;

use serde_json::{Value, json};
use weir_core::run::{Millis, Node, NodeType, Phase, Run};
use weir_store::RunSummary;

pub fn icon(n: &Node) -> &'static str {
    match n.phase {
        Phase::Succeeded => "✔",
        Phase::Failed => "✖",
        Phase::Error => "⚠",
        Phase::Skipped | Phase::Omitted => "○",
        Phase::Running if n.node_type == NodeType::Suspend => "ǁ",
        Phase::Running => "●",
        Phase::Pending => "◷",
    }
}

pub fn duration(ms: Millis) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{}ms", ms.max(0))
    } else if s < 60 {
        format!("{}.{}s", s, (ms % 1000) / 100)
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    }
}

pub fn node_duration(n: &Node, now: Millis) -> String {
    match n.started_at {
        Some(s) => duration(n.finished_at.unwrap_or(now) - s),
        None => String::new(),
    }
}

/// Children as shown: steps groups are flattened into their steps.
fn shown_children(run: &Run, i: usize) -> Vec<usize> {
    let nodes = run.nodes();
    let mut out = Vec::new();
    for &c in &nodes[i].children {
        if nodes[c].node_type == NodeType::StepGroup {
            out.extend(shown_children(run, c));
        } else {
            out.push(c);
        }
    }
    out
}

/// The tree as (prefix, node index) rows.
pub fn tree(run: &Run) -> Vec<(String, usize)> {
    let nodes = run.nodes();
    let mut rows = Vec::new();
    let roots: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].parent.is_none())
        .collect();
    fn walk(
        run: &Run,
        i: usize,
        prefix: &str,
        last: bool,
        top: bool,
        rows: &mut Vec<(String, usize)>,
    ) {
        let me = if top {
            String::new()
        } else {
            format!("{prefix}{}", if last { "└─" } else { "├─" })
        };
        rows.push((me, i));
        let kids = shown_children(run, i);
        let child_prefix = if top {
            String::new()
        } else {
            format!("{prefix}{}", if last { "  " } else { "│ " })
        };
        for (k, &c) in kids.iter().enumerate() {
            walk(run, c, &child_prefix, k + 1 == kids.len(), false, rows);
        }
    }
    for r in roots {
        walk(run, r, "", true, true, &mut rows);
    }
    rows
}

fn pod_name(n: &Node) -> &str {
    if n.node_type == NodeType::Pod {
        &n.id
    } else {
        ""
    }
}

/// `weir get`.
pub fn get_text(run: &Run, wide: bool, now: Millis) -> String {
    let mut o = String::new();
    let sub = run.submission();
    let _ = writeln!(o, "{:<20} {}", "Name:", sub.name);
    let _ = writeln!(o, "{:<20} {}", "Namespace:", sub.namespace);
    let status = if run.is_suspended() && !run.phase().is_done() {
        "Running (Suspended)".to_string()
    } else {
        run.phase().to_string()
    };
    let _ = writeln!(o, "{:<20} {}", "Status:", status);
    if !run.message().is_empty() {
        let _ = writeln!(o, "{:<20} {}", "Message:", run.message());
    }
    let _ = writeln!(
        o,
        "{:<20} {}",
        "Created:",
        weir_core::run::rfc3339_pub(sub.created_at)
    );
    if let Some(f) = run.finished_at() {
        let _ = writeln!(o, "{:<20} {}", "Finished:", weir_core::run::rfc3339_pub(f));
    }
    let _ = writeln!(
        o,
        "{:<20} {}",
        "Duration:",
        duration(run.finished_at().unwrap_or(now) - run.started_at())
    );
    // `workflow.parameters` is all of them, as a JSON object in declaration order
    let params: serde_json::Map<String, Value> = run
        .globals()
        .get("workflow.parameters")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    if !params.is_empty() {
        let _ = writeln!(o, "Parameters:");
        for (k, v) in &params {
            let _ = writeln!(
                o,
                "  {:<18} {}",
                format!("{k}:"),
                v.as_str().unwrap_or_default()
            );
        }
    }
    let outs: Vec<(&String, &String)> = run
        .globals()
        .iter()
        .filter(|(k, _)| k.starts_with("workflow.outputs.parameters."))
        .collect();
    if !outs.is_empty() {
        let _ = writeln!(o, "Outputs:");
        for (k, v) in outs {
            let _ = writeln!(
                o,
                "  {:<18} {}",
                format!("{}:", k.trim_start_matches("workflow.outputs.parameters.")),
                v
            );
        }
    }
    let _ = writeln!(o);
    let rows = tree(run);
    let nodes = run.nodes();
    let labels: Vec<String> = rows
        .iter()
        .map(|(p, i)| format!("{p}{} {}", icon(&nodes[*i]), nodes[*i].display_name))
        .collect();
    let w0 = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4)
        .max(4)
        + 2;
    let w1 = rows
        .iter()
        .map(|(_, i)| nodes[*i].template.len())
        .max()
        .unwrap_or(8)
        .max(8)
        + 2;
    let w2 = rows
        .iter()
        .map(|(_, i)| pod_name(&nodes[*i]).len())
        .max()
        .unwrap_or(7)
        .max(7)
        + 2;
    let _ = write!(
        o,
        "{:<w0$}{:<w1$}{:<w2$}{:<10}",
        "STEP", "TEMPLATE", "PODNAME", "DURATION"
    );
    if wide {
        let _ = write!(o, "{:<30}", "PARAMETERS");
    }
    let _ = writeln!(o, "MESSAGE");
    for ((_, i), label) in rows.iter().zip(&labels) {
        let n = &nodes[*i];
        let pad = w0.saturating_sub(label.chars().count());
        let _ = write!(
            o,
            "{label}{}{:<w1$}{:<w2$}{:<10}",
            " ".repeat(pad),
            n.template,
            pod_name(n),
            node_duration(n, now)
        );
        if wide {
            let p: Vec<String> = n.inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(o, "{:<30}", p.join(","));
        }
        let _ = writeln!(o, "{}", n.message);
    }
    weir_exec::mask(&o, &run.secret_values())
}

pub fn node_json(n: &Node, run: &Run) -> Value {
    let nodes = run.nodes();
    let mut outputs = serde_json::Map::new();
    if !n.outputs.parameters.is_empty() {
        outputs.insert(
            "parameters".into(),
            Value::Array(
                n.outputs
                    .parameters
                    .iter()
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect(),
            ),
        );
    }
    if !n.outputs.artifacts.is_empty() {
        outputs.insert(
            "artifacts".into(),
            Value::Array(
                n.outputs
                    .artifacts
                    .iter()
                    .map(|a| {
                        let mut v =
                            json!({"name": a.name, "key": a.key, "blake3": a.hash, "size": a.size});
                        if let Some(u) = &a.url {
                            v["url"] = json!(u.split('?').next().unwrap_or(u));
                        }
                        v
                    })
                    .collect(),
            ),
        );
    }
    if let Some(r) = &n.outputs.result {
        outputs.insert("result".into(), Value::String(r.clone()));
    }
    if !n.outputs.metrics.is_empty() {
        outputs.insert(
            "metrics".into(),
            serde_json::to_value(&n.outputs.metrics).unwrap_or(Value::Null),
        );
    }
    if let Some(c) = n.outputs.exit_code {
        outputs.insert("exitCode".into(), Value::String(c.to_string()));
    }
    let mut v = json!({
        "id": n.id,
        "name": n.name,
        "displayName": n.display_name,
        "type": format!("{:?}", n.node_type),
        "templateName": n.template,
        "phase": n.phase.as_str(),
        "startedAt": n.started_at.map(weir_core::run::rfc3339_pub),
        "finishedAt": n.finished_at.map(weir_core::run::rfc3339_pub),
        "children": n.children.iter().map(|&c| nodes[c].id.clone()).collect::<Vec<_>>(),
    });
    // a time not yet reached is left out, as Argo leaves it out (its typed clients refuse null)
    drop_nulls(&mut v);
    if !n.message.is_empty() {
        v["message"] = Value::String(n.message.clone());
    }
    if let Some(p) = n.parent {
        v["boundaryID"] = Value::String(nodes[p].id.clone());
    }
    if let Some(k) = &n.cache_key {
        v["cacheKey"] = Value::String(k.clone());
    }
    if let Some(c) = &n.outputs.container {
        // as a pod's container status names them
        let mut status = json!({"image": c.image, "imageID": c.image_id,
            "containerID": format!("docker://{}", c.id)});
        if !c.repo_digests.is_empty() {
            status["repoDigests"] = json!(c.repo_digests);
        }
        v["container"] = status;
    }
    if let Some(r) = &n.cached_from {
        v["cachedFrom"] = Value::String(r.clone());
    }
    if !n.inputs.is_empty() {
        v["inputs"] = json!({"parameters": n.inputs.iter().map(|(k, x)| json!({"name": k, "value": x})).collect::<Vec<_>>()});
    }
    if !outputs.is_empty() {
        v["outputs"] = Value::Object(outputs);
    }
    v
}

/// Removes the fields of `v` (an object) whose value is null.
fn drop_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
}

/// The run as an Argo-shaped Workflow object.
pub fn run_json(run: &Run) -> Value {
    let sub = run.submission();
    let mut nodes = serde_json::Map::new();
    for n in run.nodes() {
        nodes.insert(n.id.clone(), node_json(n, run));
    }
    let outputs: Vec<Value> = run
        .globals()
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("workflow.outputs.parameters.")
                .map(|n| json!({"name": n, "value": v}))
        })
        .collect();
    let mut status = json!({
        "phase": run.phase().as_str(),
        "startedAt": weir_core::run::rfc3339_pub(run.started_at()),
        "finishedAt": run.finished_at().map(weir_core::run::rfc3339_pub),
        "nodes": nodes,
    });
    drop_nulls(&mut status);
    if !run.message().is_empty() {
        status["message"] = Value::String(run.message().into());
    }
    if !outputs.is_empty() {
        status["outputs"] = json!({"parameters": outputs});
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": sub.name, "namespace": sub.namespace, "uid": sub.uid,
            "creationTimestamp": weir_core::run::rfc3339_pub(sub.created_at),
            "labels": run.labels(), "annotations": run.annotations()},
        "spec": serde_json::to_value(&sub.workflow.spec).unwrap_or(Value::Null),
        "status": status,
    })
}

/// A small YAML emitter for our own JSON values (block style, strings quoted when needed).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out, false);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.contains([
                    ':', '#', '\n', '"', '\'', '{', '}', '[', ']', ',', '&', '*', '!', '|', '>',
                    '%', '@', '`',
                ])
                && !s.starts_with([' ', '-', '?'])
                && !s.ends_with(' ')
                && !matches!(
                    weir_core::yaml::resolve_plain(s),
                    Value::Bool(_) | Value::Number(_)
                )
                && !matches!(s.as_str(), "null" | "~" | "Null" | "NULL");
            if plain {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        _ => String::new(),
    }
}

fn emit(v: &Value, indent: usize, out: &mut String, in_list: bool) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (i, (k, x)) in m.iter().enumerate() {
                let lead = if in_list && i == 0 {
                    String::new()
                } else {
                    pad.clone()
                };
                let key = scalar(&Value::String(k.clone()));
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        let _ = writeln!(out, "{lead}{key}:");
                        emit(x, indent + 2, out, false);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{lead}{key}:");
                        emit(x, indent, out, false);
                    }
                    Value::Object(_) => {
                        let _ = writeln!(out, "{lead}{key}: {{}}");
                    }
                    Value::Array(_) => {
                        let _ = writeln!(out, "{lead}{key}: []");
                    }
                    _ => {
                        let _ = writeln!(out, "{lead}{key}: {}", scalar(x));
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for x in a {
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        let _ = write!(out, "{pad}- ");
                        emit(x, indent + 2, out, true);
                    }
                    Value::Array(b) if !b.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        emit(x, indent + 2, out, false);
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "{pad}- {}",
                            if x.is_object() {
                                "{}".into()
                            } else if x.is_array() {
                                "[]".into()
                            } else {
                                scalar(x)
                            }
                        );
                    }
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

/// `weir list`.
pub fn list_text(runs: &[RunSummary], wide: bool, now: Millis) -> String {
    let mut o = String::new();
    let w = runs.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4) + 2;
    let _ = write!(
        o,
        "{:<w$}{:<12}{:<10}{:<10}",
        "NAME", "STATUS", "AGE", "DURATION"
    );
    if wide {
        let _ = write!(o, "{:<12}MESSAGE", "NAMESPACE");
    }
    let _ = writeln!(o);
    for r in runs {
        let dur = duration(r.finished_at.unwrap_or(now) - r.created_at);
        let _ = write!(
            o,
            "{:<w$}{:<12}{:<10}{:<10}",
            r.name,
            r.phase,
            duration(now - r.created_at),
            dur
        );
        if wide {
            let _ = write!(o, "{:<12}{}", r.namespace, r.message);
        }
        let _ = writeln!(o);
    }
    o
}

/// Metric samples in Prometheus' text format: a gauge's latest value, a counter's sum, a
/// A label value in Prometheus' text format: `\`, `"` and newlines escaped, so a value cannot
/// end its line and forge another sample.
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric or label name as Prometheus takes it: `[a-zA-Z_:][a-zA-Z0-9_:]*`, any other
/// character replaced by `_`.
pub fn metric_name(n: &str) -> String {
    let mut out: String = n
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// histogram's cumulative buckets with `_sum` and `_count`, per name and label set.
pub fn prometheus_text(samples: &[weir_core::run::Metric]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    // name → (help, kind, label set → folded value)
    struct Series {
        value: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    }
    let mut by_name: BTreeMap<&str, (&str, &str, BTreeMap<String, Series>)> = BTreeMap::new();
    for m in samples {
        let labels = m
            .labels
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", metric_name(k), label_value(v)))
            .collect::<Vec<_>>()
            .join(",");
        let entry = by_name.entry(m.name.as_str()).or_insert((
            m.help.as_str(),
            m.kind.as_str(),
            BTreeMap::new(),
        ));
        let s = entry.2.entry(labels).or_insert(Series {
            value: 0.0,
            count: 0,
            buckets: m.buckets.iter().map(|b| (*b, 0)).collect(),
        });
        match m.kind.as_str() {
            "gauge" => s.value = m.value,
            "counter" => s.value += m.value,
            _ => {
                s.value += m.value;
                for (bound, n) in &mut s.buckets {
                    if m.value <= *bound {
                        *n += 1;
                    }
                }
            }
        }
        s.count += 1;
    }
    let mut out = String::new();
    for (name, (help, kind, series)) in by_name {
        let name = metric_name(name);
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, s) in series {
            let with = |extra: &str| {
                let all: Vec<&str> = [labels.as_str(), extra]
                    .into_iter()
                    .filter(|x| !x.is_empty())
                    .collect();
                if all.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", all.join(","))
                }
            };
            if kind == "histogram" {
                for (bound, n) in &s.buckets {
                    let _ = writeln!(out, "{name}_bucket{} {n}", with(&format!("le=\"{bound}\"")));
                }
                let _ = writeln!(out, "{name}_bucket{} {}", with("le=\"+Inf\""), s.count);
                let _ = writeln!(out, "{name}_sum{} {}", with(""), s.value);
                let _ = writeln!(out, "{name}_count{} {}", with(""), s.count);
            } else {
                let _ = writeln!(out, "{name}{} {}", with(""), s.value);
            }
        }
    }
    out
}

/// Task nodes whose logs `weir logs` / the log API show: all, or those matching `want` (id,
/// name, display name, or a loop's base name).
pub fn log_nodes<'a>(run: &'a Run, want: Option<&str>) -> Vec<&'a weir_core::run::Node> {
    run.nodes()
        .iter()
        .filter(|n| n.node_type == NodeType::Pod)
        .filter(|n| {
            want.is_none_or(|w| {
                n.id == w
                    || n.name == w
                    || n.display_name == w
                    || n.display_name.starts_with(&format!("{w}("))
                    || n.name.ends_with(&format!(".{w}"))
            })
        })
        .collect()
}

/// New complete lines of the selected nodes' logs since `offsets`, masked, prefixed by node
/// when all nodes are shown.
pub fn new_log_lines(
    work_root: &std::path::Path,
    run: &Run,
    want: Option<&str>,
    offsets: &mut std::collections::HashMap<String, u64>,
) -> Vec<String> {
    new_log_entries(work_root, run, want, offsets)
        .into_iter()
        .map(|e| {
            if want.is_some() {
                e.line
            } else {
                format!("{}: {}", e.display_name, e.line)
            }
        })
        .collect()
}

/// One line of a node's log.
pub struct LogEntry {
    pub node_id: String,
    pub display_name: String,
    /// Masked.
    pub line: String,
}

/// New complete lines of the selected nodes' logs since `offsets`, masked, with their node.
pub fn new_log_entries(
    work_root: &std::path::Path,
    run: &Run,
    want: Option<&str>,
    offsets: &mut std::collections::HashMap<String, u64>,
) -> Vec<LogEntry> {
    let secrets = run.secret_values();
    let key = run.submission().key();
    let mut out = Vec::new();
    for n in log_nodes(run, want) {
        let path = weir_exec::ProcessExecutor::log_path(work_root, key, &n.id);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let off = offsets.entry(n.id.clone()).or_insert(0);
        if (*off as usize) >= bytes.len() {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes[*off as usize..]);
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None if run.phase().is_done() || n.phase.is_done() => &text[..],
            None => "",
        };
        for line in complete.lines() {
            out.push(LogEntry {
                node_id: n.id.clone(),
                display_name: n.display_name.clone(),
                line: weir_exec::mask(line, &secrets),
            });
        }
        *off += complete.len() as u64;
    }
    out
}

/// The run's tracked metrics: every series (node, metric) with its points, and each metric's
/// final value (the last point of the last node to report it, in finishing order).
pub fn run_metrics(run: &Run) -> (Vec<Value>, std::collections::BTreeMap<String, f64>) {
    let nodes = run.nodes();
    let mut series = Vec::new();
    let mut last = std::collections::BTreeMap::new();
    for &i in run.finished_order() {
        let n = &nodes[i];
        let mut by_name: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
        for p in &n.outputs.metrics {
            by_name
                .entry(p.name.as_str())
                .or_default()
                .push(json!({"step": p.step, "value": p.value}));
            last.insert(p.name.clone(), p.value);
        }
        for (name, points) in by_name {
            series.push(
                json!({"nodeId": n.id, "nodeName": n.display_name, "name": name, "points": points}),
            );
        }
    }
    (series, last)
}

/// The parameters a run ran with: the workflow's arguments with `-p` overrides applied.
pub fn run_parameters(run: &Run) -> std::collections::BTreeMap<String, String> {
    run.globals()
        .get("workflow.parameters")
        .and_then(|j| serde_json::from_str::<std::collections::BTreeMap<String, String>>(j).ok())
        .unwrap_or_default()
}

/// Secret values replaced in every string (and key) of a JSON value.
pub fn mask_value(v: Value, secrets: &[String]) -> Value {
    match v {
        Value::String(s) => Value::String(weir_exec::mask(&s, secrets)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| mask_value(x, secrets)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (weir_exec::mask(&k, secrets), mask_value(x, secrets)))
                .collect(),
        ),
        other => other,
    }
}
