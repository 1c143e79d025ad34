"""The official argo CLI (built from its Go module by clients/argo-cli/build: ARGO_BIN), unmodified,
against `weir server`, as Argo users run it: ARGO_SERVER, ARGO_HTTP1, ARGO_SECURE, ARGO_TOKEN."""

import json
import os
import subprocess

import pytest

HELLO = """apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: cli-
  labels: {suite: cli}
spec:
  entrypoint: main
  arguments: {parameters: [{name: who, value: weir}]}
  templates:
  - name: main
    inputs: {parameters: [{name: who}]}
    container:
      image: alpine
      command: [echo, "hello {{inputs.parameters.who}}"]
"""


@pytest.fixture(scope="module")
def argo(server, tmp_path_factory):
    if "ARGO_BIN" not in os.environ:
        pytest.skip("ARGO_BIN is not set (scripts/test builds the argo CLI)")
    env = dict(os.environ)
    env.update(
        ARGO_SERVER=server["host"].removeprefix("http://"),
        ARGO_HTTP1="true",
        ARGO_SECURE="false",
        ARGO_TOKEN=f"Bearer {server['token']}",
        ARGO_NAMESPACE=server["namespace"],
        KUBECONFIG=os.devnull,
    )
    files = tmp_path_factory.mktemp("argo")

    def run(*args, ok=True, stdin=None):
        p = subprocess.run(
            [os.environ["ARGO_BIN"], *args],
            env=env,
            cwd=files,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
        )
        if ok:
            assert p.returncode == 0, f"argo {' '.join(args)}: {p.stdout}{p.stderr}"
        return p

    def write(name, text):
        path = files / name
        path.write_text(text)
        return str(path)

    run.write = write
    return run


def test_version(argo):
    out = argo("version").stdout
    assert "argo: v3.7.4" in out


def test_submit_wait_get_list_logs_and_delete(argo):
    wf = argo.write("hello.yaml", HELLO)
    name = argo("submit", wf, "-o", "name").stdout.strip()
    assert name.startswith("cli-")
    waited = argo("wait", name)
    assert "Succeeded" in waited.stdout, waited.stdout
    got = json.loads(argo("get", name, "-o", "json").stdout)
    assert got["status"]["phase"] == "Succeeded"
    assert got["metadata"]["name"] == name
    listed = argo("list", "-l", "suite=cli", "-o", "name").stdout.split()
    assert name in listed
    table = argo("list").stdout
    row = next(line for line in table.splitlines() if line.startswith(name))
    assert "Succeeded" in row, table
    logs = argo("logs", name).stdout
    assert "hello weir" in logs, logs
    argo("delete", name)
    missing = argo("get", name, ok=False)
    assert missing.returncode != 0
    assert "not found" in (missing.stdout + missing.stderr)


def test_submit_watch_follows_to_the_end(argo):
    wf = argo.write("watched.yaml", HELLO)
    watched = argo("submit", wf, "--watch")
    assert "Succeeded" in watched.stdout, watched.stdout


def test_lint_says_what_is_wrong(argo):
    good = argo.write("good.yaml", HELLO)
    assert argo("lint", good).returncode == 0
    bad = argo.write("bad.yaml", HELLO.replace("entrypoint: main", "entrypoint: nowhere"))
    linted = argo("lint", bad, ok=False)
    assert linted.returncode != 0
    assert "nowhere" in (linted.stdout + linted.stderr)


def test_templates_create_get_list_lint_submit_and_delete(argo):
    tmpl = argo.write(
        "tmpl.yaml",
        HELLO.replace("kind: Workflow", "kind: WorkflowTemplate").replace(
            "generateName: cli-", "name: hello-tmpl"
        ),
    )
    assert argo("template", "lint", tmpl).returncode == 0
    argo("template", "create", tmpl)
    assert "hello-tmpl" in argo("template", "list").stdout
    got = json.loads(argo("template", "get", "hello-tmpl", "-o", "json").stdout)
    assert got["metadata"]["name"] == "hello-tmpl"
    name = argo(
        "submit", "--from", "workflowtemplate/hello-tmpl", "-p", "who=template", "-o", "name"
    ).stdout.strip()
    argo("wait", name)
    assert "hello template" in argo("logs", name).stdout
    argo("template", "delete", "hello-tmpl")
    assert "hello-tmpl" not in argo("template", "list").stdout


CRON = """apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata:
  name: nightly
spec:
  schedule: "0 2 * * *"
  timezone: Asia/Shanghai
  workflowSpec:
    entrypoint: main
    templates:
    - name: main
      container: {image: alpine, command: [echo, "from the cron workflow"]}
"""


def test_cron_create_list_get_suspend_resume_submit_and_delete(argo):
    # the deprecated `schedule` (one schedule) is still what many files carry
    cron = argo.write("cron.yaml", CRON)
    assert argo("cron", "lint", cron).returncode == 0
    argo("cron", "create", cron)
    assert "nightly" in argo("cron", "list").stdout
    got = json.loads(argo("cron", "get", "nightly", "-o", "json").stdout)
    assert got["metadata"]["name"] == "nightly"
    argo("cron", "suspend", "nightly")
    got = json.loads(argo("cron", "get", "nightly", "-o", "json").stdout)
    assert got["spec"]["suspend"] is True
    argo("cron", "resume", "nightly")
    got = json.loads(argo("cron", "get", "nightly", "-o", "json").stdout)
    assert not got["spec"].get("suspend")
    name = argo("submit", "--from", "cronwf/nightly", "-o", "name").stdout.strip()
    argo("wait", name)
    assert "from the cron workflow" in argo("logs", name).stdout
    labels = json.loads(argo("get", name, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["workflows.argoproj.io/cron-workflow"] == "nightly"
    argo("cron", "delete", "nightly")
    assert "nightly" not in argo("cron", "list").stdout


GATED = """apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: ctl-
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: wait, template: wait}
  - name: wait
    suspend: {}
"""

FAILING = """apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: fails-
spec:
  entrypoint: main
  templates:
  - name: main
    container: {image: alpine, command: [sh, -c, "echo failing; exit 3"]}
"""


def phase(argo, name):
    return json.loads(argo("get", name, "-o", "json").stdout)["status"]["phase"]


def test_suspend_resume_stop_terminate_retry_and_resubmit(argo):
    # a suspend step waits for `argo resume`
    name = argo("submit", argo.write("gated.yaml", GATED), "-o", "name").stdout.strip()
    argo("resume", name)
    argo("wait", name)
    assert phase(argo, name) == "Succeeded"
    # stop and terminate end a waiting run
    for verb in ["stop", "terminate"]:
        name = argo("submit", argo.write("gated.yaml", GATED), "-o", "name").stdout.strip()
        argo(verb, name)
        # `argo wait` exits non-zero for a run that did not succeed
        assert argo("wait", name, ok=False).returncode != 0
        assert phase(argo, name) in ("Failed", "Error"), verb
    # a failed run: retried in place, resubmitted as a new run
    name = argo("submit", argo.write("fails.yaml", FAILING), "-o", "name").stdout.strip()
    assert "Failed" in argo("wait", name, ok=False).stdout
    assert phase(argo, name) == "Failed"
    retried = argo("retry", name, "-o", "json")
    assert json.loads(retried.stdout)["status"]["phase"] == "Running", retried.stdout
    argo("wait", name, ok=False)
    again = argo("resubmit", name, "-o", "name").stdout.strip()
    assert again and again != name
    argo("wait", again, ok=False)
    assert phase(argo, again) == "Failed"
    assert "failing" in argo("logs", again).stdout
