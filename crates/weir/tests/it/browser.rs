//! The web UI in real headless Chromium, driven over WebDriver (Debian's chromium and
//! chromium-driver; `scripts/test` installs them).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ApiServer, Sandbox, answer, free_port, http, token};

/// A Chromium session through chromedriver, ended when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the browser test needs Debian's chromium and chromium-driver (scripts/test installs them)"
            );
        }
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let agent = http();
        let start = Instant::now();
        loop {
            if let Ok(mut r) = agent.get(format!("{base}/status")).call()
                && serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap_or_default())
                    .is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,900",
                format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap().to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let (status, v) = answer(r);
        assert_eq!(status, 200, "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Waits until `js` (an expression) is truthy in the page; returns its value.
    fn wait(&self, what: &str, js: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.script(&format!("return ({js});"));
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: not seen within 60 s; page: {}",
                self.script("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn find(&self, css: &str) -> String {
        self.wait(css, &format!("document.querySelector({css:?})"));
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/clear"), None);
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        );
    }

    fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None);
        base64_decode(b64.as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | val(c) << (18 - 6 * i));
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let take = 3 - pad.min(2);
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..take]);
    }
    out
}

const TEMPLATE: &str = "apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: greet
spec:
  entrypoint: main
  arguments:
    parameters:
    - name: who
      value: world
  templates:
  - name: main
    dag:
      tasks:
      - name: hello
        template: say
        arguments:
          parameters: [{name: text, value: 'hello {{workflow.parameters.who}}'}]
      - name: bye
        depends: hello
        template: say
        arguments:
          parameters: [{name: text, value: 'bye {{workflow.parameters.who}}'}]
  - name: say
    inputs:
      parameters: [{name: text}]
    script:
      image: python:3
      command: [sh]
      source: echo '{{inputs.parameters.text}}'
";

#[test]
fn the_ui_submits_a_template_with_a_parameter_and_shows_the_run_turning_green() {
    let sb = Sandbox::new();
    let editor = token(&sb, "default", "editor");
    let viewer = token(&sb, "default", "viewer");
    let srv = ApiServer::start(&sb, &[]);
    let (status, body) = answer(
        http()
            .post(srv.url("/api/v1/workflow-templates/default"))
            .header("Authorization", &format!("Bearer {editor}"))
            .content_type("application/yaml")
            .send(TEMPLATE),
    );
    assert_eq!(status, 200, "{body}");

    let b = Browser::start();
    b.goto(&srv.url(&format!("/#/templates?token={editor}")));
    b.click("#template-greet");
    b.type_into("input[name='param-who']", "browser");
    b.click("#submit");
    let hash = b.wait(
        "the run page",
        "location.hash.startsWith('#/runs/default/greet-') && location.hash",
    );
    let run = hash
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    // the graph: both tasks, joined by their dependency, turning green
    b.wait(
        "the run succeeding",
        "document.querySelector('#run-phase .badge')?.textContent === 'Succeeded'",
    );
    b.wait(
        "every task node green",
        "(() => { const pods = [...document.querySelectorAll('g.node[data-type=Pod]')]; \
         return pods.length === 2 && pods.every(g => g.dataset.phase === 'Succeeded'); })()",
    );
    assert_eq!(
        b.script("return document.querySelectorAll('#graph path.edge').length"),
        json!(2)
    );
    // a node's logs
    b.click("g.node[data-type=Pod]");
    let logs = b.wait(
        "the node's logs",
        "document.querySelector('#logs')?.textContent.includes('browser') && document.querySelector('#logs').textContent",
    );
    assert!(
        logs.as_str().unwrap().contains("hello browser")
            || logs.as_str().unwrap().contains("bye browser"),
        "{logs}"
    );
    assert!(b.script("return !!document.querySelector('#btn-resubmit')") == json!(true));
    let png = b.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&out).unwrap();
    let shot = out.join("run-page.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // a viewer sees the same run without the buttons that change it
    b.script("localStorage.clear(); return 1");
    b.goto(&srv.url(&format!("/?as=viewer#/runs/default/{run}?token={viewer}")));
    b.wait(
        "the run as a viewer",
        "document.querySelector('#run-phase .badge')?.textContent === 'Succeeded' && document.querySelectorAll('g.node').length > 0",
    );
    assert_eq!(
        b.script("return document.querySelectorAll('.actions button').length"),
        json!(0)
    );

    // a 5,000-node run: the graph collapses the fan-out into one counted node and the lists
    // render only the rows in view
    let wide = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: wide\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - name: each\n        template: pause\n        withSequence:\n          count: \"5000\"\n  - name: pause\n    suspend:\n      duration: \"0\"\n";
    let (status, body) = answer(
        http()
            .post(srv.url("/api/v1/workflows/default"))
            .header("Authorization", &format!("Bearer {editor}"))
            .content_type("application/yaml")
            .send(wide),
    );
    assert_eq!(status, 200, "{body}");
    b.goto(&srv.url(&format!("/?as=editor#/runs/default/wide?token={editor}")));
    b.wait(
        "the wide run succeeding",
        "document.querySelector('#run-phase .badge')?.textContent === 'Succeeded'",
    );
    let group = b.wait(
        "the collapsed group",
        "[...document.querySelectorAll('g.node[data-type=Group] text')].map(t => t.textContent).join(' ')",
    );
    assert!(
        group.as_str().unwrap().contains("5000 nodes")
            && group.as_str().unwrap().contains("5000 Succeeded"),
        "{group}"
    );
    let boxes = b.script("return document.querySelectorAll('g.node').length");
    assert!(boxes.as_u64().unwrap() < 20, "{boxes} boxes drawn");
    let rows = b.script("return document.querySelectorAll('#nodes .row').length");
    assert!(
        rows.as_u64().unwrap() < 100,
        "{rows} rows in the DOM for 5,002 nodes"
    );
    b.click("g.node[data-type=Group]");
    b.wait(
        "the group's member list",
        "document.querySelector('#panel h2')?.textContent === '5000 nodes'",
    );
    // scrolled to the end, the last members are drawn (and still only a screenful of rows)
    let last = b.wait(
        "the end of the member list",
        "(() => { const l = document.querySelector('#panel .vlist'); l.scrollTop = l.scrollHeight; \
         l.dispatchEvent(new Event('scroll')); return [...l.querySelectorAll('.row')].map(r => r.textContent).join('|'); })()",
    );
    assert!(last.as_str().unwrap().contains("each(4999:4999)"), "{last}");
    assert!(last.as_str().unwrap().matches('|').count() < 100);
}

#[test]
fn the_ui_plots_metric_curves_and_parameters_against_a_metric() {
    let sb = Sandbox::new();
    let editor = token(&sb, "default", "editor");
    let srv = ApiServer::start(&sb, &[]);
    let ml = std::fs::read_to_string(crate::support::repo_root().join("examples/ml-pipeline.yaml"))
        .unwrap();
    let mut runs = Vec::new();
    for rate in ["0.01", "0.05", "0.2"] {
        let (status, wf) = answer(
            http()
                .post(srv.url(&format!(
                    "/api/v1/workflows/default?parameter=learning-rate%3D{rate}"
                )))
                .header("Authorization", &format!("Bearer {editor}"))
                .content_type("application/yaml")
                .send(&ml),
        );
        assert_eq!(status, 200, "{wf}");
        runs.push(wf["metadata"]["name"].as_str().unwrap().to_string());
    }
    for run in &runs {
        let events = http()
            .get(srv.url(&format!("/api/v1/workflow-events/default?name={run}")))
            .header("Authorization", &format!("Bearer {editor}"))
            .call()
            .unwrap();
        let mut sse = crate::support::SseReader::new(events);
        while let Some(ev) = sse.next_event() {
            let d: Value = serde_json::from_str(&ev.data).unwrap();
            if d["phase"] == "Succeeded" {
                break;
            }
            assert!(
                !matches!(d["phase"].as_str(), Some("Failed" | "Error")),
                "{d}"
            );
        }
    }
    let b = Browser::start();
    // one run: a loss curve per training node, and the accuracy each reported
    b.goto(&srv.url(&format!("/#/runs/default/{}?token={editor}", runs[0])));
    b.wait(
        "the run succeeding",
        "document.querySelector('#run-phase .badge')?.textContent === 'Succeeded'",
    );
    let lines = b.wait(
        "the loss curves",
        "document.querySelectorAll('#metrics svg[data-metric=loss] polyline.series').length",
    );
    assert_eq!(lines, json!(3), "three training nodes");
    // a model's lineage, drawn in the node panel: back to the dataset and preprocess
    b.script(
        "[...document.querySelectorAll('g.node')].find(g => g.querySelector('title').textContent.startsWith('train(2'))\
         .dispatchEvent(new MouseEvent('click')); return 1",
    );
    b.click("#artifacts .lineage-link");
    let chain = b.wait(
        "the model's lineage",
        "[...document.querySelectorAll('#lineage .lin-node b')].map(b => b.textContent).join(' <- ')",
    );
    assert!(
        chain.as_str().unwrap().starts_with("train(2")
            && chain.as_str().unwrap().ends_with("preprocess"),
        "{chain}"
    );
    // three runs compared: their parameters side by side and every curve overlaid
    b.goto(&srv.url(&format!("/?c=1#/compare?runs={}", runs.join(","))));
    let rates = b.wait(
        "the comparison table",
        "[...document.querySelectorAll('#compare-table tr')].find(r => r.textContent.startsWith('param learning-rate'))?.textContent",
    );
    assert!(rates.as_str().unwrap().contains("0.010.050.2"), "{rates}");
    let overlaid = b.wait(
        "nine loss curves overlaid",
        "document.querySelectorAll('svg[data-metric=loss] polyline.series').length === 9 && 9",
    );
    assert_eq!(overlaid, json!(9));
    let png = b.screenshot();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics-compare.png"), &png).unwrap();
    // a scatter of a parameter against a metric over the runs
    b.goto(&srv.url("/?e=1#/experiments?labels=example%3Dml-pipeline"));
    b.wait(
        "the parameter list",
        "document.querySelector('#x-param')?.options.length > 0",
    );
    b.script(
        "const p = document.querySelector('#x-param'); p.value = 'learning-rate'; p.dispatchEvent(new Event('change'));\
         const m = document.querySelector('#x-metric'); m.value = 'loss'; m.dispatchEvent(new Event('change')); return 1",
    );
    let points = b.wait(
        "a point per run",
        "document.querySelectorAll('#scatter circle.point').length",
    );
    assert_eq!(points, json!(3));
}
