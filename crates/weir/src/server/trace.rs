//! Tracing: each finished run is exported as one trace over OTLP/HTTP (the JSON encoding of
//! `ExportTraceServiceRequest`), the run the root span and each node a span under its parent's.
//! Ids are derived from the run's uid, so exporting a run twice gives the same trace.

use serde_json::{Value, json};
use weir_core::run::{Phase, Run};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn span_id(uid: &str, node: &str) -> String {
    hex(&blake3::hash(format!("{uid}/{node}").as_bytes()).as_bytes()[..8])
}

fn nanos(ms: i64) -> String {
    (ms.max(0) as u128 * 1_000_000).to_string()
}

fn attr(k: &str, v: impl Into<String>) -> Value {
    json!({"key": k, "value": {"stringValue": v.into()}})
}

fn status(p: Phase) -> Value {
    match p {
        Phase::Succeeded => json!({"code": 1}),
        Phase::Failed | Phase::Error => json!({"code": 2}),
        _ => json!({"code": 0}),
    }
}

/// The run as an OTLP/JSON trace export request.
pub fn export(run: &Run) -> Value {
    let sub = run.submission();
    let trace = hex(&blake3::hash(sub.uid.as_bytes()).as_bytes()[..16]);
    let root = span_id(&sub.uid, "");
    let end = run.finished_at().unwrap_or_else(crate::ambient::now_ms);
    let secrets = run.secret_values();
    let mask = |s: &str| weir_exec::mask(s, &secrets);
    let mut spans = vec![json!({
        "traceId": trace, "spanId": root, "name": sub.name, "kind": 1,
        "startTimeUnixNano": nanos(run.started_at()), "endTimeUnixNano": nanos(end),
        "attributes": [attr("weir.run", sub.name.clone()), attr("weir.namespace", sub.namespace.clone()),
            attr("weir.phase", run.phase().as_str())],
        "status": status(run.phase()),
    })];
    let nodes = run.nodes();
    for n in nodes {
        // the run's own node is the root span
        if n.parent.is_none() && n.id == sub.name {
            continue;
        }
        let Some(start) = n.started_at else { continue };
        let parent = match n.parent {
            Some(p) if !(nodes[p].parent.is_none() && nodes[p].id == sub.name) => {
                span_id(&sub.uid, &nodes[p].id)
            }
            _ => root.clone(),
        };
        let mut attrs = vec![
            attr("weir.node.id", n.id.clone()),
            attr("weir.node.type", format!("{:?}", n.node_type)),
            attr("weir.node.template", n.template.clone()),
            attr("weir.phase", n.phase.as_str()),
        ];
        if let Some(c) = n.outputs.exit_code {
            attrs.push(json!({"key": "weir.exit_code", "value": {"intValue": c.to_string()}}));
        }
        if !n.message.is_empty() {
            attrs.push(attr("weir.message", mask(&n.message)));
        }
        spans.push(json!({
            "traceId": trace, "spanId": span_id(&sub.uid, &n.id), "parentSpanId": parent,
            "name": mask(&n.display_name), "kind": 1,
            "startTimeUnixNano": nanos(start), "endTimeUnixNano": nanos(n.finished_at.unwrap_or(end)),
            "attributes": attrs, "status": status(n.phase),
        }));
    }
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", "weir"), attr("service.version", env!("CARGO_PKG_VERSION"))]},
        "scopeSpans": [{"scope": {"name": "weir", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

/// Sends `body` to the endpoint's `/v1/traces`, retrying twice with backoff on failure.
pub fn send(
    endpoint: &str,
    headers: &std::collections::BTreeMap<String, String>,
    body: &Value,
) -> Result<(), String> {
    let url = if endpoint.ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let text = body.to_string();
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
        }
        let mut rq = client.post(&url).header("Content-Type", "application/json");
        for (k, v) in headers {
            rq = rq.header(k, v);
        }
        match rq.body(text.clone()).send() {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                return Err(format!("{url} refused the traces: {}", r.status()));
            }
            Ok(r) => last = format!("{url}: {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}
