#!/usr/bin/env python3
"""Derive crates/weir-core/src/argo-schema.json from Argo's api/jsonschema/schema.json.

Keeps only the definitions reachable from the four workflow kinds and strips descriptions, so the
binary embeds a small file. Argo's schema is Apache-2.0 (see NOTICE).
Usage: scripts/gen-argo-schema.py ../shared/argo-schema/schema.json
"""
import json, sys

src = json.load(open(sys.argv[1]))
defs = src["definitions"]
P = "io.argoproj.workflow.v1alpha1."
roots = [P + k for k in ["Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"]]
keep = {}
KEYS = {"type", "properties", "items", "additionalProperties", "$ref", "required", "const"}

def strip(x):
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k == "properties":
                out[k] = {pk: strip(pv) for pk, pv in v.items()}
            elif k in KEYS:
                out[k] = strip(v)
        return out
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x

def visit(name):
    if name in keep:
        return
    keep[name] = None
    d = strip(defs[name])
    keep[name] = d
    def refs(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "$ref":
                    visit(v.split("/")[-1])
                else:
                    refs(v)
        elif isinstance(x, list):
            for v in x:
                refs(v)
    refs(d)

# Argo 3.5 and earlier spelled single locks `mutex` and `semaphore`; files still use them, and a
# lock silently dropped as an unknown field would let two runs into the same critical section.
sync = defs[P + "Synchronization"].setdefault("properties", {})
sync.setdefault("mutex", {"$ref": "#/definitions/" + P + "Mutex"})
sync.setdefault("semaphore", {"$ref": "#/definitions/" + P + "SemaphoreRef"})

for r in roots:
    visit(r)
json.dump({"definitions": dict(sorted(keep.items()))}, open("crates/weir-core/src/argo-schema.json", "w"), separators=(",", ":"), sort_keys=True)
print(len(keep), "definitions")
