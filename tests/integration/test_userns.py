"""securityProfile userns against an API server that does not keep ``hostUsers: false``: a
MutatingAdmissionPolicy removes it from Deployments in the test's namespace, as a cluster
with the UserNamespacesSupport gate off (or such an admission) would. The daemon must end at
zero replicas, no pod ever made, and the Builder Degraded naming the field and the
Kubernetes version, all read back from the API server; once the cluster keeps the field, an
edit of the Builder brings the daemon back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from harness import builder, get, patch_spec, pods_of, wait_phase, wait_until
from policy_support import mutating_policy

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

EPHEMERAL = {"type": "ephemeral"}
HOST_USERS = "spec.template.spec.hostUsers"


# Removes hostUsers from any Deployment that sets it: a cluster whose admission drops it.
_DROPS_HOST_USERS = (
    [{"name": "sets-host-users", "expression": "has(object.spec.template.spec.hostUsers)"}],
    {
        "patchType": "JSONPatch",
        "jsonPatch": {
            "expression": '[JSONPatch{op: "remove", path: "/spec/template/spec/hostUsers"}]'
        },
    },
)


def _probe(namespace: str) -> dict[str, Any]:
    """A Deployment asking for its own user namespace, for a server-side dry run."""
    labels = {"app": "probe"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"hostUsers": False, "containers": [{"name": "c", "image": "x"}]},
            },
        },
    }


def _host_users_kept(k: Kubectl, namespace: str) -> bool:
    out = k.json("create", "--dry-run=server", "-f", "-", input=json.dumps(_probe(namespace)))
    return "hostUsers" in out["spec"]["template"]["spec"]


@pytest.fixture
def drop_host_users(k: Kubectl, namespace: str) -> Iterator[str]:
    """The policy, in force (seen in a dry run) before the test; removed afterwards."""
    name = f"drop-host-users-{namespace}"[:63].rstrip("-")
    objects = mutating_policy(name, namespace, *_DROPS_HOST_USERS)
    for obj in objects:
        k.apply(obj)
    wait_until("the policy in force", lambda: not _host_users_kept(k, namespace), 60)
    yield name
    for obj in reversed(objects):
        k("delete", obj["kind"].lower(), name, "--ignore-not-found")


def test_a_userns_daemon_the_api_server_strips_is_scaled_to_zero(
    k: Kubectl, namespace: str, drop_host_users: str
) -> None:
    k("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=privileged")
    version = k.json("version")["serverVersion"]["gitVersion"]
    k.apply(builder("userns", namespace, cache=EPHEMERAL, securityProfile="userns"))
    wait_phase(k, "userns", namespace, "Degraded")

    def reported() -> str:
        status = get(k, "builder", "userns", namespace).get("status") or {}
        (degraded,) = [c for c in status["conditions"] if c["type"] == "Degraded"]
        return str(degraded["message"]) if degraded["status"] == "True" else ""

    wait_until("Degraded naming hostUsers", lambda: HOST_USERS in reported(), 60)
    message = reported()
    assert f"Kubernetes {version}" in message and "Deployment userns-0" in message, message
    dep = get(k, "deployment", "userns-0", namespace)
    assert "hostUsers" not in dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 0
    wait_until("no pod runs", lambda: pods_of(k, namespace, "userns") == [], 60)
    # Not even for a moment: the daemon is created at zero and scaled up only once the API
    # server has shown it keeps hostUsers, so the ReplicaSet controller never made a pod.
    events = k.json("get", "events", "-n", namespace)["items"]
    created = [e["message"] for e in events if e.get("reason") == "SuccessfulCreate"]
    assert created == [], created
    # At rest: the daemon stays at zero (the field is not rewritten for ever).
    assert get(k, "deployment", "userns-0", namespace)["spec"]["replicas"] == 0

    # The cluster keeps the field again: the next edit of the Builder brings the daemon back,
    # in its own user namespace.
    for kind in ("mutatingadmissionpolicybinding", "mutatingadmissionpolicy"):
        k("delete", kind, drop_host_users)
    wait_until("the policy gone", lambda: _host_users_kept(k, namespace), 60)
    patch_spec(k, "userns", namespace, {"buildkitd": {"maxParallelism": 2}})
    wait_phase(k, "userns", namespace, "Ready", timeout=120)
    dep = get(k, "deployment", "userns-0", namespace)
    assert dep["spec"]["template"]["spec"]["hostUsers"] is False
    assert dep["spec"]["replicas"] == 1
    (pod,) = pods_of(k, namespace, "userns")
    assert pod["spec"]["hostUsers"] is False
