//! Argo's semantics where weir once differed, each test citing what Argo does.

use crate::support::Sandbox;

/// A script template with `args`: Argo runs `command + args + [script file]`
/// (workflow/controller/operator.go, `executeScript`: `mainCtr.Args = append(mainCtr.Args,
/// common.ExecutorScriptSourcePath)`), so args go to the interpreter and the script gets none.
/// Hera's runner (`python -m hera.workflows.runner -e module:function` as args) relies on it.
#[test]
fn a_script_templates_args_come_before_its_script() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "script-args.yaml",
        "kind: Workflow\nmetadata: {name: script-args}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    script:\n      image: python:3\n      command: [python3]\n      args: ['-W', 'error', '-c', 'import sys; print(\"interpreter args\", sys.argv[1:])']\n      source: |\n        print('the script ran, and it should not have')\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    // `python3 -W error -c CODE SCRIPT`: the -c code runs with the script's path as its argument
    assert!(
        out.stdout.contains("interpreter args [") && out.stdout.contains(".weir-script']"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("should not have"), "{}", out.stdout);
}

/// `depends` is evaluated, not the mere presence of a failure: a bare task name means
/// Succeeded, Skipped or Daemoned, so `a && (b || c)` holds when b failed and c succeeded, and
/// the task runs (Argo's `evaluateDependsLogic`). The DAG's phase is its target tasks' branch
/// phases (`assessDAGPhase`): here the only target, d, succeeded, so the workflow succeeds.
#[test]
fn depends_with_an_or_runs_after_a_failure_it_allows() {
    let sb = Sandbox::new();
    let marker = sb.dir.join("d-ran");
    let wf = sb.write(
        "depends-or.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: depends-or}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    dag:\n      tasks:\n      - {{name: a, template: ok}}\n      - {{name: b, template: bad}}\n      - {{name: c, template: ok}}\n      - {{name: d, template: mark, depends: 'a && (b || c)'}}\n  - name: ok\n    container: {{image: alpine, command: ['true']}}\n  - name: bad\n    container: {{image: alpine, command: ['false']}}\n  - name: mark\n    container: {{image: alpine, command: [touch, '{}']}}\n",
            marker.display()
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(marker.exists(), "d did not run: {}", out.all());
    let got = sb.weir(&["get", "depends-or", "-o", "json"]);
    let run: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(run["status"]["phase"], "Succeeded", "{}", got.stdout);
    assert_eq!(
        crate::support::node(&run, "b")["phase"],
        "Failed",
        "{}",
        got.stdout
    );
}

/// A step's exit hook receives artifact arguments `from` the step's own outputs, as Argo's
/// `runOnExitNode` resolves a hook's arguments in the step's scope (the hook never errors "was
/// not supplied" and leaves the run Succeeded).
#[test]
fn a_steps_exit_hook_gets_artifacts_from_the_steps_outputs() {
    let sb = Sandbox::new();
    let marker = sb.dir.join("hook-saw");
    let wf = sb.write(
        "hook-artifacts.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: hook-artifacts}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    steps:\n    - - name: produce\n        template: produce\n        hooks:\n          exit:\n            template: consume\n            arguments:\n              artifacts: [{{name: in, from: '{{{{steps.produce.outputs.artifacts.out}}}}'}}]\n  - name: produce\n    container: {{image: alpine, command: [sh, -c, 'echo made-by-produce > /tmp/out']}}\n    outputs: {{artifacts: [{{name: out, path: /tmp/out}}]}}\n  - name: consume\n    inputs: {{artifacts: [{{name: in, path: /tmp/in}}]}}\n    container: {{image: alpine, command: [sh, -c, 'cp /tmp/in {}']}}\n",
            marker.display()
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap(), "--no-logs"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let saw = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(saw.trim(), "made-by-produce", "{}", out.all());
}

/// A `volumeMounts[].name` given by a parameter is substituted (Argo substitutes the whole
/// template before it builds the pod), so the mount finds its volume.
#[test]
fn a_templated_volume_mount_name_is_substituted() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "templated-mount.yaml",
        "kind: Workflow\nmetadata: {name: templated-mount}\nspec:\n  entrypoint: m\n  volumes: [{name: scratch, emptyDir: {}}]\n  templates:\n  - name: m\n    steps:\n    - - {name: use, template: use, arguments: {parameters: [{name: vol, value: scratch}]}}\n  - name: use\n    inputs: {parameters: [{name: vol}]}\n    container:\n      image: alpine\n      command: [sh, -c, 'echo on-the-volume > /tmp/vol/f && cat /tmp/vol/f']\n      volumeMounts: [{name: '{{inputs.parameters.vol}}', mountPath: /tmp/vol}]\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("on-the-volume"), "{}", out.all());
}

/// Argo's test image `argoproj/argosay` runs on this host: weir's stand-in (`weir argosay`)
/// takes the image's place, with or without `command: [/argosay]`, and its exit code is the
/// task's.
#[test]
fn argosay_fixtures_run_with_the_built_in_stand_in() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "argosay.yaml",
        "kind: Workflow\nmetadata: {name: argosay}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    steps:\n    - - {name: write, template: write}\n    - - {name: say, template: say, arguments: {parameters: [{name: msg, value: '{{steps.write.outputs.parameters.p}}'}]}}\n  - name: write\n    container: {image: 'argoproj/argosay:v2', args: [echo, 'written by argosay', /tmp/deep/msg]}\n    outputs: {parameters: [{name: p, valueFrom: {path: /tmp/deep/msg}}]}\n  - name: say\n    inputs: {parameters: [{name: msg}]}\n    container: {image: 'argoproj/argosay:v2', command: [/argosay], args: [echo, 'said {{inputs.parameters.msg}}']}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("said written by argosay"),
        "{}",
        out.all()
    );
    let failing = sb.write(
        "argosay-exit.yaml",
        "kind: Workflow\nmetadata: {name: argosay-exit}\nspec:\n  entrypoint: t\n  templates:\n  - name: t\n    container: {image: 'argoproj/argosay:v2', args: [exit, '3']}\n",
    );
    let out = sb.weir(&["run", failing.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let run: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(run["status"]["phase"], "Failed", "{}", out.stdout);
    assert!(
        run["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code 3"),
        "{}",
        out.stdout
    );
}

/// A key-only output artifact, archived as by default, is read back by a key-only input of the
/// same key (Argo's key names the object, whatever its archive).
#[test]
fn a_key_only_archived_output_is_read_back_by_its_key() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "key-only.yaml",
        "kind: Workflow\nmetadata: {name: key-only}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    dag:\n      tasks:\n      - {name: generate, template: generate}\n      - {name: consume, template: consume, depends: generate}\n  - name: generate\n    container: {image: alpine, command: [sh, -c, 'echo kept-by-key > /tmp/file']}\n    outputs: {artifacts: [{name: file, path: /tmp/file, s3: {key: my-file}}]}\n  - name: consume\n    inputs: {artifacts: [{name: file, path: /tmp/in, s3: {key: my-file}}]}\n    container: {image: alpine, command: [cat, /tmp/in]}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("kept-by-key"), "{}", out.all());
}

/// A declared output the task did not write fails its node, as Argo's executor does
/// (workflow/executor/executor.go, `saveArtifact`: a missing path is an error unless the
/// artifact is `optional`), never an empty artifact and a Succeeded node. The working directory
/// is the container's, `/` where the image sets none (Argo sets no `workingDir` of its own), so
/// a relative write does not land in `/tmp`.
#[test]
fn a_declared_output_the_task_did_not_write_fails_its_node() {
    let sb = Sandbox::new();
    let name = format!("weir-it-{}", std::process::id());
    let wf = sb.write(
        "missing-outputs.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: missing-outputs}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    steps:\n    - - {{name: relative, template: relative}}\n      - {{name: root, template: root}}\n      - {{name: optional, template: optional}}\n  - name: relative\n    script:\n      image: alpine\n      command: [sh]\n      source: 'pwd; echo hi > out.txt'\n    outputs:\n      artifacts: [{{name: out, path: /tmp/out.txt}}]\n  - name: root\n    script:\n      image: alpine\n      command: [sh]\n      source: 'echo hi > /elsewhere.txt'\n    outputs:\n      artifacts: [{{name: out, path: /{name}.txt}}]\n  - name: optional\n    script:\n      image: alpine\n      command: [sh]\n      source: 'true'\n    outputs:\n      artifacts: [{{name: out, path: /{name}.txt, optional: true}}]\n      parameters: [{{name: p, valueFrom: {{path: /{name}-p, default: dflt}}}}]\n"
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    let got = sb.weir(&["get", "missing-outputs", "-o", "json"]);
    let run: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    for step in ["relative", "root"] {
        let node = crate::support::node(&run, step);
        assert_ne!(node["phase"], "Succeeded", "{step}: {}", got.stdout);
        assert!(
            node["message"].as_str().unwrap_or("").contains("not found"),
            "{step}: {}",
            got.stdout
        );
    }
    let optional = crate::support::node(&run, "optional");
    assert_eq!(optional["phase"], "Succeeded", "{}", got.stdout);
    assert_eq!(
        optional["outputs"]["parameters"][0]["value"], "dflt",
        "{}",
        got.stdout
    );
    // the relative write happened in the task's own root
    let logs = sb.weir(&["logs", "missing-outputs"]);
    assert!(logs.stdout.contains("relative: /\n"), "{}", logs.stdout);
}

/// A task's paths outside /tmp (root-level files, private top-level directories, volumes, a
/// working directory) are made in a root of the task's own: nothing appears in the host's `/`,
/// during the run or after it, while the task reads and writes them as in a container.
#[test]
fn a_tasks_root_level_paths_leave_the_hosts_root_as_it_was() {
    let sb = Sandbox::new();
    let top = format!("weir-it-root-{}", std::process::id());
    let wf = sb.write(
        "own-root.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: own-root}}\nspec:\n  entrypoint: m\n  volumes: [{{name: v, emptyDir: {{}}}}]\n  templates:\n  - name: m\n    steps:\n    - - {{name: write, template: write}}\n    - - name: read\n        template: read\n        arguments:\n          artifacts: [{{name: a, from: '{{{{steps.write.outputs.artifacts.dir}}}}'}}]\n  - name: write\n    script:\n      image: alpine\n      command: [sh]\n      workingDir: /{top}-wd\n      volumeMounts: [{{name: v, mountPath: /{top}-vol}}]\n      source: |\n        set -e\n        pwd\n        mkdir -p /{top}/out && echo deep > /{top}/out/f\n        echo file > /{top}.txt\n        echo vol > /{top}-vol/v\n        test -e /usr/bin/env && test -d /etc\n    outputs:\n      parameters: [{{name: p, valueFrom: {{path: /{top}.txt}}}}]\n      artifacts: [{{name: dir, path: /{top}/out}}]\n  - name: read\n    inputs:\n      artifacts: [{{name: a, path: /{top}-in}}]\n    script:\n      image: alpine\n      command: [sh]\n      source: 'cat /{top}-in/f; ls /'\n"
        ),
    );
    let before = root_listing();
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(&format!("write: /{top}-wd")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("read: deep"), "{}", out.stdout);
    let got = sb.weir(&["get", "own-root", "-o", "json"]);
    let run: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    let write = crate::support::node(&run, "write");
    assert_eq!(
        write["outputs"]["parameters"][0]["value"], "file",
        "{}",
        got.stdout
    );
    let after = root_listing();
    let new: Vec<&String> = after.iter().filter(|e| !before.contains(e)).collect();
    assert!(
        !new.iter().any(|e| e.starts_with(&top)),
        "the run left {new:?} in /"
    );
}

fn root_listing() -> Vec<String> {
    std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Templates are checked as a run reaches them. One WorkflowTemplate of a `--with` bundle that
/// runs its image's own entrypoint does not stop runs that never use it (Argo's own tests apply
/// all their templates first); a run that reaches it fails at that node, with the reason, and
/// a branch not taken never does. `weir lint` accepts a WorkflowTemplate without `entrypoint`
/// (Argo's `ValidateWorkflowTemplate`: `IgnoreEntrypoint`) and refuses a workflow whose
/// entrypoint input is never supplied (Argo's `ProcessArgs` at submit: "inputs.parameters.NAME
/// was not supplied").
#[test]
fn templates_are_checked_as_a_run_reaches_them() {
    let sb = Sandbox::new();
    let lib = sb.write(
        "lib.yaml",
        "kind: WorkflowTemplate\nmetadata: {name: image-only}\nspec:\n  templates:\n  - name: whale\n    container: {image: docker/whalesay}\n---\nkind: WorkflowTemplate\nmetadata: {name: host}\nspec:\n  templates:\n  - name: hi\n    container: {image: alpine, command: [echo, hi]}\n",
    );
    let wf = |name: &str, whale_when: &str| {
        sb.write(
            &format!("{name}.yaml"),
            &format!(
                "kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    steps:\n    - - {{name: hi, templateRef: {{name: host, template: hi}}}}\n    - - {{name: whale, templateRef: {{name: image-only, template: whale}}, when: '{whale_when}'}}\n"
            ),
        )
    };
    let run = |file: std::path::PathBuf| {
        sb.weir(&[
            "run",
            file.to_str().unwrap(),
            "--with",
            lib.to_str().unwrap(),
            "--no-logs",
        ])
    };
    let skipped = run(wf("not-taken", "false"));
    assert_eq!(skipped.code, 0, "{}", skipped.all());
    let reached = run(wf("taken", "true"));
    assert_eq!(reached.code, 1, "{}", reached.all());
    let got = sb.weir(&["get", "taken", "-o", "json"]);
    let taken: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(crate::support::node(&taken, "hi")["phase"], "Succeeded");
    let whale = crate::support::node(&taken, "whale");
    assert!(
        whale["message"]
            .as_str()
            .unwrap_or("")
            .contains("image's own entrypoint (`docker/whalesay`) cannot run on this host"),
        "{}",
        got.stdout
    );
    // lint: a template without entrypoint is fine, and warned about the image-only container
    let lint = sb.weir(&["lint", lib.to_str().unwrap()]);
    assert_eq!(lint.code, 0, "{}", lint.all());
    assert!(
        lint.stderr.contains("warning: spec.templates[0].container")
            && lint.stderr.contains("so its nodes will fail"),
        "{}",
        lint.all()
    );
    let unsupplied = sb.write(
        "unsupplied.yaml",
        "kind: Workflow\nmetadata: {name: unsupplied}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    inputs: {parameters: [{name: message}]}\n    container: {image: alpine, command: [echo, '{{inputs.parameters.message}}']}\n",
    );
    let lint = sb.weir(&["lint", unsupplied.to_str().unwrap()]);
    assert_eq!(lint.code, 2, "{}", lint.all());
    assert!(
        lint.stderr
            .contains("inputs.parameters.message was not supplied"),
        "{}",
        lint.all()
    );
    // supplied as a workflow argument, it passes
    let supplied = sb.write(
        "supplied.yaml",
        "kind: Workflow\nmetadata: {name: supplied}\nspec:\n  entrypoint: m\n  arguments: {parameters: [{name: message, value: hi}]}\n  templates:\n  - name: m\n    inputs: {parameters: [{name: message}]}\n    container: {image: alpine, command: [echo, '{{inputs.parameters.message}}']}\n",
    );
    let lint = sb.weir(&["lint", supplied.to_str().unwrap()]);
    assert_eq!(lint.code, 0, "{}", lint.all());
}

/// A container set's outputs are read when the whole set has ended, as Argo reads them when
/// the pod ends: an output in the set's shared volume that another container writes after
/// `main` exited is still main's output.
#[test]
fn a_container_sets_shared_outputs_are_read_after_every_container_ended() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "late-writer.yaml",
        "kind: Workflow\nmetadata: {name: late-writer}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    volumes: [{name: ws, emptyDir: {}}]\n    containerSet:\n      volumeMounts: [{name: ws, mountPath: /ws}]\n      containers:\n      - name: a\n        image: alpine\n        command: [sh, -c, 'until test -s /ws/main.pid; do sleep 0.01; done; pid=$(cat /ws/main.pid); while kill -0 $pid 2>/dev/null; do sleep 0.01; done; echo late > /ws/out']\n      - name: main\n        image: alpine\n        command: [sh, -c, 'echo $$ > /ws/main.pid; echo main done']\n    outputs:\n      parameters: [{name: out, valueFrom: {path: /ws/out}}]\n      artifacts: [{name: out, path: /ws/out}]\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = sb.weir(&["get", "late-writer", "-o", "json"]);
    let run: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    let root = crate::support::node(&run, "late-writer");
    assert_eq!(
        root["outputs"]["parameters"][0]["value"], "late",
        "{}",
        got.stdout
    );
    assert_eq!(
        root["outputs"]["artifacts"][0]["name"], "out",
        "{}",
        got.stdout
    );
}

/// A web server of the test's own on loopback for `http` and `artifactory` artifacts: basic
/// authentication with a header (`/basic/`, `/art/`), an OAuth2 token endpoint (`POST
/// /token`, client credentials) and the bearer token it gives (`/bearer/`), a client
/// certificate over TLS (`/cert/`, when started with the server's certificate and the CA), and
/// PUT, which stores what it is sent so a GET gives it back.
const ARTIFACT_SERVER: &str = r#"import base64, http.server, json, os, ssl, sys, urllib.parse
store = sys.argv[1]
def basic(u, p):
    return 'Basic ' + base64.b64encode(f'{u}:{p}'.encode()).decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, code, body=b''):
        self.send_response(code)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def allowed(self):
        a = self.headers.get('Authorization', '')
        if self.path.startswith(('/basic/', '/art/')):
            return a == basic('alice', 'pa:ss w0rd')
        if self.path.startswith('/bearer/'):
            return a == 'Bearer tok-123'
        return True
    def kept(self):
        return os.path.join(store, urllib.parse.quote(self.path, safe=''))
    def do_GET(self):
        if self.path.startswith('/basic/') and self.headers.get('X-Custom') != 'yes':
            return self.reply(400, b'no X-Custom header')
        if not self.allowed():
            return self.reply(401)
        if os.path.exists(self.kept()):
            return self.reply(200, open(self.kept(), 'rb').read())
        if self.path.startswith('/art/'):
            return self.reply(404)
        self.reply(200, ('content of ' + self.path).encode())
    def do_PUT(self):
        if not self.allowed():
            return self.reply(401)
        body = self.rfile.read(int(self.headers['Content-Length']))
        open(self.kept(), 'wb').write(body)
        self.reply(201)
    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers['Content-Length'])).decode())
        ok = (self.headers.get('Authorization') == basic('my-client', 'my-secret')
              and form.get('grant_type') == ['client_credentials']
              and form.get('scope') == ['read write']
              and form.get('customkey') == ['customvalue'])
        if not ok:
            return self.reply(401, b'{"error": "invalid_client"}')
        self.reply(200, json.dumps({'access_token': 'tok-123', 'token_type': 'bearer'}).encode())
s = http.server.HTTPServer(('127.0.0.1', 0), H)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(sys.argv[4])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// `http` and `artifactory` artifacts as Argo's HTTP artifact driver handles them
/// (workflow/artifacts/http/http.go): a GET with the artifact's headers and basic
/// authentication, or the bearer token of its OAuth2 client-credentials grant
/// (clients.go, `CreateOauth2Client`); outputs are a PUT of the stored file (`Save`), to an
/// artifactory URL with its user name and password; a workflow's own artifact arguments are
/// fetched like any other input (Argo's `arguments-artifacts.yaml`).
#[test]
fn http_and_artifactory_artifacts_are_fetched_and_sent_with_their_credentials() {
    let sb = Sandbox::new();
    let store = sb.dir.join("web-store");
    std::fs::create_dir_all(&store).unwrap();
    let web = crate::support::WebServer::script(ARTIFACT_SERVER, &[store.as_os_str()]);
    let base = format!("http://127.0.0.1:{}", web.1);
    let secrets = sb.write(
        "secrets.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: web}}\nstringData:\n  user: alice\n  pass: 'pa:ss w0rd'\n  client: my-client\n  secret: my-secret\n  token-url: '{base}/token'\n"
        ),
    );
    let basic = "basicAuth: {usernameSecret: {name: web, key: user}, passwordSecret: {name: web, key: pass}}";
    let oauth = "oauth2: {clientIDSecret: {name: web, key: client}, clientSecretSecret: {name: web, key: secret}, tokenURLSecret: {name: web, key: token-url}, scopes: [read, write], endpointParams: [{key: customkey, value: customvalue}]}";
    let creds = "usernameSecret: {name: web, key: user}, passwordSecret: {name: web, key: pass}";
    let wf = sb.write(
        "http-artifacts.yaml",
        &format!(
            "kind: Workflow
metadata: {{name: http-artifacts}}
spec:
  entrypoint: m
  arguments:
    artifacts:
    - {{name: plain, http: {{url: '{base}/plain/kubectl'}}}}
  templates:
  - name: m
    inputs:
      artifacts: [{{name: plain}}]
    steps:
    - - name: read
        template: read
        arguments:
          artifacts: [{{name: plain, from: '{{{{inputs.artifacts.plain}}}}'}}]
    - - {{name: back, template: back}}
  - name: read
    inputs:
      artifacts:
      - {{name: plain, path: /tmp/plain.txt}}
      - name: basic
        path: /tmp/basic.txt
        http: {{url: '{base}/basic/a.txt', headers: [{{name: X-Custom, value: 'yes'}}], auth: {{{basic}}}}}
      - name: oauth
        path: /tmp/oauth.txt
        http: {{url: '{base}/bearer/b.txt', auth: {{{oauth}}}}}
    script:
      image: alpine
      command: [sh]
      source: |
        cat /tmp/plain.txt /tmp/basic.txt /tmp/oauth.txt
        echo sent over http > /tmp/up.txt
        echo to artifactory > /tmp/art.txt
    outputs:
      artifacts:
      - name: up
        path: /tmp/up.txt
        archive: {{none: {{}}}}
        http: {{url: '{base}/basic/up.txt', auth: {{{basic}}}}}
      - name: art
        path: /tmp/art.txt
        artifactory: {{url: '{base}/art/hello.tgz', {creds}}}
  - name: back
    inputs:
      artifacts:
      - name: message
        path: /tmp/message
        artifactory: {{url: '{base}/art/hello.tgz', {creds}}}
    container: {{image: alpine, command: [cat, /tmp/message]}}
"
        ),
    );
    let out = sb.weir(&[
        "run",
        wf.to_str().unwrap(),
        "--with",
        secrets.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    for line in [
        "content of /plain/kubectl",
        "content of /basic/a.txt",
        "content of /bearer/b.txt",
        "back: to artifactory",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
    // the PUT carried the file itself (`archive: none`), with its credentials
    let put = std::fs::read_to_string(store.join("%2Fbasic%2Fup.txt")).unwrap();
    assert_eq!(put, "sent over http\n");
    assert!(!out.all().contains("pa:ss w0rd"), "{}", out.all());
    // a wrong password is refused by the server: the node fails, naming the status
    let wrong = sb.write(
        "wrong.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web}\nstringData:\n  user: alice\n  pass: nope\n",
    );
    let bad = sb.write(
        "bad.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: bad-creds}}\nspec:\n  entrypoint: r\n  templates:\n  - name: r\n    inputs:\n      artifacts:\n      - name: basic\n        path: /tmp/basic.txt\n        http: {{url: '{base}/basic/a.txt', headers: [{{name: X-Custom, value: 'yes'}}], auth: {{{basic}}}}}\n    container: {{image: alpine, command: [cat, /tmp/basic.txt]}}\n"
        ),
    );
    let out = sb.weir(&[
        "run",
        bad.to_str().unwrap(),
        "--with",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("401"), "{}", out.stdout);
}

/// An `http` artifact with `auth.clientCert` presents that certificate (Argo's
/// `CreateClientWithCertificate`) to a server that requires one.
#[test]
fn an_http_artifact_presents_its_client_certificate() {
    let sb = Sandbox::new();
    crate::support::test_pki(&sb.dir);
    let store = sb.dir.join("tls-store");
    std::fs::create_dir_all(&store).unwrap();
    let d = |f: &str| sb.dir.join(f);
    let web = crate::support::WebServer::script(
        ARTIFACT_SERVER,
        &[
            store.as_os_str(),
            d("server.pem").as_os_str(),
            d("server.key").as_os_str(),
            d("ca.pem").as_os_str(),
        ],
    );
    let read = |f: &str| std::fs::read_to_string(d(f)).unwrap();
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let secrets = sb.write(
        "cert-secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: cert-sec}}\nstringData:\n  certificate.pem: |\n{}  key.pem: |\n{}",
            indent(read("client.pem")),
            indent(read("client.key"))
        ),
    );
    let wf = |name: &str, auth: &str| {
        sb.write(
            &format!("{name}.yaml"),
            &format!(
                "kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: r\n  templates:\n  - name: r\n    inputs:\n      artifacts:\n      - name: a\n        path: /tmp/a.txt\n        http: {{url: 'https://127.0.0.1:{}/cert/a.txt'{auth}}}\n    container: {{image: alpine, command: [cat, /tmp/a.txt]}}\n",
                web.1
            ),
        )
    };
    let run = |file: std::path::PathBuf| {
        sb.cmd(&[
            "run",
            file.to_str().unwrap(),
            "--with",
            secrets.to_str().unwrap(),
        ])
        .env("SSL_CERT_FILE", d("ca.pem"))
        .output()
        .unwrap()
    };
    let with = run(wf(
        "with-cert",
        ", auth: {clientCert: {clientCertSecret: {name: cert-sec, key: certificate.pem}, clientKeySecret: {name: cert-sec, key: key.pem}}}",
    ));
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(stdout.contains("content of /cert/a.txt"), "{stdout}");
    // without it, the server ends the handshake
    let without = run(wf("without-cert", ""));
    assert_eq!(
        without.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&without.stdout)
    );
}

/// An output parameter's `valueFrom.path` at the root, with no extension, is a file the task
/// writes (Argo's executor reads the parameter from that file of the container's filesystem,
/// `SaveParameters`), never a directory weir made there; and the host's `/` is left alone.
#[test]
fn an_output_parameter_at_a_root_path_is_a_file_the_task_writes() {
    let sb = Sandbox::new();
    let path = format!("/weir-it-root-param-{}", std::process::id());
    let wf = sb.write(
        "root-param.yaml",
        &format!(
            "kind: Workflow\nmetadata: {{name: root-param}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    steps:\n    - - {{name: w, template: w}}\n    - - {{name: r, template: r, arguments: {{parameters: [{{name: v, value: '{{{{steps.w.outputs.parameters.out}}}}'}}]}}}}\n  - name: w\n    container: {{image: alpine, command: [sh, -c, 'echo hello > {path}']}}\n    outputs: {{parameters: [{{name: out, valueFrom: {{path: {path}}}}}]}}\n  - name: r\n    inputs: {{parameters: [{{name: v}}]}}\n    container: {{image: alpine, command: [echo, 'got {{{{inputs.parameters.v}}}}']}}\n"
        ),
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("r: got hello"), "{}", out.stdout);
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} was left on the host"
    );
}

/// `tasks.X.outputs.parameters.P` of a fanned-out task is a JSON list in which each value that
/// is itself JSON is embedded as JSON, not as a string (Argo's `aggregatedJsonValueList`, in
/// workflow/controller/operator.go).
#[test]
fn a_fanned_out_tasks_json_outputs_are_aggregated_as_json() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "aggregate.yaml",
        "kind: Workflow\nmetadata: {name: aggregate}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    dag:\n      tasks:\n      - {name: gen, template: gen, arguments: {parameters: [{name: n, value: '{{item}}'}]}, withItems: [1, 2]}\n      - name: show\n        dependencies: [gen]\n        template: show\n        arguments:\n          parameters:\n          - {name: all, value: '{{tasks.gen.outputs.parameters.obj}}'}\n  - name: gen\n    inputs: {parameters: [{name: n}]}\n    script:\n      image: alpine\n      command: [sh]\n      source: 'echo \"{\\\"n\\\": {{inputs.parameters.n}}}\" > /tmp/obj.json'\n    outputs: {parameters: [{name: obj, valueFrom: {path: /tmp/obj.json}}]}\n  - name: show\n    inputs: {parameters: [{name: all}]}\n    container: {image: alpine, command: [echo, 'all={{inputs.parameters.all}}']}\n",
    );
    let out = sb.weir(&["run", wf.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(r#"show: all=[{"n":1},{"n":2}]"#),
        "{}",
        out.stdout
    );
}

/// A CronWorkflow's steps name templates of its own `workflowSpec`: `weir lint` resolves them
/// there, as Argo's lint does (Hera writes CronWorkflows so).
#[test]
fn a_cron_workflows_steps_find_its_own_templates() {
    let sb = Sandbox::new();
    let cron = sb.write(
        "cron.yaml",
        "kind: CronWorkflow\nmetadata: {name: nightly}\nspec:\n  schedules: ['0 2 * * *']\n  workflowSpec:\n    entrypoint: main\n    templates:\n    - name: main\n      steps: [[{name: greet, template: greet}]]\n    - name: greet\n      container: {image: alpine, command: [echo, hi]}\n",
    );
    let out = sb.weir(&["lint", cron.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    let broken = sb.write(
        "broken.yaml",
        &std::fs::read_to_string(&cron)
            .unwrap()
            .replace("template: greet", "template: nowhere"),
    );
    let out = sb.weir(&["lint", broken.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("template `nowhere` not found"),
        "{}",
        out.all()
    );
}
