"""What the admission-policy tests share: applying an object as a given user and reading
whether the API server admitted it, and waiting for a freshly installed policy to be live."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import builder

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
CRD = REPO / "crds" / "builders.buildkit.dev.yaml"
PRIVILEGED_LABEL = "buildkit.dev/allow-privileged"
TLS_DISABLED_LABEL = "buildkit.dev/allow-tls-disabled"
USERNS_LABEL = "buildkit.dev/allow-userns"
# The API server learns of a new or deleted policy through an informer, within seconds.
POLICY_PROPAGATION = 60


def apply(
    kubectl: Any, obj: dict[str, Any], *, dry_run: bool = False, as_user: str | None = None
) -> tuple[bool, str]:
    """(accepted, kubectl's stderr) for ``kubectl apply`` of one object, as the cluster
    admin or, impersonated, as ``as_user``."""
    args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    if as_user:
        args.append(f"--as={as_user}")
    result = kubectl.run(*args, input=json.dumps(obj))
    return result.returncode == 0, result.stderr


def eventually(what: str, check: Callable[[], bool], timeout: float = POLICY_PROPAGATION) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def wait_enforced(kubectl: Any, namespace: str) -> None:
    """Until the API server refuses a rootful Builder in ``namespace`` (the policy is live)."""
    eventually(
        "the policy to be enforced",
        lambda: not apply(kubectl, builder("probe", namespace, rootless=False), dry_run=True)[0],
    )


def mutating_policy(
    name: str,
    namespace: str,
    conditions: list[dict[str, Any]],
    mutation: dict[str, Any],
    *,
    object_labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A MutatingAdmissionPolicy on Deployments and its binding to ``namespace`` (and to
    objects with ``object_labels``, when given): how a platform rewrites what the operator
    writes."""
    match: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    if object_labels:
        match["objectSelector"] = {"matchLabels": object_labels}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "matchConditions": conditions,
                "mutations": [mutation],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "matchResources": match},
        },
    ]
