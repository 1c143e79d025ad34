//! `weir server` end to end over loopback HTTP: submission, live updates, artifacts, the audit
//! log, and the authorization of every route.

use serde_json::{Value, json};

use crate::support::{ApiServer, Sandbox, SseReader, answer, http, repo_root, token};

fn ml_example() -> String {
    std::fs::read_to_string(repo_root().join("examples/ml-pipeline.yaml")).unwrap()
}

/// Submits a YAML workflow to `default` on an `--insecure-local` server; the run's name.
pub fn submit(srv: &ApiServer, yaml: &str) -> String {
    let (status, wf) = answer(
        http()
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("application/yaml")
            .send(yaml),
    );
    assert_eq!(status, 200, "{wf}");
    wf["metadata"]["name"].as_str().unwrap().to_string()
}

/// Follows a run of `default` on its event stream until it finishes; the last event's data.
pub fn follow(srv: &ApiServer, name: &str) -> Value {
    let events = http()
        .get(srv.url(&format!("/api/v1/workflow-events/default?name={name}")))
        .call()
        .unwrap();
    let mut sse = SseReader::new(events);
    while let Some(ev) = sse.next_event() {
        let d: Value = serde_json::from_str(&ev.data).unwrap();
        if matches!(d["phase"].as_str(), Some("Succeeded" | "Failed" | "Error")) {
            return d;
        }
    }
    panic!("the event stream of {name} ended before the run did")
}

#[test]
fn ml_example_submitted_over_http_is_followed_to_success_and_its_artifact_downloaded() {
    let sb = Sandbox::new();
    let editor = token(&sb, "ml", "editor");
    let admin = token(&sb, "ml", "admin");
    let srv = ApiServer::start(&sb, &[]);
    let agent = http();
    let auth = format!("Bearer {editor}");

    let (status, wf) = answer(
        agent
            .post(srv.url("/api/v1/workflows/ml"))
            .header("Authorization", &auth)
            .content_type("application/yaml")
            .send(ml_example()),
    );
    assert_eq!(status, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(wf["metadata"]["namespace"], "ml");

    // follow the run: a snapshot first, then its changes, until it finishes
    let events = agent
        .get(srv.url(&format!("/api/v1/workflow-events/ml?name={name}")))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    let mut sse = SseReader::new(events);
    let mut phases = Vec::new();
    let mut ids = Vec::new();
    let mut node_phases = std::collections::BTreeMap::new();
    while let Some(ev) = sse.next_event() {
        assert_eq!(ev.event, "workflow", "{ev:?}");
        let data: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(data["run"], name.as_str());
        ids.push(ev.id.parse::<u64>().unwrap());
        for n in data["nodes"].as_array().unwrap() {
            node_phases.insert(
                n["displayName"].as_str().unwrap().to_string(),
                n["phase"].as_str().unwrap().to_string(),
            );
        }
        let phase = data["phase"].as_str().unwrap().to_string();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        if phase == "Succeeded" || phase == "Failed" || phase == "Error" {
            break;
        }
    }
    assert_eq!(
        phases.last().map(String::as_str),
        Some("Succeeded"),
        "{phases:?}"
    );
    assert!(
        ids.windows(2).all(|w| w[0] <= w[1]),
        "event ids increase: {ids:?}"
    );
    for task in ["preprocess", "select", "deploy"] {
        assert_eq!(
            node_phases.get(task).map(String::as_str),
            Some("Succeeded"),
            "{node_phases:?}"
        );
    }

    // reconnecting with Last-Event-ID replays only what followed that event
    let second = ids[ids.len() / 2];
    let again = agent
        .get(srv.url(&format!("/api/v1/workflow-events/ml?name={name}")))
        .header("Authorization", &auth)
        .header("Last-Event-ID", &second.to_string())
        .call()
        .unwrap();
    let first_after = SseReader::new(again).next_event().unwrap();
    assert!(first_after.id.parse::<u64>().unwrap() > second);

    // the final state over GET agrees
    let (status, wf) = answer(
        agent
            .get(srv.url(&format!("/api/v1/workflows/ml/{name}")))
            .header("Authorization", &auth)
            .call(),
    );
    assert_eq!(
        (status, wf["status"]["phase"].clone()),
        (200, json!("Succeeded"))
    );

    // artifacts: listed with their digest, downloaded byte for byte
    let (status, list) = answer(
        agent
            .get(srv.url(&format!("/api/v1/workflows/ml/{name}/artifacts")))
            .header("Authorization", &auth)
            .call(),
    );
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let model = items
        .iter()
        .find(|a| a["name"] == "model")
        .unwrap_or_else(|| panic!("no model artifact in {list}"));
    let mut r = agent
        .get(srv.url(model["url"].as_str().unwrap()))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["x-weir-blake3"].to_str().unwrap(),
        model["blake3"].as_str().unwrap()
    );
    let bytes = r.body_mut().read_to_vec().unwrap();
    assert_eq!(bytes.len() as u64, model["size"].as_u64().unwrap());
    assert_eq!(
        blake3::hash(&bytes).to_hex().as_str(),
        model["blake3"].as_str().unwrap()
    );

    // lineage over the API: the model back to the dataset and its producer
    let (status, lin) = answer(
        agent
            .get(srv.url(&format!(
                "/api/v1/lineage/ml?target={}",
                model["blake3"].as_str().unwrap()
            )))
            .header("Authorization", &auth)
            .call(),
    );
    assert_eq!(status, 200, "{lin}");
    assert_eq!(lin["producedBy"][0]["inputs"][0]["artifact"], "dataset");
    let (status, _) = answer(
        agent
            .get(srv.url("/api/v1/lineage/other?target=deadbeefdeadbeef"))
            .header("Authorization", &auth)
            .call(),
    );
    assert_eq!(status, 403, "another namespace's lineage");

    // the run's stored event log: each task started and finished, in order
    let (status, log) = answer(
        agent
            .get(srv.url(&format!("/api/v1/workflows/ml/{name}/events")))
            .header("Authorization", &auth)
            .call(),
    );
    assert_eq!(status, 200, "{log}");
    let kinds: Vec<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match &e["event"] {
            Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
            other => other.as_str().unwrap_or_default().to_string(),
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "Finished").count(),
        6,
        "{kinds:?}"
    );
    assert!(kinds.iter().position(|k| k == "Started") < kinds.iter().position(|k| k == "Finished"));

    // logs of one task
    let mut r = agent
        .get(srv.url(&format!(
            "/api/v1/workflows/ml/{name}/log?nodeId=preprocess"
        )))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    let log = r.body_mut().read_to_string().unwrap();
    assert!(log.contains("wrote 400 samples"), "{log}");

    // the audit log holds the submission, by whom and with what outcome; editors cannot read it
    let (status, _) = answer(
        agent
            .get(srv.url("/api/v1/audit?namespace=ml"))
            .header("Authorization", &auth)
            .call(),
    );
    assert_eq!(status, 403);
    let (status, audit) = answer(
        agent
            .get(srv.url("/api/v1/audit?namespace=ml"))
            .header("Authorization", &format!("Bearer {admin}"))
            .call(),
    );
    assert_eq!(status, 200, "{audit}");
    let editor_id = editor.split('_').nth(1).unwrap();
    let entries = audit["items"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == format!("token:{editor_id}")
                && e["action"] == "POST /api/v1/workflows/{namespace}"
                && e["target"] == "/api/v1/workflows/ml"
                && e["status"] == 200),
        "{audit}"
    );
    // reads are not audited
    assert!(
        entries
            .iter()
            .all(|e| e["action"].as_str().unwrap().starts_with("POST")
                || e["action"].as_str().unwrap().starts_with("PUT")
                || e["action"].as_str().unwrap().starts_with("DELETE"))
    );
}

/// The role each operation needs, by its path and method.
fn needed(method: &str, path: &str) -> &'static str {
    if path.starts_with("/api/v1/tokens") || path.starts_with("/api/v1/audit") {
        "admin"
    } else if method == "get" {
        "viewer"
    } else {
        "editor"
    }
}

#[test]
fn every_route_refuses_anonymous_callers_and_other_namespaces_and_checks_roles() {
    let sb = Sandbox::new();
    let admin = token(&sb, "team-a", "admin");
    let editor = token(&sb, "team-a", "editor");
    let viewer = token(&sb, "team-a", "viewer");
    let outsider = token(&sb, "team-b", "admin");
    let global = token(&sb, "*", "editor");
    let srv = ApiServer::start(&sb, &[]);
    let agent = http();
    let wf = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: hello\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    script:\n      image: python:3\n      command: [sh]\n      source: echo hi\n";
    let (status, body) = answer(
        agent
            .post(srv.url("/api/v1/workflows/team-a"))
            .header("Authorization", &format!("Bearer {editor}"))
            .content_type("application/yaml")
            .send(wf),
    );
    assert_eq!(status, 200, "{body}");

    // every operation the server documents
    let (_, doc) = answer(agent.get(srv.url("/api/v1/openapi.json")).call());
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue; // health checks are public
        }
        for method in ops.as_object().unwrap().keys() {
            let need = needed(method, path);
            let concrete = path
                .replace("{namespace}", "team-a")
                .replace(
                    "{name}",
                    if method == "get" {
                        "hello"
                    } else {
                        "no-such-run"
                    },
                )
                .replace("{node}", "no-such-node")
                .replace("{artifact}", "none")
                .replace("{id}", "000000000000");
            let concrete = if path == "/api/v1/audit" {
                format!("{concrete}?namespace=team-a")
            } else {
                concrete
            };
            let call = |tok: Option<&str>| -> u16 {
                let url = srv.url(&concrete);
                let r = match method.as_str() {
                    "get" => {
                        let mut rq = agent.get(&url);
                        if let Some(t) = tok {
                            rq = rq.header("Authorization", &format!("Bearer {t}"));
                        }
                        rq.call()
                    }
                    "delete" => {
                        let mut rq = agent.delete(&url);
                        if let Some(t) = tok {
                            rq = rq.header("Authorization", &format!("Bearer {t}"));
                        }
                        rq.call()
                    }
                    m => {
                        let mut rq = if m == "post" {
                            agent.post(&url)
                        } else {
                            agent.put(&url)
                        };
                        if let Some(t) = tok {
                            rq = rq.header("Authorization", &format!("Bearer {t}"));
                        }
                        rq.content_type("application/json").send("{}")
                    }
                };
                // the status line is all we need: watch streams stay open
                r.unwrap().status().as_u16()
            };
            let label = format!("{} {path}", method.to_uppercase());
            assert_eq!(call(None), 401, "anonymous {label}");
            assert_eq!(
                call(Some("weir_000000000000_nope")),
                401,
                "bad token {label}"
            );
            if matches!(
                path.as_str(),
                "/api/v1/userinfo" | "/api/v1/version" | "/api/v1/info"
            ) {
                // who am I, and what server this is: every valid token
                for tok in [&viewer, &editor, &admin, &outsider, &global] {
                    assert_eq!(call(Some(tok)), 200, "{label}");
                }
                checked += 1;
                continue;
            }
            if path.starts_with("/api/v1/cluster-workflow-templates") {
                // cluster-scoped: read by every caller, changed only with a role everywhere
                for tok in [&viewer, &editor, &admin, &outsider, &global] {
                    let got = call(Some(tok));
                    if method == "get" || tok == &global {
                        assert!(got != 401 && got != 403 && got < 500, "{label}: {got}");
                    } else {
                        assert_eq!(got, 403, "{label}");
                    }
                }
                checked += 1;
                continue;
            }
            assert_eq!(
                call(Some(&outsider)),
                403,
                "another namespace's admin {label}"
            );
            for (role, tok) in [("viewer", &viewer), ("editor", &editor), ("admin", &admin)] {
                let allowed = match need {
                    "viewer" => true,
                    "editor" => role != "viewer",
                    _ => role == "admin",
                };
                let got = call(Some(tok));
                if allowed {
                    assert!(
                        got != 401 && got != 403 && got < 500,
                        "{role} {label}: {got}"
                    );
                } else {
                    assert_eq!(got, 403, "{role} {label}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 38, "only {checked} operations documented");

    // a revoked token stops working at once
    let id = viewer.split('_').nth(1).unwrap();
    let (status, _) = answer(
        agent
            .delete(srv.url(&format!("/api/v1/tokens/team-a/{id}")))
            .header("Authorization", &format!("Bearer {admin}"))
            .call(),
    );
    assert_eq!(status, 200);
    let (status, body) = answer(
        agent
            .get(srv.url("/api/v1/workflows/team-a"))
            .header("Authorization", &format!("Bearer {viewer}"))
            .call(),
    );
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

#[test]
fn bad_requests_get_stable_error_codes_and_locations() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local", "--max-body", "4096"]);
    let agent = http();
    let post = |body: &str, ctype: &str| {
        answer(
            agent
                .post(srv.url("/api/v1/workflows/default"))
                .content_type(ctype)
                .send(body),
        )
    };
    // a workflow with a problem: file:line:column and the field path
    let (status, body) = post(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: bad\nspec:\n  entrypoint: missing\n  templates:\n  - name: main\n    container:\n      image: alpine\n      command: [\"true\"]\n",
        "application/yaml",
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_workflow");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("request body:6:") && msg.contains("spec.entrypoint"),
        "{msg}"
    );
    // malformed JSON: its position
    let (status, body) = post("{\"workflow\": {", "application/json");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_request"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request body:1:")
    );
    // too large
    let (status, body) = post(&"x".repeat(10_000), "application/yaml");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    // unknown run, invalid namespace, unknown route
    let (status, body) = answer(agent.get(srv.url("/api/v1/workflows/default/nope")).call());
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, body) = answer(
        agent
            .get(srv.url("/api/v1/workflows/Not_A_Namespace"))
            .call(),
    );
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_request"))
    );
    let (status, _) = answer(agent.get(srv.url("/api/v1/nothing-here")).call());
    assert_eq!(status, 404);
    // nothing stored was lost: the database still lists no runs and answers
    let (status, body) = answer(agent.get(srv.url("/api/v1/workflows/default")).call());
    assert_eq!((status, body["items"].clone()), (200, json!([])));
}

#[test]
fn insecure_local_is_refused_on_a_non_loopback_address() {
    let sb = Sandbox::new();
    let o = sb.weir(&["server", "--insecure-local", "--listen", "0.0.0.0:0"]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("loopback"), "{}", o.stderr);
}

#[test]
fn templates_keep_every_version_and_a_run_submitted_from_one_records_it() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    let agent = http();
    let template = |greeting: &str| {
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata:\n  name: greet\nspec:\n  entrypoint: main\n  arguments:\n    parameters:\n    - name: who\n      value: world\n  templates:\n  - name: main\n    inputs:\n      parameters:\n      - name: who\n    script:\n      image: python:3\n      command: [sh]\n      source: echo {greeting} {{{{inputs.parameters.who}}}}\n"
        )
    };
    let send = |method: &str, path: &str, body: String| {
        let url = srv.url(path);
        let rq = if method == "POST" {
            agent.post(&url)
        } else {
            agent.put(&url)
        };
        answer(rq.content_type("application/yaml").send(body))
    };
    let (status, v1) = send(
        "POST",
        "/api/v1/workflow-templates/default",
        template("hello"),
    );
    assert_eq!(
        (status, v1["metadata"]["resourceVersion"].clone()),
        (200, json!("1")),
        "{v1}"
    );
    // creating it again conflicts; updating adds version 2
    let (status, _) = send(
        "POST",
        "/api/v1/workflow-templates/default",
        template("hello"),
    );
    assert_eq!(status, 409);
    let (status, v2) = send(
        "PUT",
        "/api/v1/workflow-templates/default/greet",
        template("howdy"),
    );
    assert_eq!(
        (status, v2["metadata"]["resourceVersion"].clone()),
        (200, json!("2")),
        "{v2}"
    );
    // a template with a problem is refused with its location, and changes nothing
    let (status, bad) = send(
        "PUT",
        "/api/v1/workflow-templates/default/greet",
        template("x").replace("entrypoint: main", "entrypoint: [main]"),
    );
    assert_eq!(
        (status, bad["error"]["code"].clone()),
        (400, json!("invalid_workflow")),
        "{bad}"
    );
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request body:6:"),
        "{bad}"
    );
    let (_, versions) = answer(
        agent
            .get(srv.url("/api/v1/workflow-templates/default/greet/versions"))
            .call(),
    );
    assert_eq!(versions["items"].as_array().unwrap().len(), 2, "{versions}");
    let (_, old) = answer(
        agent
            .get(srv.url("/api/v1/workflow-templates/default/greet?version=1"))
            .call(),
    );
    assert!(old.to_string().contains("echo hello"), "{old}");

    // submit from the template with a parameter: the run uses version 2 and says so
    let (status, wf) = answer(
        agent
            .post(srv.url("/api/v1/workflows/default/submit"))
            .content_type("application/json")
            .send(
                json!({
                    "resourceKind": "WorkflowTemplate",
                    "resourceName": "greet",
                    "submitOptions": {"parameters": ["who=weir"]}
                })
                .to_string(),
            ),
    );
    assert_eq!(status, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(
        wf["metadata"]["labels"]["workflows.argoproj.io/workflow-template"],
        "greet"
    );
    assert_eq!(
        wf["metadata"]["annotations"]["weir.dev/template-versions"],
        "WorkflowTemplate/default/greet=2"
    );
    let end = follow(&srv, &name);
    assert_eq!(end["phase"], "Succeeded", "{end}");
    let mut r = agent
        .get(srv.url(&format!(
            "/api/v1/workflows/default/{name}/log?follow=false"
        )))
        .call()
        .unwrap();
    assert!(
        r.body_mut()
            .read_to_string()
            .unwrap()
            .contains("howdy weir")
    );

    // deleting keeps the history; the template can no longer be submitted
    let (status, _) = answer(
        agent
            .delete(srv.url("/api/v1/workflow-templates/default/greet"))
            .call(),
    );
    assert_eq!(status, 200);
    let (status, _) = answer(
        agent
            .get(srv.url("/api/v1/workflow-templates/default/greet"))
            .call(),
    );
    assert_eq!(status, 404);
    let (_, versions) = answer(
        agent
            .get(srv.url("/api/v1/workflow-templates/default/greet/versions"))
            .call(),
    );
    assert_eq!(versions["items"][0]["deleted"], true, "{versions}");
    let (status, body) = answer(
        agent
            .post(srv.url("/api/v1/workflows/default/submit"))
            .content_type("application/json")
            .send(json!({"resourceName": "greet"}).to_string()),
    );
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

#[test]
fn a_run_accepted_by_a_killed_server_goes_on_when_the_server_restarts() {
    let sb = Sandbox::new();
    let gate = sb.dir.join("go");
    let count = sb.dir.join("first-count");
    let wf = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: durable\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - name: first\n        template: first\n    - - name: wait\n        template: wait\n  - name: first\n    script:\n      image: alpine\n      command: [sh]\n      source: echo ran >> {count}\n  - name: wait\n    retryStrategy:\n      limit: 2\n      retryPolicy: Always\n    script:\n      image: alpine\n      command: [sh]\n      source: |\n        echo started\n        while [ ! -f {gate} ]; do sleep 0.02; done\n        echo through\n",
        count = count.display(),
        gate = gate.display()
    );
    // the tasks signal through files the test shares with them: they run as root
    let mut srv = ApiServer::start(&sb, &["--insecure-local", "--allow-root-tasks"]);
    let agent = http();
    let (status, body) = answer(
        agent
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("application/yaml")
            .send(&wf),
    );
    assert_eq!(status, 200, "{body}");
    // wait (on the event stream) until the second step runs, then kill the server outright
    let events = agent
        .get(srv.url("/api/v1/workflow-events/default?name=durable"))
        .call()
        .unwrap();
    let mut sse = SseReader::new(events);
    'watch: while let Some(ev) = sse.next_event() {
        let d: Value = serde_json::from_str(&ev.data).unwrap();
        for n in d["nodes"].as_array().unwrap() {
            if n["templateName"] == "wait" && n["type"] == "Pod" && n["phase"] == "Running" {
                break 'watch;
            }
        }
    }
    srv.kill();
    drop(sse);
    std::fs::write(&gate, "").unwrap();

    // a new server process on the same database takes the run over and finishes it
    let srv = ApiServer::start(&sb, &["--insecure-local", "--allow-root-tasks"]);
    let events = agent
        .get(srv.url("/api/v1/workflow-events/default?name=durable"))
        .call()
        .unwrap();
    let mut sse = SseReader::new(events);
    let mut last = Value::Null;
    while let Some(ev) = sse.next_event() {
        last = serde_json::from_str(&ev.data).unwrap();
        if matches!(
            last["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Error")
        ) {
            break;
        }
    }
    assert_eq!(last["phase"], "Succeeded", "{last}");
    let (_, wf) = answer(
        agent
            .get(srv.url("/api/v1/workflows/default/durable"))
            .call(),
    );
    let nodes = wf["status"]["nodes"].as_object().unwrap();
    let attempts: Vec<&Value> = nodes
        .values()
        .filter(|n| n["templateName"] == "wait" && n["type"] == "Pod")
        .collect();
    // the running attempt went on without a server, and the new server watched it to its
    // end: one attempt, one process (what it printed before and after the kill, once)
    assert_eq!(attempts.len(), 1, "one attempt: {wf}");
    assert_eq!(attempts[0]["outputs"]["result"], "started\nthrough", "{wf}");
    assert!(
        !attempts[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("started again")),
        "{wf}"
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "the finished step did not run again"
    );
}

/// A one-route OTLP/HTTP receiver on loopback: each POST body to /v1/traces, decoded.
fn otlp_receiver() -> (u16, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut len = 0;
            let mut ctype = String::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "content-type" => ctype = v.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .unwrap();
            assert!(
                request_line.starts_with("POST /v1/traces "),
                "{request_line}"
            );
            assert_eq!(ctype, "application/json");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    (port, rx)
}

#[test]
fn each_run_is_exported_as_a_trace_with_a_span_per_node() {
    let sb = Sandbox::new();
    let (port, traces) = otlp_receiver();
    let endpoint = format!("http://127.0.0.1:{port}");
    let srv = ApiServer::start(&sb, &["--insecure-local", "--otlp-endpoint", &endpoint]);
    let name = submit(&srv, &ml_example());
    let export = traces
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a trace export");
    let spans = export["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .clone();
    let (_, run) = answer(
        http()
            .get(srv.url(&format!("/api/v1/workflows/default/{name}")))
            .call(),
    );
    let nodes = run["status"]["nodes"].as_object().unwrap();
    // one trace; the run is the root span; every other node is a span under its parent's
    let trace = spans[0]["traceId"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert!(spans.iter().all(|s| s["traceId"] == trace));
    assert_eq!(spans[0]["name"], name.as_str());
    assert!(spans[0].get("parentSpanId").is_none());
    assert_eq!(
        spans.len(),
        nodes.len(),
        "a span per node (the run's own node is the root)"
    );
    let by_id: std::collections::HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanId"].as_str().unwrap(), s))
        .collect();
    for s in &spans[1..] {
        let parent = by_id
            .get(s["parentSpanId"].as_str().unwrap())
            .unwrap_or_else(|| panic!("parent of {s} is not in the trace"));
        let start = |x: &Value| {
            x["startTimeUnixNano"]
                .as_str()
                .unwrap()
                .parse::<u128>()
                .unwrap()
        };
        assert!(start(parent) <= start(s), "a child starts after its parent");
        assert_eq!(s["status"]["code"], 1, "{s}");
    }
    let deploy = spans.iter().find(|s| s["name"] == "deploy").unwrap();
    let attrs = deploy["attributes"].to_string();
    assert!(
        attrs.contains("weir.node.template") && attrs.contains("\"Pod\""),
        "{attrs}"
    );
}

#[test]
fn metrics_health_and_configuration_are_served() {
    let sb = Sandbox::new();
    let cfg = sb.write(
        "weir.toml",
        "[server]\nmax_body = 12345\nlog_format = \"json\"\notlp_headers = { authorization = \"Bearer hush\" }\n",
    );
    let cfg = cfg.to_str().unwrap();
    // the effective configuration: file values, a flag over the file, the secret masked
    let o = sb.weir(&[
        "server",
        "--config",
        cfg,
        "--max-body",
        "999",
        "--print-config",
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stdout.contains("max_body = 999  # flag or environment"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("log_format = \"json\"  # file"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("hush") && o.stdout.contains("authorization = \"***\""));

    let srv = ApiServer::start(&sb, &["--insecure-local", "--config", cfg]);
    let agent = http();
    let name = submit(&srv, &ml_example());
    assert_eq!(follow(&srv, &name)["phase"], "Succeeded");
    let mut r = agent.get(srv.url("/metrics")).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert!(text.contains("weir_runs{phase=\"Succeeded\"} 1"), "{text}");
    assert!(
        text.contains("weir_api_requests_total{method=\"POST\",route=\"/api/v1/workflows/{namespace}\",code=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("weir_api_request_duration_seconds_bucket{route=\"/api/v1/workflows/{namespace}\",le=\"+Inf\"} 1"));
    // the example's six tasks finished: their durations are in the histogram
    assert!(
        text.contains("weir_task_duration_seconds_count 6"),
        "{text}"
    );
    assert!(text.contains("weir_executor_slots_in_use 0"));
    let (status, _) = answer(agent.get(srv.url("/healthz")).call());
    assert_eq!(status, 200);
    let (status, _) = answer(agent.get(srv.url("/readyz")).call());
    assert_eq!(status, 200);
    // a body over the configured limit
    let (status, _) = answer(
        agent
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("application/yaml")
            .send("x".repeat(20_000)),
    );
    assert_eq!(status, 413);
}

#[test]
fn the_cli_works_against_a_server_with_the_same_verbs() {
    let sb = Sandbox::new();
    let editor = token(&sb, "ml", "editor");
    let srv = ApiServer::start(&sb, &[]);
    // the client has no database of its own: everything goes through the server
    let client = sb.with_db("client.db");
    let weir = |args: &[&str], tok: &str| {
        let o = client
            .cmd(args)
            .env("WEIR_SERVER", &srv.base)
            .env("WEIR_TOKEN", tok)
            .env("WEIR_NAMESPACE", "ml")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let example = repo_root().join("examples/ml-pipeline.yaml");
    let (code, out, err) = weir(
        &[
            "run",
            example.to_str().unwrap(),
            "-p",
            "learning-rate=0.01",
            "--name",
            "remote-ml",
        ],
        &editor,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deploying model"),
        "task logs stream back: {out}"
    );
    let (code, out, _) = weir(&["list"], &editor);
    assert_eq!(code, 0);
    assert!(
        out.contains("remote-ml") && out.contains("Succeeded"),
        "{out}"
    );
    let (code, out, _) = weir(&["get", "remote-ml", "-o", "json"], &editor);
    assert_eq!(code, 0);
    let wf: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(wf["status"]["phase"], "Succeeded");
    assert!(
        wf["spec"]["arguments"]
            .to_string()
            .contains("learning-rate")
    );
    let (code, out, _) = weir(&["logs", "remote-ml", "preprocess"], &editor);
    assert_eq!((code, out.trim()), (0, "wrote 400 samples"));
    let (code, out, _) = weir(&["get", "remote-ml"], &editor);
    assert!(
        code == 0 && out.contains("deploy") && out.contains("Succeeded"),
        "{out}"
    );
    // errors: a bad token, an unknown run, a local-only verb
    let forged = format!("weir_000000000000_{}", "A".repeat(43));
    let (code, _, err) = weir(&["list"], &forged);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not valid") && err.contains("401"), "{err}");
    let (code, _, err) = weir(&["get", "nope"], &editor);
    assert!(code == 2 && err.contains("404"), "{err}");
    let (code, _, err) = weir(&["cache", "list"], &editor);
    assert!(code == 2 && err.contains("local database only"), "{err}");
    let (code, out, _) = weir(&["delete", "remote-ml"], &editor);
    assert_eq!((code, out.trim()), (0, "deleted remote-ml"));
}

/// Errors carry grpc-gateway's body, which Argo's clients read (`code` is the gRPC status:
/// 5 not found, 6 already exists, 3 invalid argument), beside Weir's stable code; the server
/// says its version in Argo's shape; what only Argo Events serves answers 501, gRPC 12.
#[test]
fn errors_version_and_unimplemented_routes_speak_argos_shapes() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    let agent = http();
    let (status, body) = answer(agent.get(srv.url("/api/v1/workflows/default/nope")).call());
    assert_eq!(status, 404);
    assert_eq!(body["code"], 5, "{body}");
    assert_eq!(body["details"], json!([]), "{body}");
    assert_eq!(body["message"], body["error"]["message"], "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let wf = "kind: Workflow\nmetadata: {name: once}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: alpine, command: ['true']}\n";
    submit(&srv, wf);
    let (status, body) = answer(
        agent
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("application/yaml")
            .send(wf),
    );
    assert_eq!((status, body["code"].clone()), (409, json!(6)), "{body}");
    let (status, body) = answer(
        agent
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("application/yaml")
            .send("kind: Workflow\nspec: {entrypoint: 3}\n"),
    );
    assert_eq!((status, body["code"].clone()), (400, json!(3)), "{body}");
    let (status, v) = answer(agent.get(srv.url("/api/v1/version")).call());
    assert_eq!(status, 200);
    assert_eq!(
        v["version"],
        format!("v{}", env!("CARGO_PKG_VERSION")),
        "{v}"
    );
    // who am I, with Argo's fields beside Weir's
    let (_, me) = answer(agent.get(srv.url("/api/v1/userinfo")).call());
    assert_eq!(
        (
            me["issuer"].clone(),
            me["subject"].clone(),
            me["groups"].clone()
        ),
        (json!("weir"), json!("local"), json!(["admin@*"])),
        "{me}"
    );
    let (status, body) = answer(agent.get(srv.url("/api/v1/event-sources/default")).call());
    assert_eq!((status, body["code"].clone()), (501, json!(12)), "{body}");
    // a list is a WorkflowList of Workflow-shaped items
    let (_, list) = answer(agent.get(srv.url("/api/v1/workflows/default")).call());
    assert_eq!(list["kind"], "WorkflowList", "{list}");
    assert_eq!(list["metadata"]["resourceVersion"], "0", "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "once", "{list}");
    assert!(list["items"][0]["status"]["phase"].is_string(), "{list}");
}

/// An `--insecure-local` server running a one-task run `name` whose shell `script` waits at
/// `GATE` until the test writes the file returned (tasks run as root: the file is the test's);
/// `more` is YAML added to the template.
fn gated_run(
    sb: &Sandbox,
    name: &str,
    script: &str,
    more: &str,
) -> (ApiServer, std::path::PathBuf, String) {
    let srv = ApiServer::start_with(
        sb,
        &["--insecure-local"],
        &[("WEIR_ALLOW_ROOT_TASKS", "true")],
    );
    let go = sb.dir.join("go");
    let script = script.replace(
        "GATE",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    );
    let name = submit(
        &srv,
        &format!(
            "kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {{image: alpine, command: [sh, -c, '{script}']}}{more}\n"
        ),
    );
    (srv, go, name)
}

/// The log as Argo serves it (no `nodeId`/`follow`): a `{"result": {"content", "podName"}}` per
/// line, the task's own lines unless `logOptions.container` names a sidecar, filtered by `grep`
/// and `logOptions.tailLines`, as `data:` lines for an event-stream client, and followed
/// (`logOptions.follow=true`) line by line as the task writes them, to the run's end.
#[test]
fn logs_in_argos_shape_filter_and_follow() {
    use std::io::BufRead;
    let sb = Sandbox::new();
    let (srv, go, name) = gated_run(
        &sb,
        "argo-logs",
        "echo one; echo two; GATE; echo three",
        "\n    sidecars:\n    - {name: web, image: alpine, command: [sh, -c, 'echo from the sidecar; sleep 30']}",
    );
    let path = format!("/api/v1/workflows/default/{name}/log");
    // followed: the lines there are, then the next as it comes, then the end
    let r = http()
        .get(srv.url(&format!("{path}?logOptions.follow=true")))
        .call()
        .unwrap();
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    let mut lines = std::io::BufReader::new(r.into_body().into_reader()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let one = next();
    assert_eq!(one["result"]["content"], "one", "{one}");
    assert!(one["result"]["podName"].is_string(), "{one}");
    assert_eq!(next()["result"]["content"], "two");
    std::fs::write(&go, "").unwrap();
    assert_eq!(next()["result"]["content"], "three");
    assert!(lines.next().is_none(), "the stream ends with the run");

    let contents = |query: &str| -> Vec<String> {
        let text = srv.text(&format!("{path}?{query}"));
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["result"]["content"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(
        contents("logOptions.container=main"),
        ["one", "two", "three"]
    );
    assert_eq!(contents("logOptions.container=web"), ["from the sidecar"]);
    assert_eq!(contents("grep=^t"), ["two", "three"]);
    assert_eq!(contents("logOptions.tailLines=1"), ["three"]);
    let mut r = http()
        .get(srv.url(&path))
        .header("Accept", "text/event-stream")
        .call()
        .unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert!(
        body.starts_with("data: {\"result\":{\"content\":\"one\""),
        "{body}"
    );
    let (status, body) = answer(
        http()
            .get(srv.url(&format!("{path}?logOptions.sinceSeconds=60")))
            .call(),
    );
    assert_eq!((status, body["code"].clone()), (400, json!(3)), "{body}");
}

/// Argo's watch (`listOptions.fieldSelector=metadata.name=NAME`, what `argo wait` and `argo
/// submit --watch` read): the run `ADDED` as it is, then `MODIFIED` with the whole Workflow as
/// it changes, to its end (`status.finishedAt`), as JSON lines or event-stream data lines.
#[test]
fn argo_watch_streams_the_whole_workflow_to_its_end() {
    use std::io::BufRead;
    let sb = Sandbox::new();
    let (srv, go, name) = gated_run(&sb, "watched", "GATE; echo done", "");
    for sse in [false, true] {
        let mut rq = http().get(srv.url(&format!(
            "/api/v1/workflow-events/default?listOptions.fieldSelector=metadata.name={name}"
        )));
        if sse {
            rq = rq.header("Accept", "text/event-stream");
        }
        let r = rq.call().unwrap();
        let mut lines = std::io::BufReader::new(r.into_body().into_reader())
            .lines()
            .map(|l| l.unwrap())
            .filter(|l| !l.is_empty());
        let mut next = || -> Value {
            let l = lines.next().unwrap();
            let l = if sse {
                l.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("{l}"))
                    .to_string()
            } else {
                l
            };
            serde_json::from_str::<Value>(&l).unwrap()["result"].clone()
        };
        let added = next();
        assert_eq!(added["type"], "ADDED", "{added}");
        assert_eq!(added["object"]["metadata"]["name"], name.as_str());
        if sse {
            // the run ended in the first pass: it is all there
            assert_eq!(added["object"]["status"]["phase"], "Succeeded", "{added}");
            continue;
        }
        std::fs::write(&go, "").unwrap();
        let last = loop {
            let m = next();
            assert_eq!(m["type"], "MODIFIED", "{m}");
            if m["object"]["status"]["finishedAt"].is_string() {
                break m;
            }
        };
        assert_eq!(last["object"]["status"]["phase"], "Succeeded", "{last}");
        assert!(last["object"]["status"]["nodes"].is_object(), "{last}");
    }
}
