"""Hera (Argo's Python SDK most Argo users write in), unmodified, against `weir server`."""

import json

import pytest
import requests
from hera.exceptions import NotFound
from hera.workflows.models import V1alpha1LogEntry as LogEntry
from hera.workflows import Steps, Workflow, WorkflowsService, script


def service(server):
    return WorkflowsService(
        host=server["host"], token=server["token"], namespace=server["namespace"]
    )


@script(image="python:3.11")
def greet(name: str):
    print(f"hello {name}")


def make(server, label):
    with Workflow(
        generate_name="hera-",
        entrypoint="main",
        namespace=server["namespace"],
        workflows_service=service(server),
        arguments={"name": "weir"},
        labels={"suite": label},
    ) as w:
        with Steps(name="main"):
            greet(arguments={"name": "{{workflow.parameters.name}}"})
    return w


def test_create_wait_and_get(server):
    w = make(server, "create")
    created = w.create()
    assert created.metadata.name.startswith("hera-")
    done = w.wait()
    assert done.status.phase == "Succeeded"
    got = service(server).get_workflow(name=created.metadata.name)
    assert got.metadata.name == created.metadata.name
    results = [n.outputs.result for n in got.status.nodes.values() if n.outputs and n.outputs.result]
    assert results == ["hello weir"]
    # the log as the Argo Server streams it: one {"result": LogEntry} per line (Hera's generated
    # `workflow_logs` reads the body as one LogEntry, against Argo too, so it is read here
    # with the requests library Hera itself uses)
    r = requests.get(
        f"{server['host']}/api/v1/workflows/{server['namespace']}/{created.metadata.name}/log",
        params={"logOptions.container": "main"},
        headers={"Authorization": f"Bearer {server['token']}"},
    )
    entries = [LogEntry(**json.loads(line)["result"]) for line in r.text.splitlines()]
    assert [e.content for e in entries] == ["hello weir"]
    assert entries[0].pod_name in got.status.nodes


def test_list_with_a_label_selector_a_limit_and_continue(server):
    names = {make(server, "paged").create().metadata.name for _ in range(3)}
    make(server, "other").create()
    svc = service(server)
    seen = []
    cont = None
    while True:
        page = svc.list_workflows(label_selector="suite=paged", limit="2", continue_=cont)
        assert page.items is not None and len(page.items) <= 2
        seen += [wf.metadata.name for wf in page.items]
        cont = page.metadata.continue_
        if not cont:
            break
    assert sorted(seen) == sorted(names)
    one = sorted(names)[0]
    exact = svc.list_workflows(field_selector=f"metadata.name={one}")
    assert [wf.metadata.name for wf in exact.items] == [one]
    assert all(wf.status.phase for wf in exact.items)


def test_a_missing_workflow_is_not_found(server):
    with pytest.raises(NotFound, match="not found"):
        service(server).get_workflow(name="no-such-workflow")


@script(image="python:3.11")
def square(n: int):
    print(n * n)


@script(image="python:3.11")
def report(status: str):
    print(f"workflow ended {status}")


def test_loops_output_parameters_and_an_exit_handler(server):
    from hera.workflows import DAG

    with Workflow(
        generate_name="hera-loop-",
        entrypoint="main",
        on_exit="bye",
        namespace=server["namespace"],
        workflows_service=service(server),
    ) as w:
        with Steps(name="bye"):
            report(arguments={"status": "{{workflow.status}}"})
        with DAG(name="main"):
            square(arguments={"n": "{{item}}"}, with_items=[1, 2, 3])
    w.create()
    done = w.wait(poll_interval=1)
    assert done.status.phase == "Succeeded"
    results = sorted(
        n.outputs.result for n in done.status.nodes.values() if n.outputs and n.outputs.result
    )
    assert results == ["1", "4", "9", "workflow ended Succeeded"]


def test_templates_by_reference_cron_and_lint(server):
    from hera.workflows import CronWorkflow, WorkflowTemplate
    from hera.workflows.models import CronWorkflowSuspendRequest, WorkflowTemplateRef

    svc = service(server)
    with WorkflowTemplate(
        name="hera-greeter",
        entrypoint="main",
        namespace=server["namespace"],
        workflows_service=svc,
        arguments={"name": "template"},
    ) as t:
        with Steps(name="main"):
            greet(arguments={"name": "{{workflow.parameters.name}}"})
    t.lint()
    t.create()
    assert "hera-greeter" in [x.metadata.name for x in svc.list_workflow_templates().items]
    with Workflow(
        generate_name="hera-ref-",
        namespace=server["namespace"],
        workflows_service=svc,
        workflow_template_ref=WorkflowTemplateRef(name="hera-greeter"),
    ) as w:
        pass
    w.create()
    assert w.wait(poll_interval=1).status.phase == "Succeeded"
    with CronWorkflow(
        name="hera-nightly",
        schedules=["0 2 * * *"],
        timezone="Asia/Shanghai",
        entrypoint="main",
        namespace=server["namespace"],
        workflows_service=svc,
    ) as c:
        with Steps(name="main"):
            greet(arguments={"name": "cron"})
    c.lint()
    c.create()
    got = svc.get_cron_workflow(name="hera-nightly")
    assert got.spec.timezone == "Asia/Shanghai"
    svc.suspend_cron_workflow(
        name="hera-nightly", req=CronWorkflowSuspendRequest(name="hera-nightly")
    )
    assert svc.get_cron_workflow(name="hera-nightly").spec.suspend is True
    svc.delete_cron_workflow(name="hera-nightly")
    svc.delete_workflow_template(name="hera-greeter")
    with pytest.raises(NotFound):
        svc.get_workflow_template(name="hera-greeter")


def test_lint_stop_retry_resubmit_and_delete(server):
    from hera.exceptions import BadRequest
    from hera.workflows.models import (
        WorkflowResubmitRequest,
        WorkflowRetryRequest,
        WorkflowStopRequest,
    )

    svc = service(server)
    bad = make(server, "lint")
    bad.entrypoint = "nowhere"
    with pytest.raises(BadRequest, match="nowhere"):
        bad.lint()
    make(server, "lint").lint()

    @script(image="python:3.11")
    def fail():
        raise SystemExit(3)

    with Workflow(
        generate_name="hera-fail-",
        entrypoint="fail",
        namespace=server["namespace"],
        workflows_service=svc,
    ) as w:
        fail()
    name = w.create().metadata.name
    assert w.wait(poll_interval=1).status.phase == "Failed"
    retried = svc.retry_workflow(name=name, req=WorkflowRetryRequest(name=name))
    assert retried.status.phase == "Running"
    assert w.wait(poll_interval=1).status.phase == "Failed"
    again = svc.resubmit_workflow(name=name, req=WorkflowResubmitRequest(name=name))
    assert again.metadata.name != name
    svc.stop_workflow(name=again.metadata.name, req=WorkflowStopRequest(name=again.metadata.name))
    svc.delete_workflow(name=name)
    with pytest.raises(NotFound):
        svc.get_workflow(name=name)


def test_version_info_and_who_am_i(server):
    svc = service(server)
    assert svc.get_version().version.startswith("v")
    assert svc.get_info().managed_namespace == ""
    me = svc.get_user_info()
    assert me.issuer == "weir"
    assert me.subject.startswith("token:")
    assert me.groups == ["editor@argo"]
