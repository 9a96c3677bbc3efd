#!/usr/bin/env python3
"""Snapshot the API server's published schema of the kinds the operator writes.

The operator compares live children with the objects it renders using the semantics the
API server itself publishes in its OpenAPI v3 documents: which lists are maps (and on
which keys), sets or atomic; which maps are atomic; which fields are quantities. This
script reads those documents from a running API server and writes the part the operator
needs (the schemas reachable from its child kinds, reduced to the keys that carry those
semantics) to ``operator/buildkit_operator/reconcile/openapi_children.json``.

An integration test regenerates the snapshot from the pinned API server and checks it is
the one committed, so it cannot fall out of step with the Kubernetes version we test on.

Usage: hack/openapi_snapshot.py [--dir CLUSTER_DIR] [--check]   (default: .local-cluster)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = REPO / "operator" / "buildkit_operator" / "reconcile" / "openapi_children.json"

# The OpenAPI v3 document of each group-version, and the child kinds in it.
DOCUMENTS = {
    "api/v1": (
        "io.k8s.api.core.v1.ConfigMap",
        "io.k8s.api.core.v1.Secret",
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        "io.k8s.api.core.v1.Service",
    ),
    "apis/apps/v1": ("io.k8s.api.apps.v1.Deployment",),
    "apis/policy/v1": ("io.k8s.api.policy.v1.PodDisruptionBudget",),
}
# Keys of a schema node that carry merge and comparison semantics; descriptions and the
# like are dropped, so the snapshot stays small and changes only when semantics change.
KEEP = {
    "type",
    "format",
    "properties",
    "items",
    "additionalProperties",
    "allOf",
    "oneOf",
    "anyOf",
    "$ref",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
}
REF_PREFIX = "#/components/schemas/"


def _reduce(node: Any) -> Any:
    if isinstance(node, list):
        return [_reduce(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in KEEP:
            continue
        if key == "properties":
            out[key] = {name: _reduce(prop) for name, prop in value.items()}
        else:
            out[key] = _reduce(value)
    return out


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value.removeprefix(REF_PREFIX))
            else:
                found += _refs(value)
    elif isinstance(node, list):
        for item in node:
            found += _refs(item)
    return found


def reduce_documents(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The snapshot: every schema reachable from the child kinds, reduced to ``KEEP``."""
    schemas: dict[str, Any] = {}
    roots: list[str] = []
    for path, kinds in DOCUMENTS.items():
        components = documents[path]["components"]["schemas"]
        pending = list(kinds)
        roots += kinds
        while pending:
            name = pending.pop()
            if name in schemas:
                continue
            reduced = _reduce(components[name])
            schemas[name] = reduced
            pending += [ref for ref in _refs(reduced) if ref not in schemas]
    return {"roots": sorted(roots), "schemas": dict(sorted(schemas.items()))}


def fetch_documents(get: Callable[[str], Any]) -> dict[str, Any]:
    """Read each document with ``get(path)``, which returns parsed JSON."""
    return {path: get(f"/openapi/v3/{path}") for path in DOCUMENTS}


def render(snapshot: Mapping[str, Any]) -> str:
    return json.dumps(snapshot, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", default=str(REPO / ".local-cluster"), help="a hack/cluster.py cluster's directory"
    )
    parser.add_argument("--check", action="store_true", help="fail if the snapshot differs")
    args = parser.parse_args()

    from localcluster.cluster import LocalCluster

    text = render(reduce_documents(fetch_documents(LocalCluster(Path(args.dir)).api.get)))
    if args.check:
        if SNAPSHOT.read_text() != text:
            print(f"{SNAPSHOT} differs from the API server's schema: rerun without --check")
            return 1
        return 0
    SNAPSHOT.write_text(text)
    print(f"wrote {SNAPSHOT} ({len(text)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
