//! The CLI against a `weir server` (`--server URL` or `WEIR_SERVER`, with `WEIR_TOKEN`): the
//! same verbs as on a local database, over the REST API and its event streams.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::usage::{Invalid, Usage};

pub struct Remote {
    base: String,
    token: Option<String>,
    pub namespace: String,
    client: reqwest::blocking::Client,
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Remote {
    pub fn new(base: &str, token: Option<String>, namespace: String) -> Result<Remote> {
        Ok(Remote {
            base: base.trim_end_matches('/').to_string(),
            token,
            namespace,
            // no overall timeout: followed logs and event streams last as long as the run
            client: reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .context("starting the HTTP client")?,
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<reqwest::blocking::Response> {
        let url = format!("{}{path}", self.base);
        let mut rq = match method {
            "GET" => self.client.get(&url),
            "DELETE" => self.client.delete(&url),
            "POST" => self.client.post(&url),
            _ => self.client.put(&url),
        };
        if let Some(t) = &self.token {
            rq = rq.header("Authorization", format!("Bearer {t}"));
        }
        if matches!(method, "POST" | "PUT") {
            let (ctype, text) = body.unwrap_or(("application/json", "{}".into()));
            rq = rq.header("Content-Type", ctype).body(text);
        }
        rq.send().with_context(|| format!("{method} {url}"))
    }

    /// A JSON answer; an API error becomes a usage error (exit 2) with the server's message.
    fn call(&self, method: &str, path: &str, body: Option<(&str, String)>) -> Result<Value> {
        let r = self.request(method, path, body)?;
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
            let code = v["error"]["code"].as_str().unwrap_or("");
            if status >= 500 {
                bail!("the server answered {status} {code}: {msg}");
            }
            if code == "invalid_workflow" {
                return Err(Invalid(msg).into());
            }
            return Err(Usage(format!("{msg} ({status} {code})")).into());
        }
        Ok(v)
    }

    fn run_path(&self, name: &str) -> String {
        format!("/api/v1/workflows/{}/{}", enc(&self.namespace), enc(name))
    }

    /// Submits a workflow file (with its `--with` files as further documents).
    pub fn submit(&self, text: String, params: &[String], name: Option<&str>) -> Result<String> {
        let mut q = params
            .iter()
            .map(|p| format!("parameter={}", enc(p)))
            .collect::<Vec<_>>();
        if let Some(n) = name {
            q.push(format!("name={}", enc(n)));
        }
        let path = format!("/api/v1/workflows/{}?{}", enc(&self.namespace), q.join("&"));
        let v = self.call("POST", &path, Some(("application/yaml", text)))?;
        Ok(v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Follows a run to its end, printing task logs (unless `quiet`) and finished tasks.
    pub fn watch(&self, name: &str, logs: bool) -> Result<String> {
        let log_thread = logs.then(|| {
            let r = self.request(
                "GET",
                &format!("{}/log?follow=true", self.run_path(name)),
                None,
            );
            std::thread::spawn(move || {
                let Ok(r) = r else { return };
                for (event, data) in sse(r) {
                    if event == "log" {
                        println!("{data}");
                    } else if event == "end" {
                        break;
                    }
                }
            })
        });
        let r = self.request(
            "GET",
            &format!(
                "/api/v1/workflow-events/{}?name={}",
                enc(&self.namespace),
                enc(name)
            ),
            None,
        )?;
        let mut phase = String::new();
        let mut reported = std::collections::HashSet::new();
        for (event, data) in sse(r) {
            if event != "workflow" {
                continue;
            }
            let d: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            for n in d["nodes"].as_array().into_iter().flatten() {
                let done = matches!(n["phase"].as_str(), Some("Succeeded" | "Failed" | "Error"));
                if n["type"] == "Pod" && done && reported.insert(n["id"].to_string()) && !logs {
                    eprintln!(
                        "{} {}",
                        n["phase"].as_str().unwrap_or(""),
                        n["displayName"].as_str().unwrap_or("")
                    );
                }
            }
            phase = d["phase"].as_str().unwrap_or("").to_string();
            if matches!(phase.as_str(), "Succeeded" | "Failed" | "Error") {
                break;
            }
        }
        if let Some(t) = log_thread {
            let _ = t.join();
        }
        Ok(phase)
    }

    pub fn lineage(&self, target: &str, downstream: bool) -> Result<Value> {
        self.call(
            "GET",
            &format!(
                "/api/v1/lineage/{}?target={}&direction={}",
                enc(&self.namespace),
                enc(target),
                if downstream { "downstream" } else { "upstream" }
            ),
            None,
        )
    }

    pub fn metrics(&self, name: &str) -> Result<Value> {
        self.call("GET", &format!("{}/metrics", self.run_path(name)), None)
    }

    pub fn get(&self, name: &str) -> Result<Value> {
        self.call("GET", &self.run_path(name), None)
    }

    pub fn list(&self, status: Option<&str>, limit: usize) -> Result<Value> {
        let mut path = format!(
            "/api/v1/workflows/{}?limit={}",
            enc(&self.namespace),
            limit.clamp(1, 1000)
        );
        if let Some(s) = status {
            path += &format!("&phase={}", enc(s));
        }
        self.call("GET", &path, None)
    }

    pub fn action(&self, name: &str, verb: &str, body: Value) -> Result<Value> {
        self.call(
            "PUT",
            &format!("{}/{verb}", self.run_path(name)),
            Some(("application/json", body.to_string())),
        )
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        self.call("DELETE", &self.run_path(name), None).map(|_| ())
    }

    pub fn logs(&self, name: &str, node: Option<&str>, follow: bool) -> Result<()> {
        let mut path = format!("{}/log?follow={follow}", self.run_path(name));
        if let Some(n) = node {
            path += &format!("&nodeId={}", enc(n));
        }
        if !follow {
            let v = self.call("GET", &path, None)?;
            print!("{}", v.as_str().unwrap_or_default());
            return Ok(());
        }
        let r = self.request("GET", &path, None)?;
        if r.status().as_u16() >= 400 {
            self.call("GET", &path, None)?;
        }
        let mut out = std::io::stdout().lock();
        for (event, data) in sse(r) {
            match event.as_str() {
                "log" => {
                    let _ = writeln!(out, "{data}");
                }
                "error" => bail!("{data}"),
                "end" => break,
                _ => {}
            }
        }
        Ok(())
    }
}

/// (event, data) pairs of a Server-Sent Events response.
fn sse(r: reqwest::blocking::Response) -> impl Iterator<Item = (String, String)> {
    let mut lines = BufReader::new(r).lines();
    std::iter::from_fn(move || {
        let (mut event, mut data) = (String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.ok()?;
            if line.is_empty() {
                if !event.is_empty() || !data.is_empty() {
                    return Some((event, data));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        None
    })
}

/// The node tree of an Argo-shaped Workflow object, for `weir get` against a server.
pub fn get_text(wf: &Value) -> String {
    let nodes = wf["status"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut out = format!(
        "Name:       {}\nNamespace:  {}\nStatus:     {}\nCreated:    {}\n",
        wf["metadata"]["name"].as_str().unwrap_or(""),
        wf["metadata"]["namespace"].as_str().unwrap_or(""),
        wf["status"]["phase"].as_str().unwrap_or(""),
        wf["metadata"]["creationTimestamp"].as_str().unwrap_or("")
    );
    if let Some(m) = wf["status"]["message"].as_str() {
        out += &format!("Message:    {m}\n");
    }
    out += &format!("\n{:<40}{:<12}{:<14}MESSAGE\n", "STEP", "PHASE", "TYPE");
    fn walk(id: &str, depth: usize, nodes: &serde_json::Map<String, Value>, out: &mut String) {
        let Some(n) = nodes.get(id) else { return };
        let label = format!(
            "{}{}",
            "  ".repeat(depth),
            n["displayName"].as_str().unwrap_or(id)
        );
        *out += &format!(
            "{label:<40}{:<12}{:<14}{}\n",
            n["phase"].as_str().unwrap_or(""),
            n["type"].as_str().unwrap_or(""),
            n["message"].as_str().unwrap_or("")
        );
        for c in n["children"].as_array().into_iter().flatten() {
            walk(c.as_str().unwrap_or(""), depth + 1, nodes, out);
        }
    }
    let roots: Vec<&String> = nodes
        .iter()
        .filter(|(_, n)| n.get("boundaryID").is_none())
        .map(|(k, _)| k)
        .collect();
    for r in roots {
        walk(r, 0, &nodes, &mut out);
    }
    out
}

/// The run list as `weir list` prints it.
pub fn list_text(v: &Value) -> String {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let w = items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(4)
        .max(4)
        + 2;
    let mut out = format!("{:<w$}{:<12}{:<22}FINISHED\n", "NAME", "STATUS", "CREATED");
    for i in items {
        out += &format!(
            "{:<w$}{:<12}{:<22}{}\n",
            i["name"].as_str().unwrap_or(""),
            i["phase"].as_str().unwrap_or(""),
            i["createdAt"].as_str().unwrap_or(""),
            i["finishedAt"].as_str().unwrap_or("")
        );
    }
    out
}

/// The exit code for a finished phase.
pub fn exit(phase: &str) -> ExitCode {
    if phase == "Succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A resume request body.
pub fn resume_body(params: &[String], selector: Option<String>) -> Value {
    json!({"parameters": params, "nodeFieldSelector": selector})
}
