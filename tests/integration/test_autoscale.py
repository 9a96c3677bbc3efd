"""Autoscaled Builders against the real API server, with the operator running as the chart's
user: the stored spec, the daemons kept within the bounds, the decision in the status and
one Event per decision, a removed daemon's cache claim kept and found again.

The daemons here are kwok pods, which run no buildkitd: nobody can say what they build, so
no window-driven decision happens (a daemon whose builds are not known is never removed,
and never counts as busy). Scaling on real load is tests/node's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import assert_at_rest, events_of, get, wait_phase, wait_until

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

NAME = "elastic"


def _autoscale(k: Kubectl, ns: str, **bounds: int) -> None:
    k("patch", "builder", NAME, "-n", ns, "--type=merge", "-p",
      json.dumps({"spec": {"autoscale": bounds}}))  # fmt: skip


def _deployments(k: Kubectl, ns: str) -> set[str]:
    return {d["metadata"]["name"] for d in k.json("get", "deployments", "-n", ns)["items"]}


def _claims(k: Kubectl, ns: str) -> dict[str, str]:
    items = k.json("get", "pvc", "-n", ns)["items"]
    return {c["metadata"]["name"]: c["metadata"]["uid"] for c in items}


def _scale_events(k: Kubectl, ns: str) -> list[tuple[str, str]]:
    """The autoscaler's Events, oldest first."""
    events = sorted(events_of(k, ns, NAME), key=lambda e: e["metadata"]["creationTimestamp"])
    return [
        (e["reason"], e["message"]) for e in events if e["reason"] in ("ScaledUp", "ScaledDown")
    ]


def test_autoscaled_daemons_stay_within_the_bounds_and_keep_their_claims(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    k.apply(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {"autoscale": {"minReplicas": 2, "maxReplicas": 3}, "cache": {"size": "1Gi"}},
        }
    )
    obj = wait_phase(k, NAME, namespace, "Ready")
    # The API server stored no replicas beside autoscale (it would refuse the next apply).
    assert "replicas" not in obj["spec"]
    assert obj["spec"]["autoscale"] == {
        "minReplicas": 2,
        "maxReplicas": 3,
        "scaleUpAfter": "30s",
        "scaleDownAfter": "10m",
    }
    assert obj["status"]["ready"] == "2/2"
    assert {f"{NAME}-0", f"{NAME}-1"} <= _deployments(k, namespace)
    (entry,) = obj["status"]["autoscale"]
    assert entry["replicas"] == 2
    assert "minReplicas 2, maxReplicas 3" in entry["message"]
    assert "could not be asked" in entry["message"], entry  # kwok runs no buildkitd
    assert "keep within minReplicas 2" in entry["lastScale"]
    assert [r for r, _ in _scale_events(k, namespace)] == ["ScaledUp"]
    claims = _claims(k, namespace)
    assert {f"{NAME}-cache-0", f"{NAME}-cache-1"} <= set(claims)
    # Nothing to decide while nothing changes: no write, no Event.
    assert_at_rest(k, cluster, namespace, NAME)

    # Lowering maxReplicas removes the highest daemon at once; its cache claim stays.
    _autoscale(k, namespace, minReplicas=1, maxReplicas=1)
    wait_until("daemon 1 to be removed", lambda: f"{NAME}-1" not in _deployments(k, namespace))
    obj = wait_phase(k, NAME, namespace, "Ready")
    assert obj["status"]["ready"] == "1/1"
    (entry,) = obj["status"]["autoscale"]
    assert entry["replicas"] == 1 and "removed 1 daemon(s)" in entry["lastScale"], entry
    assert [r for r, _ in _scale_events(k, namespace)] == ["ScaledUp", "ScaledDown"]
    assert _claims(k, namespace)[f"{NAME}-cache-1"] == claims[f"{NAME}-cache-1"]

    # Raising minReplicas brings daemon 1 back, on the claim it had.
    _autoscale(k, namespace, minReplicas=2, maxReplicas=3)
    obj = wait_until(
        "daemon 1 to be back and ready",
        lambda: (o := get(k, "builder", NAME, namespace))["status"].get("ready") == "2/2" and o,
        timeout=90,
    )
    volumes = get(k, "deployment", f"{NAME}-1", namespace)["spec"]["template"]["spec"]["volumes"]
    mounted = {
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    }
    assert mounted == {f"{NAME}-cache-1"}
    assert _claims(k, namespace)[f"{NAME}-cache-1"] == claims[f"{NAME}-cache-1"]
    assert [r for r, _ in _scale_events(k, namespace)] == ["ScaledUp", "ScaledDown", "ScaledUp"]
