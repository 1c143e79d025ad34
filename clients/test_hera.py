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
