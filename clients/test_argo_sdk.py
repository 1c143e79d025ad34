"""Argo's generated Python SDK (`argo-workflows` on PyPI), unmodified, against `weir server`. It
checks every response against Argo's types (a null where Argo leaves a field out is refused)."""

import json
import os
import shutil
import tempfile

import argo_workflows
import requests
import pytest
from argo_workflows.api import workflow_service_api
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_create_request import (
    IoArgoprojWorkflowV1alpha1WorkflowCreateRequest,
)

# the file the task waits for: outside /tmp (a task has a /tmp of its own), beside the binary
# the suite built (the server's tasks run as root in this suite: they can see it)
GATE = os.path.join(
    tempfile.mkdtemp(prefix="weir-sdk-", dir=os.path.dirname(os.environ.get("WEIR_BIN", "."))),
    "go",
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
                "container": {"image": "alpine", "command": ["sh", "-c", f"while [ ! -e {GATE} ]; do sleep 0.05; done; echo hi"]},
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
    # a typed read before the end (no finishedAt yet: the task waits for the test's file) ...
    assert api.get_workflow(namespace=ns, name=name).status.phase in ("Pending", "Running")
    open(GATE, "w").close()
    # ... and, once Argo's watch says it ended, after it
    watch = requests.get(
        f"{server['host']}/api/v1/workflow-events/{ns}",
        params={"listOptions.fieldSelector": f"metadata.name={name}"},
        headers={"Authorization": f"Bearer {server['token']}"},
        stream=True,
    )
    for line in watch.iter_lines():
        if line and json.loads(line)["result"]["object"]["status"].get("finishedAt"):
            break
    watch.close()
    assert api.get_workflow(namespace=ns, name=name).status.phase == "Succeeded"
    listed = api.list_workflows(namespace=ns, list_options_label_selector="suite=sdk")
    assert [w.metadata.name for w in listed.items] == [name]
    api.delete_workflow(namespace=ns, name=name)
    with pytest.raises(argo_workflows.ApiException) as missing:
        api.get_workflow(namespace=ns, name=name)
    assert missing.value.status == 404
    shutil.rmtree(os.path.dirname(GATE))
