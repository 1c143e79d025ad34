//! Load on `weir server` over loopback: many Server-Sent-Event watchers while runs are submitted
//! at a steady rate. Checks that every watcher saw every phase change of every run of its
//! namespace (no lost event) and that no request failed; prints submission latency under load
//! next to the same measured on the idle server first (the baseline of this run).
//!
//!     cargo bench -p weir --bench api_load
//!     WEIR_LOAD_WATCHERS=1000 WEIR_LOAD_RATE=200 WEIR_LOAD_SECS=30 cargo bench -p weir --bench api_load

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKFLOW: &str = "apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: load-
spec:
  entrypoint: main
  templates:
  - name: main
    container:
      image: alpine
      command: [\"true\"]
";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Submits one run; (latency in ms, the run's name) or an error.
fn submit(a: &ureq::Agent, base: &str, auth: &str, ns: &str) -> Result<(f64, String), String> {
    let t = Instant::now();
    let mut r = a
        .post(format!("{base}/api/v1/workflows/{ns}"))
        .header("Authorization", auth)
        .content_type("application/yaml")
        .send(WORKFLOW)
        .map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok((
        ms,
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

fn main() {
    let watchers = env("WEIR_LOAD_WATCHERS", 1000);
    let rate = env("WEIR_LOAD_RATE", 200);
    let secs = env("WEIR_LOAD_SECS", 30);
    let namespaces = env("WEIR_LOAD_NAMESPACES", 100).max(1);
    let dir = tempfile::Builder::new()
        .prefix("weir-load-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let db = dir.path().join("weir.db");
    let weir = env!("CARGO_BIN_EXE_weir");
    let token = Command::new(weir)
        .args(["token", "create", "-n", "*", "--role", "editor"])
        .env("WEIR_DB", &db)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let auth = format!("Bearer {token}");
    let mut server = Command::new(weir)
        .args(["server", "--listen", "127.0.0.1:0"])
        .env("WEIR_DB", &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = format!(
        "http://{}",
        line.split("http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    );
    println!(
        "weir server at {base}; {watchers} watchers over {namespaces} namespaces, {rate} submissions/s for {secs} s"
    );

    // baseline: submissions one at a time on the idle server
    let a = agent();
    let mut idle: Vec<f64> = (0..200)
        .map(|_| submit(&a, &base, &auth, "idle").expect("idle submission").0)
        .collect();
    idle.sort_by(f64::total_cmp);

    // the watchers: each follows one namespace and records each run's phases in order
    let expected: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let submitting_done = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut handles = Vec::new();
    for w in 0..watchers {
        let ns = format!("ns-{}", w % namespaces);
        let (base, auth) = (base.clone(), auth.clone());
        let (expected, done, connected, errors) = (
            expected.clone(),
            submitting_done.clone(),
            connected.clone(),
            errors.clone(),
        );
        handles.push(
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || -> HashMap<String, Vec<String>> {
                    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
                    let r = agent()
                        .get(format!("{base}/api/v1/workflow-events/{ns}"))
                        .header("Authorization", &auth)
                        .call();
                    let r = match r {
                        Ok(r) if r.status().as_u16() == 200 => r,
                        other => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("watcher {w}: {other:?}"));
                            connected.fetch_add(1, Ordering::SeqCst);
                            return seen;
                        }
                    };
                    connected.fetch_add(1, Ordering::SeqCst);
                    let mut lines = BufReader::new(r.into_body().into_reader()).lines();
                    while let Some(Ok(l)) = lines.next() {
                        if let Some(data) = l.strip_prefix("data:") {
                            let v: serde_json::Value =
                                serde_json::from_str(data.trim()).unwrap_or_default();
                            let run = v["run"].as_str().unwrap_or_default().to_string();
                            let phase = v["phase"].as_str().unwrap_or_default().to_string();
                            let phases = seen.entry(run).or_default();
                            if phases.last() != Some(&phase) {
                                phases.push(phase);
                            }
                        }
                        if done.load(Ordering::SeqCst) {
                            let exp = expected.lock().unwrap();
                            let mine = exp.get(&ns).cloned().unwrap_or_default();
                            drop(exp);
                            if mine.iter().all(|r| {
                                seen.get(r).is_some_and(|p| {
                                    p.last().map(String::as_str) == Some("Succeeded")
                                })
                            }) {
                                break;
                            }
                        }
                    }
                    seen
                })
                .unwrap(),
        );
    }
    while connected.load(Ordering::SeqCst) < watchers {
        std::thread::sleep(Duration::from_millis(20));
    }

    // the load: `rate` submissions a second, spread over 8 submitters and the namespaces
    let submitters = 8;
    let per = rate as f64 / submitters as f64;
    let start = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let sub_handles: Vec<_> = (0..submitters)
        .map(|s| {
            let (base, auth, expected, latencies, errors) = (
                base.clone(),
                auth.clone(),
                expected.clone(),
                latencies.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                let mut k = 0usize;
                loop {
                    let due = start + Duration::from_secs_f64(k as f64 / per);
                    if due >= start + Duration::from_secs(secs as u64) {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let ns = format!("ns-{}", (s + k * submitters) % namespaces);
                    match submit(&a, &base, &auth, &ns) {
                        Ok((ms, name)) => {
                            latencies.lock().unwrap().push(ms);
                            expected.lock().unwrap().entry(ns).or_default().insert(name);
                        }
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                    k += 1;
                }
            })
        })
        .collect();
    for h in sub_handles {
        h.join().unwrap();
    }
    let submit_secs = start.elapsed().as_secs_f64();
    submitting_done.store(true, Ordering::SeqCst);
    // the last runs finish; their events end every watcher
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut results = Vec::new();
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !h.is_finished() {
            break;
        }
        results.push(h.join().unwrap());
    }
    let finished_watchers = results.len();
    let exp = expected.lock().unwrap().clone();
    let mut lost = 0usize;
    let mut checked = 0usize;
    for (w, seen) in results.iter().enumerate() {
        let ns = format!("ns-{}", w % namespaces);
        for run in exp.get(&ns).into_iter().flatten() {
            checked += 1;
            match seen.get(run) {
                Some(p)
                    if p.first().map(String::as_str) == Some("Running")
                        && p.last().map(String::as_str) == Some("Succeeded") => {}
                other => {
                    lost += 1;
                    if lost <= 5 {
                        eprintln!("watcher {w} of {ns}: run {run} seen as {other:?}");
                    }
                }
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let errors = errors.lock().unwrap();
    let submitted: usize = exp.values().map(HashSet::len).sum();
    println!();
    println!("| | submissions | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| idle server (baseline) | {} | {:.2} | {:.2} | {:.2} |",
        idle.len(),
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
        idle.last().unwrap_or(&0.0)
    );
    println!(
        "| under load | {} | {:.2} | {:.2} | {:.2} |",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().unwrap_or(&0.0)
    );
    println!();
    println!(
        "achieved {:.1} submissions/s; p99 under load / idle p99 = {:.2}x",
        submitted as f64 / submit_secs,
        percentile(&lat, 0.99) / percentile(&idle, 0.99).max(1e-9)
    );
    println!(
        "watchers finished: {finished_watchers}/{watchers}; (watcher, run) pairs checked: {checked}; lost: {lost}; request errors: {}",
        errors.len()
    );
    for e in errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    if lost > 0 || !errors.is_empty() || finished_watchers < watchers {
        std::process::exit(1);
    }
}
