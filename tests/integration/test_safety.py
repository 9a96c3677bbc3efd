"""Safety against the real API server: nothing that is not ours is taken, no cache is lost,
nothing loops, status is not Ready before the rollout is, and refusals are reported.

Each test starts from a reproduction a user hit (or could hit); the live objects are the
API server's, never the renderer's output.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from harness import (
    assert_at_rest,
    builder,
    condition,
    events_of,
    get,
    patch_spec,
    pods_of,
    wait_phase,
    wait_until,
    writes_in,
)

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

EPHEMERAL = {"type": "ephemeral", "size": "1Gi"}


def _exists(k: Kubectl, kind: str, name: str, ns: str) -> bool:
    out = k("get", kind, name, "-n", ns, "--ignore-not-found", "-o", "name")
    return bool(out.strip())


def _delete_builder(k: Kubectl, name: str, ns: str) -> None:
    k("delete", "builder", name, "-n", ns, "--wait=true", "--timeout=60s")


# --- 1: two tolerations sharing a key, and every list that shares item values -----------


def test_lists_whose_items_share_a_key_converge_and_rest(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    spec = {
        "cache": EPHEMERAL,
        "tolerations": [
            {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                                {"key": "kubernetes.io/os", "operator": "NotIn", "values": ["x"]},
                            ]
                        }
                    ]
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
            },
            {
                "maxSkew": 2,
                "topologyKey": "kubernetes.io/arch",
                "whenUnsatisfiable": "ScheduleAnyway",
            },
        ],
        "resources": {"requests": {"cpu": "0.1", "memory": "1e3"}, "limits": {"cpu": "1"}},
    }
    k.apply(builder("tol", namespace, **spec))
    wait_phase(k, "tol", namespace, "Ready")
    assert_at_rest(k, cluster, namespace, "tol")


# --- 5: a hand edit below one unit is repaired --------------------------------------------


def test_quantity_edit_below_one_unit_is_repaired(k: Kubectl, namespace: str) -> None:
    k.apply(builder("cpu", namespace, cache=EPHEMERAL, resources={"requests": {"cpu": "100m"}}))
    wait_phase(k, "cpu", namespace, "Ready")
    path = "/spec/template/spec/containers/0/resources/requests/cpu"
    k(
        "patch",
        "deployment",
        "cpu-0",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": path, "value": "500m"}]),
    )

    def cpu() -> str:
        dep = get(k, "deployment", "cpu-0", namespace)
        return str(dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])

    wait_until("requests.cpu back at 100m", lambda: cpu() == "100m", timeout=30)


# --- 2: noCreate adopts and never deletes -------------------------------------------------


def test_no_create_never_deletes_a_workload_it_cannot_adopt_in_place(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    k("create", "deployment", "nc-0", "--image=busybox", "-n", namespace)
    before = get(k, "deployment", "nc-0", namespace)
    since = time.time()
    k.apply(builder("nc", namespace, noCreate=True, cache=EPHEMERAL))
    obj = wait_phase(k, "nc", namespace, "Drifted")
    assert "nc-0" in obj["status"]["message"] and "spec.selector" in obj["status"]["message"]
    time.sleep(3)
    after = get(k, "deployment", "nc-0", namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert not any("delet" in e["message"] for e in events_of(k, namespace, "nc"))
    assert _exists(k, "service", "nc", namespace)  # the rest is served as usual
    _delete_builder(k, "nc", namespace)
    time.sleep(2)
    assert get(k, "deployment", "nc-0", namespace)["metadata"]["uid"] == before["metadata"]["uid"]
    # From the audit log, over the whole test: the operator never wrote to the workload
    # (no patch, no owner reference, no delete), not even for a moment.
    touched = [
        w for w in writes_in(cluster, namespace, since) if _writes_to(w, "Deployment", "nc-0")
    ]
    assert touched == [], touched


# --- 3: objects of our children's names that are someone else's ---------------------------


def _foreign(kind: str, name: str) -> dict[str, Any]:
    meta = {"name": name, "labels": {"owner": "someone-else"}}
    if kind == "ConfigMap":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {"app.conf": "x"}}
    if kind == "Secret":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "stringData": {"a": "b"}}
    if kind == "Service":
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }
    if kind == "PodDisruptionBudget":
        return {
            "apiVersion": "policy/v1",
            "kind": kind,
            "metadata": meta,
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}},
        }
    if kind == "PersistentVolumeClaim":
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta,
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    }


def _writes_to(write: str, kind: str, name: str) -> bool:
    """Whether an audited write went to this object or one of its subresources (its
    status, its scale) (the Service and the PodDisruptionBudget share a name)."""
    plural = {"PodDisruptionBudget": "poddisruptionbudgets"}.get(kind, kind.lower() + "s")
    path = write.split("?")[0]
    return path.endswith(f"/{plural}/{name}") or f"/{plural}/{name}/" in path


@pytest.mark.parametrize(
    ("kind", "name", "replicas"),
    [
        ("ConfigMap", "web-config", 1),
        ("Service", "web", 1),
        ("Secret", "web-ca", 1),
        ("Secret", "web-server-tls", 1),
        ("Secret", "web-client-tls", 1),
        ("PersistentVolumeClaim", "web-cache-0", 1),
        ("Deployment", "web-0", 1),
        # A budget is a child only of a Builder with more than one daemon.
        ("PodDisruptionBudget", "web", 2),
    ],
)
def test_someone_elses_object_of_a_childs_name_is_never_touched(
    k: Kubectl, namespace: str, cluster: Any, kind: str, name: str, replicas: int
) -> None:
    k.apply(
        {
            **_foreign(kind, name),
            "metadata": {**_foreign(kind, name)["metadata"], "namespace": namespace},
        }
    )
    before = get(k, kind, name, namespace)
    k.apply(builder("web", namespace, cache={"size": "1Gi"}, replicas=replicas))

    def conflict() -> dict[str, Any] | None:
        obj = get(k, "builder", "web", namespace)
        ready = condition(obj, "Ready") if obj.get("status") else {}
        return obj if ready.get("reason") == "Conflict" else None

    obj = wait_until("the Builder to report the conflict", conflict, timeout=60)
    assert f"{kind} {name}" in obj["status"]["message"]
    assert obj["status"]["phase"] == "Degraded"
    assert any(
        e["reason"] == "Degraded" and name in e["message"] for e in events_of(k, namespace, "web")
    )
    # The rest goes on: the Service (or, when it is the conflict, the config) exists.
    other = ("configmap", "web-config") if kind == "Service" else ("service", "web")
    wait_until(f"{other[0]} {other[1]} created", lambda: _exists(k, *other, namespace), 30)
    # Nothing of the Builder loops around the conflict (certificates, say, issued anew).
    assert_at_rest(k, cluster, namespace, "web")
    after = get(k, kind, name, namespace)
    # Only the operator's writes count: a Deployment's own controller still writes its status.
    assert not [w for w in writes_in(cluster, namespace, 0) if _writes_to(w, kind, name)]
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert not after["metadata"].get("ownerReferences")
    assert after.get("spec", after.get("data")) == before.get("spec", before.get("data"))

    _delete_builder(k, "web", namespace)
    wait_until(
        f"the Builder's own {other[0]} collected", lambda: not _exists(k, *other, namespace), 60
    )
    kept = get(k, kind, name, namespace)
    assert kept["metadata"]["uid"] == before["metadata"]["uid"]
    assert not [w for w in writes_in(cluster, namespace, 0) if _writes_to(w, kind, name)]


# --- 4: a retained cache survives re-creation with a smaller size or another class --------


def test_retained_cache_is_never_deleted(k: Kubectl, namespace: str, cluster: Any) -> None:
    since = time.time()
    k.apply(builder("keep", namespace, cache={"size": "50Gi"}))
    wait_phase(k, "keep", namespace, "Ready")
    claim = get(k, "pvc", "keep-cache-0", namespace)
    _delete_builder(k, "keep", namespace)
    assert get(k, "pvc", "keep-cache-0", namespace)["metadata"]["uid"] == claim["metadata"]["uid"]

    k.apply(builder("keep", namespace))  # default size: 20Gi
    obj = wait_phase(k, "keep", namespace, "Ready")
    wait_until(
        "the kept claim reported",
        lambda: (
            condition(get(k, "builder", "keep", namespace), "Drifted")["reason"] == "CacheClaimKept"
        ),
        30,
    )
    obj = get(k, "builder", "keep", namespace)
    drifted = " ".join(obj["status"]["driftedFields"])
    assert "keep-cache-0" in drifted and "50Gi" in drifted and "delete the claim" in drifted
    now = get(k, "pvc", "keep-cache-0", namespace)
    assert now["metadata"]["uid"] == claim["metadata"]["uid"]
    assert now["spec"]["resources"]["requests"]["storage"] == "50Gi"

    patch_spec(k, "keep", namespace, {"cache": {"storageClassName": "fast-ssd"}})
    wait_until(
        "the class change reported",
        lambda: (
            "fast-ssd" in " ".join(get(k, "builder", "keep", namespace)["status"]["driftedFields"])
        ),
        30,
    )
    time.sleep(2)
    now = get(k, "pvc", "keep-cache-0", namespace)
    assert now["metadata"]["uid"] == claim["metadata"]["uid"]
    assert not any(
        "PersistentVolumeClaim" in e["message"] and "delet" in e["message"]
        for e in events_of(k, namespace, "keep")
    )
    # A delete the claim's protection finalizer holds leaves it there, uid and all: the
    # audit log tells whether one was ever asked for.
    deletes = [
        w
        for w in writes_in(cluster, namespace, since)
        if w.startswith(("delete ", "deletecollection ")) and "/persistentvolumeclaims" in w
    ]
    assert deletes == [], deletes


def test_scale_down_and_up_never_puts_two_pods_on_one_claim(k: Kubectl, namespace: str) -> None:
    k.apply(builder("two", namespace, replicas=2, cache={"size": "1Gi"}))
    wait_phase(k, "two", namespace, "Ready")
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            users: dict[str, list[str]] = {}
            for pod in pods_of(k, namespace, "two"):
                for volume in pod["spec"].get("volumes") or []:
                    if claim := volume.get("persistentVolumeClaim"):
                        users.setdefault(claim["claimName"], []).append(pod["metadata"]["name"])
            seen.extend(f"{c}: {p}" for c, p in users.items() if len(p) > 1)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        patch_spec(k, "two", namespace, {"replicas": 1})
        time.sleep(0.5)
        patch_spec(k, "two", namespace, {"replicas": 2})
        wait_until(
            "2/2 ready again",
            lambda: (
                get(k, "builder", "two", namespace).get("status", {}).get("ready") == "2/2"
                and len(pods_of(k, namespace, "two")) == 2
            ),
            timeout=90,
        )
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert seen == [], f"two pods on one claim: {seen[:5]}"
    assert _exists(k, "pvc", "two-cache-1", namespace)


# --- status a machine can trust ------------------------------------------------------------


def test_ready_only_once_the_rollout_is_done(k: Kubectl, namespace: str) -> None:
    k.apply(builder("roll", namespace, cache=EPHEMERAL))
    wait_phase(k, "roll", namespace, "Ready")
    patch_spec(k, "roll", namespace, {"buildkitd": {"maxParallelism": 3}})
    generation = get(k, "builder", "roll", namespace)["metadata"]["generation"]
    saw_progressing = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        obj = get(k, "builder", "roll", namespace)
        status = obj.get("status") or {}
        if status.get("observedGeneration") == generation:
            if condition(obj, "Progressing")["status"] == "True":
                saw_progressing = True
            if status.get("phase") == "Ready":
                dep = get(k, "deployment", "roll-0", namespace)
                assert dep["status"].get("observedGeneration") == dep["metadata"]["generation"]
                assert dep["status"].get("updatedReplicas") == 1
                assert dep["status"].get("readyReplicas") == 1
                assert condition(obj, "Progressing")["status"] == "False"
                break
        time.sleep(0.05)
    else:
        raise AssertionError("never Ready after the change")
    assert saw_progressing, "no Progressing condition seen during the rollout"


def test_invalid_edit_keeps_repairing_what_runs(k: Kubectl, namespace: str) -> None:
    k.apply(builder("inv", namespace, cache=EPHEMERAL))
    wait_phase(k, "inv", namespace, "Ready")
    template = get(k, "deployment", "inv-0", namespace)["spec"]["template"]
    patch_spec(k, "inv", namespace, {"buildkitd": {"config": "[worker.oci\n"}})
    obj = wait_phase(k, "inv", namespace, "Invalid")
    assert "spec.buildkitd.config" in obj["status"]["message"]
    k("delete", "service", "inv", "-n", namespace)
    wait_until("the Service repaired", lambda: _exists(k, "service", "inv", namespace), 30)
    assert get(k, "deployment", "inv-0", namespace)["spec"]["template"] == template
    patch_spec(k, "inv", namespace, {"buildkitd": {"config": "[worker.oci]\n"}})
    wait_phase(k, "inv", namespace, "Ready")


# --- faults: refusals are reported, and the rest goes on ---------------------------------


def test_a_refused_child_is_reported_with_the_servers_message(k: Kubectl, namespace: str) -> None:
    # An empty nodeSelectorTerms passes the Builder's free-form affinity but not the
    # Deployment's validation: a 422 on one child.
    bad = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
        }
    }
    k.apply(builder("err", namespace, cache=EPHEMERAL, affinity=bad))

    def refused() -> dict[str, Any] | None:
        obj = get(k, "builder", "err", namespace)
        return obj if obj.get("status", {}).get("phase") == "Degraded" else None

    obj = wait_until("the refusal reported", refused, timeout=60)
    message = obj["status"]["message"]
    assert "Deployment err-0" in message and "422" in message and "nodeSelectorTerms" in message
    assert condition(obj, "Ready")["reason"] == "ApiError"
    warnings = [e for e in events_of(k, namespace, "err") if e["reason"] == "ApplyFailed"]
    assert warnings and "err-0" in warnings[0]["message"]
    assert _exists(k, "service", "err", namespace) and _exists(
        k, "configmap", "err-config", namespace
    )
    patch_spec(k, "err", namespace, {"affinity": None})
    wait_phase(k, "err", namespace, "Ready")


def test_a_quota_refusal_is_reported_then_recovered(k: Kubectl, namespace: str) -> None:
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-services", "namespace": namespace},
            "spec": {"hard": {"services": "0"}},
        }
    )
    wait_until(
        "the quota in force",
        lambda: get(k, "resourcequota", "no-services", namespace).get("status", {}).get("hard"),
        30,
    )
    k.apply(builder("quota", namespace, cache=EPHEMERAL))

    def refused() -> dict[str, Any] | None:
        obj = get(k, "builder", "quota", namespace)
        return obj if "403" in obj.get("status", {}).get("message", "") else None

    obj = wait_until("the 403 reported", refused, timeout=60)
    assert "Service quota" in obj["status"]["message"]
    assert any(e["reason"] == "ApplyFailed" for e in events_of(k, namespace, "quota"))
    k("delete", "resourcequota", "no-services", "-n", namespace)
    wait_phase(k, "quota", namespace, "Ready", timeout=120)


def test_api_server_restart_mid_reconcile_wedges_nothing(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    for i in range(5):
        k.apply(builder(f"rs-{i}", namespace, cache=EPHEMERAL))
    cluster.restart_apiserver(down_for=3)
    for i in range(5):
        wait_phase(k, f"rs-{i}", namespace, "Ready", timeout=180)
    patch_spec(k, "rs-0", namespace, {"buildkitd": {"maxParallelism": 2}})
    wait_until(
        "rs-0 rolled after the restart",
        lambda: (
            get(k, "builder", "rs-0", namespace)["status"]["observedGeneration"] == 2
            and get(k, "builder", "rs-0", namespace)["status"]["phase"] == "Ready"
        ),
        90,
    )
