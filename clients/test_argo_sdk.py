"""Argo's generated Python SDK (`argo-workflows` on PyPI), unmodified, against `weir server`. It
checks every response against Argo's types (a null where Argo leaves a field out is refused)."""

import time

import argo_workflows
import pytest
from argo_workflows.api import workflow_service_api
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_create_request import (
    IoArgoprojWorkflowV1alpha1WorkflowCreateRequest,
)

MANIFEST = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "metadata": {"generateName": "sdk-", "labels": {"suite": "sdk"}},
    "spec": {
        "entrypoint": "main",
        "templates": [
            {
                "name": "main",
                "container": {"image": "alpine", "command": ["sh", "-c", "sleep 1; echo hi"]},
            }
        ],
    },
}


@pytest.fixture(scope="module")
def api(server):
    cfg = argo_workflows.Configuration(host=server["host"])
    cfg.api_key["BearerToken"] = server["token"]
    cfg.api_key_prefix["BearerToken"] = "Bearer"
    return workflow_service_api.WorkflowServiceApi(argo_workflows.ApiClient(cfg))


def test_create_get_while_running_and_after_list_and_delete(api, server):
    ns = server["namespace"]
    # the SDK's model of a create request does not admit a plain dict as the workflow
    created = api.create_workflow(
        namespace=ns,
        body=IoArgoprojWorkflowV1alpha1WorkflowCreateRequest(workflow=MANIFEST, _check_type=False),
        _check_return_type=False,
    )
    name = created["metadata"]["name"]
    # typed reads: first while it runs (no finishedAt yet), then to its end
    phases = []
    deadline = time.time() + 60
    while time.time() < deadline:
        wf = api.get_workflow(namespace=ns, name=name)
        phases.append(wf.status.phase)
        if wf.status.phase not in ("Pending", "Running"):
            break
        time.sleep(0.2)
    assert phases[-1] == "Succeeded", phases
    listed = api.list_workflows(namespace=ns, list_options_label_selector="suite=sdk")
    assert [w.metadata.name for w in listed.items] == [name]
    api.delete_workflow(namespace=ns, name=name)
    with pytest.raises(argo_workflows.ApiException) as missing:
        api.get_workflow(namespace=ns, name=name)
    assert missing.value.status == 404
