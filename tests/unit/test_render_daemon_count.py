"""The headless Service and the PodDisruptionBudget exist only where a Builder has more than
one daemon (the contract: no child that has no effect), and the daemons' pods and
certificate do not depend on it, so scaling 1 -> 2 rolls nothing. Pure: no cluster."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest

from buildkit_operator.api import Builder
from buildkit_operator.api.daemons import daemons
from buildkit_operator.pki import TLSBundle, ensure_tls
from buildkit_operator.reconcile.daemon_state import daemon_state
from buildkit_operator.reconcile.status import compute_status
from buildkit_operator.reconcile.types import Plan
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, tzinfo=UTC)
AMD64 = {"platform": "linux/amd64", "replicas": 1}
ARM64 = {"platform": "linux/arm64", "replicas": 1}


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": "u", "generation": 1},
            "spec": spec,
        }
    )


def render(builder: Builder) -> list[dict[str, Any]]:
    return render_builder(builder, _tls(builder.name))


@functools.cache
def _tls(name: str) -> TLSBundle:
    """One certificate per Builder name, as the operator keeps it across scaling (the
    names it covers do not depend on the daemon count: asserted below)."""
    return ensure_tls({}, name=name, server_sans=server_sans(make()), now=NOW)


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return [
        "headless Service"
        if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
        else o["kind"]
        for o in objects
    ]


@pytest.mark.parametrize(
    ("spec", "many"),
    [
        ({}, False),  # the default: one daemon
        ({"replicas": 0}, False),
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"pools": [AMD64]}, False),  # one pool of one daemon
        ({"pools": [{**AMD64, "replicas": 2}]}, True),
        ({"pools": [AMD64, ARM64]}, True),  # two pools of one daemon each: two daemons
    ],
)
def test_headless_service_and_budget_only_for_more_than_one_daemon(
    spec: dict[str, Any], many: bool
) -> None:
    found = kinds(render(make(**spec)))
    assert ("headless Service" in found) is many, found
    assert ("PodDisruptionBudget" in found) is many, found
    assert found.count("Service") == 1 + len(spec.get("pools", [])), found


def test_a_default_builder_has_six_children() -> None:
    """Three TLS Secrets, the ConfigMap, the Service and the one daemon's Deployment (with
    a persistent cache, its claim)."""
    found = kinds(render(make(cache={"type": "ephemeral"})))
    assert sorted(found) == sorted(
        ["ConfigMap", "Secret", "Secret", "Secret", "Deployment", "Service"]
    )


def test_scaling_from_one_daemon_to_two_changes_no_object_daemon_zero_runs_with() -> None:
    """What daemon 0 runs (its Deployment, the certificate it serves, its config) is the
    same with one daemon and with two: the pod already names the headless Service as its
    subdomain and the certificate covers its names."""
    one = {(o["kind"], o["metadata"]["name"]): o for o in render(make(replicas=1))}
    two = {(o["kind"], o["metadata"]["name"]): o for o in render(make(replicas=2))}
    for key, obj in one.items():
        if key[0] == "ConfigMap":  # the spec it keeps says replicas: 1, then 2
            assert obj["data"] == two[key]["data"]
            continue
        assert obj == two[key], key
    assert server_sans(make(replicas=1)) == server_sans(make(replicas=2))
    headless = next(
        o for o in two.values() if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
    )
    pod = one[("Deployment", "team-a-0")]["spec"]["template"]["spec"]
    assert pod["subdomain"] == headless["metadata"]["name"]
    assert f"*.{headless['metadata']['name']}.ci.svc" in server_sans(make(replicas=1))


def _addresses(builder: Builder) -> list[str]:
    states = [
        daemon_state(
            f"team-a-{d.id}",
            {
                "metadata": {"generation": 1},
                "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
            },
            d,
        )
        for d in daemons(builder)
    ]
    status = compute_status(
        builder, Plan(), states, certificate_not_after=None, previous={}, now=NOW
    )
    return [d["address"] for d in status["daemons"]]


def test_the_only_daemon_is_reached_at_the_service() -> None:
    """Without a headless Service a per-daemon name would not resolve: a Builder's only
    daemon is given the Service's address, which has it alone behind it."""
    assert _addresses(make()) == ["tcp://team-a.ci.svc:1234"]
    headless = next(
        o["metadata"]["name"]
        for o in render(make(replicas=2))
        if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
    )
    assert _addresses(make(replicas=2)) == [
        f"tcp://team-a-{i}.{headless}.ci.svc:1234" for i in range(2)
    ]
