"""A Builder's headless Service and PodDisruptionBudget exist only while it has more than
one daemon (the contract: no child that has no effect), and coming or going they change
nothing that runs: daemon 0's Deployment template, its pod and the certificates stay as
they were. Against the real API server, with the operator as its own user."""

from __future__ import annotations

import time
from typing import Any

from harness import (
    MANAGED,
    child_writes,
    condition,
    get,
    patch_spec,
    pods_of,
    settle,
    wait_phase,
    wait_until,
    writes_in,
)
from operator_process import OperatorProcess

from localcluster.kubectl import Kubectl

EPHEMERAL = {"type": "ephemeral"}
INSTANCE = "app.kubernetes.io/instance"


def builder(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"cache": EPHEMERAL, **spec},
    }


def converged(k: Kubectl, namespace: str, name: str, daemons: int) -> dict[str, Any]:
    """Wait until the Builder's status describes its current spec: Ready, every daemon."""

    def check() -> dict[str, Any] | None:
        obj = get(k, "builder", name, namespace)
        status = obj.get("status") or {}
        return (
            obj
            if status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("phase") == "Ready"
            and status.get("ready") == f"{daemons}/{daemons}"
            else None
        )

    return dict(wait_until(f"Builder {name} Ready with {daemons} daemons", check, timeout=90))


def extra_children(k: Kubectl, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The Builder's headless Services (clusterIP None) and PodDisruptionBudgets, by
    kind/name: whatever their names, found by the Builder's labels."""
    items = k.json("get", "services,pdb", "-n", namespace, "-l", f"{MANAGED},{INSTANCE}={name}")
    return {
        f"{i['kind']}/{i['metadata']['name']}": i
        for i in items["items"]
        if i["kind"] == "PodDisruptionBudget" or i["spec"].get("clusterIP") == "None"
    }


def daemon_zero(k: Kubectl, namespace: str, name: str) -> tuple[dict[str, Any], str]:
    """Daemon 0's live pod template and its pod's uid."""
    template = get(k, "deployment", f"{name}-0", namespace)["spec"]["template"]
    (pod,) = [
        p
        for p in pods_of(k, namespace, name)
        if p["metadata"]["labels"].get("buildkit.dev/daemon") == "0"
    ]
    return template, pod["metadata"]["uid"]


def secrets(k: Kubectl, namespace: str) -> dict[str, tuple[str, Any]]:
    items = k.json("get", "secrets", "-n", namespace, "-l", MANAGED)["items"]
    return {s["metadata"]["name"]: (s["metadata"]["uid"], s["data"]) for s in items}


def test_a_second_daemon_brings_the_headless_service_and_budget_and_rolls_nothing(
    k: Kubectl, namespace: str
) -> None:
    k.apply(builder("solo", namespace))
    wait_phase(k, "solo", namespace, "Ready")
    assert extra_children(k, namespace, "solo") == {}
    template, pod = daemon_zero(k, namespace, "solo")
    certificates = secrets(k, namespace)

    patch_spec(k, "solo", namespace, {"replicas": 2})
    converged(k, namespace, "solo", 2)
    found = extra_children(k, namespace, "solo")
    (budget,) = [v for key, v in found.items() if key.startswith("PodDisruptionBudget/")]
    (headless,) = [v for key, v in found.items() if key.startswith("Service/")]
    # The budget covers both daemons' pods and lets one go at a time (Kubernetes computes
    # its status from the pods it selects).
    wait_until(
        "the budget to count both daemons",
        lambda: (
            get(k, "pdb", budget["metadata"]["name"], namespace)["status"].get("expectedPods") == 2
        ),
    )
    assert budget["spec"]["maxUnavailable"] == 1
    # Each daemon's address is its own name under the headless Service, the name its pod
    # already carried as subdomain.
    assert template["spec"]["subdomain"] == headless["metadata"]["name"]
    for d in get(k, "builder", "solo", namespace)["status"]["daemons"]:
        assert (
            d["address"] == f"tcp://{d['name']}.{headless['metadata']['name']}.{namespace}.svc:1234"
        )
    # Nothing daemon 0 runs changed: not its template, not its pod, not the certificates.
    assert daemon_zero(k, namespace, "solo") == (template, pod)
    assert secrets(k, namespace) == certificates

    patch_spec(k, "solo", namespace, {"replicas": 1})
    wait_until(
        "the headless Service and the budget to go",
        lambda: extra_children(k, namespace, "solo") == {},
        timeout=60,
    )
    converged(k, namespace, "solo", 1)
    assert daemon_zero(k, namespace, "solo") == (template, pod)
    assert secrets(k, namespace) == certificates
    (only,) = get(k, "builder", "solo", namespace)["status"]["daemons"]
    # The only daemon is reached through the Service (its per-daemon name no longer resolves).
    assert only["address"] == get(k, "builder", "solo", namespace)["status"]["endpoint"]


def test_the_previous_releases_budget_and_headless_service_are_removed(
    k: Kubectl, namespace: str, cluster: Any, operator_under_test: OperatorProcess
) -> None:
    """A Builder of one daemon made by the previous release has both, owned by it: they
    are found among its children at startup and deleted, and nothing else is written to
    what runs."""
    k.apply(builder("upgraded", namespace))
    obj = wait_phase(k, "upgraded", namespace, "Ready")
    template, pod = daemon_zero(k, namespace, "upgraded")
    service = get(k, "service", "upgraded", namespace)
    operator_under_test.stop()
    try:
        # As the previous release made them: the Service's labels and owner, the headless
        # Service of the name the pod carries as subdomain, the budget of the Builder's name.
        meta = {
            "namespace": namespace,
            "labels": service["metadata"]["labels"],
            "ownerReferences": service["metadata"]["ownerReferences"],
        }
        selector = service["spec"]["selector"]
        port = [{"name": "buildkitd", "port": 1234, "targetPort": "buildkitd"}]
        k.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {**meta, "name": template["spec"]["subdomain"]},
                "spec": {"clusterIP": "None", "selector": selector, "ports": port},
            }
        )
        k.apply(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {**meta, "name": "upgraded"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            }
        )
        assert len(extra_children(k, namespace, "upgraded")) == 2
    finally:
        since = time.time()
        operator_under_test.start()
    wait_until(
        "the previous release's headless Service and budget deleted",
        lambda: extra_children(k, namespace, "upgraded") == {},
        timeout=90,
    )
    settle(cluster, namespace)
    assert daemon_zero(k, namespace, "upgraded") == (template, pod)
    # Its only writes to the children: the two deletes.
    written = sorted(w.split("?", 1)[0] for w in child_writes(cluster, namespace, since))
    base = f"/namespaces/{namespace}"
    assert written == [
        f"delete /api/v1{base}/services/{template['spec']['subdomain']}",
        f"delete /apis/policy/v1{base}/poddisruptionbudgets/upgraded",
    ], written
    assert get(k, "builder", "upgraded", namespace)["status"]["phase"] == "Ready"
    assert obj["metadata"]["uid"] == get(k, "builder", "upgraded", namespace)["metadata"]["uid"]


def test_someone_elses_budget_of_the_name_is_left_alone(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    """A budget of the Builder's budget name that someone else made: with one daemon it is
    no concern of the Builder's (never written, never deleted); with two it is the conflict
    it always was, reported and left as it is."""
    foreign = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "shared", "namespace": namespace, "labels": {"owner": "someone"}},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}},
    }
    k.apply(foreign)
    before = get(k, "pdb", "shared", namespace)
    k.apply(builder("shared", namespace))
    wait_phase(k, "shared", namespace, "Ready")

    patch_spec(k, "shared", namespace, {"replicas": 2})

    def conflict() -> dict[str, Any] | None:
        obj = get(k, "builder", "shared", namespace)
        return obj if condition(obj, "Ready").get("reason") == "Conflict" else None

    obj = wait_until("the Builder to report the conflict", conflict, timeout=60)
    assert "PodDisruptionBudget shared" in obj["status"]["message"]
    assert obj["status"]["phase"] == "Degraded"

    patch_spec(k, "shared", namespace, {"replicas": 1})
    converged(k, namespace, "shared", 1)
    after = get(k, "pdb", "shared", namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"] == before["spec"] and not after["metadata"].get("ownerReferences")
    assert after["metadata"].get("labels") == {"owner": "someone"}
    touched = [w for w in writes_in(cluster, namespace, 0) if "/poddisruptionbudgets/shared" in w]
    assert touched == [], touched
