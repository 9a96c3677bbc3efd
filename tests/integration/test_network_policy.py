"""The chart's optional NetworkPolicy in front of the build daemons, against the real API
server: it selects exactly the daemons the operator runs (read back through the API
server's own label selection), and the ports it opens are the ones those pods serve.
Whether traffic is then dropped is the network plugin's part; the local cluster has none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import builder, wait_phase
from helm_client import Helm

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "buildkit-operator"


def _selected(k: Any, namespace: str, selector: dict[str, Any]) -> set[str]:
    """The pods the API server selects with a NetworkPolicy's podSelector."""
    labels = ",".join(f"{key}={value}" for key, value in selector["matchLabels"].items())
    pods = k.json("get", "pods", "-n", namespace, "-l", labels)["items"]
    return {p["metadata"]["name"] for p in pods}


def test_the_network_policy_selects_the_daemons_and_opens_their_ports(
    k: Any, install: Callable[..., str], namespace: str
) -> None:
    release = install(
        "--set", "networkPolicy.enabled=true", "--set", f"networkPolicy.namespaces={{{namespace}}}",
        "--set", "networkPolicy.buildsFrom[0].podSelector.matchLabels.role=ci",
    )  # fmt: skip
    k.apply(builder("np", namespace, replicas=2, metrics={"enabled": True}))
    k.apply(builder("other", namespace))
    wait_phase(k, "np", namespace, "Ready")
    wait_phase(k, "other", namespace, "Ready")
    # A pod of the tenant's own, beside the daemons, is not the policy's business.
    k(
        "run", "web", "-n", namespace, "--image=nginx",
        "--labels=app.kubernetes.io/name=web,role=ci",
    )  # fmt: skip

    policy = k.json(
        "get", "networkpolicy", f"{release}-buildkit-operator-buildkitd", "-n", namespace
    )
    # The daemons, by the names their Deployments (`<builder>-<index>`) give them; the
    # namespace also holds the chart's own operator pods and the tenant's web.
    daemons = {
        p["metadata"]["name"]
        for p in k.json("get", "pods", "-n", namespace)["items"]
        if p["metadata"]["name"].startswith(("np-0-", "np-1-", "other-0-"))
    }
    assert len(daemons) == 3, daemons
    assert _selected(k, namespace, policy["spec"]["podSelector"]) == daemons
    assert policy["spec"]["policyTypes"] == ["Ingress"]

    # Every port it opens is a port the daemons serve, by name; builds only from the
    # allowed peers, metrics only from monitoring.
    rules = {r["ports"][0]["port"]: r for r in policy["spec"]["ingress"]}
    assert set(rules) == {"buildkitd", "metrics"}
    pod = next(
        p
        for p in k.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=np")[
            "items"
        ]
    )
    served = {port["name"] for c in pod["spec"]["containers"] for port in c.get("ports", [])}
    assert set(rules) <= served, served
    assert rules["buildkitd"]["from"] == [{"podSelector": {"matchLabels": {"role": "ci"}}}]
    assert rules["metrics"]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_a_network_policy_without_a_namespace_is_refused(helm: Helm, namespace: str) -> None:
    """A cluster-wide install has no namespace to put it in: helm says so instead of
    installing nothing in silence."""
    result = helm.run(
        "install", "np-none", str(CHART), "--namespace", namespace,
        "--set", "networkPolicy.enabled=true", "--dry-run=server",
    )  # fmt: skip
    assert result.returncode != 0
    assert "networkPolicy.namespaces" in result.stderr, result.stderr
