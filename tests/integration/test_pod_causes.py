"""Why a daemon does not run, as its pods tell the real API server, reported on the Builder.

The operator runs under the chart's ClusterRole (``k``), so these tests also prove that
listing and watching pods is granted and enough. The causes are made the way a cluster
makes them: the scheduler finds no node for a nodeSelector; a ResourceQuota refuses the pod
at the API server; and, since kwok runs no containers, a crash loop is written into the
pod's status the way the kubelet writes it (kwok's stages only touch Pending pods, so they
leave it as written). Expected values come from Kubernetes (the scheduler's message, the
quota's name) and the contract's condition names, never from the operator's code.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness import (
    builder,
    condition,
    events_of,
    get,
    patch_spec,
    pods_of,
    settle,
    wait_until,
    writes_in,
)

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

LOCK = "buildkitd: open /home/user/.local/share/buildkit/buildkitd.lock: permission denied"
EPHEMERAL = {"cache": {"type": "ephemeral"}}


def status_of(k: Kubectl, name: str, ns: str) -> dict[str, Any]:
    return dict(get(k, "builder", name, ns).get("status") or {})


def degraded_by(k: Kubectl, name: str, ns: str, reason: str, timeout: float = 90) -> dict[str, Any]:
    """The Builder once its Degraded condition is True with ``reason``."""

    def check() -> dict[str, Any] | None:
        obj = get(k, "builder", name, ns)
        cond = condition(obj, "Degraded")
        return obj if cond["status"] == "True" and cond["reason"] == reason else None

    return dict(wait_until(f"{name} Degraded by {reason}", check, timeout=timeout))


def ready(k: Kubectl, name: str, ns: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(k, "builder", name, ns)
        return obj if condition(obj, "Ready")["status"] == "True" else None

    return dict(wait_until(f"{name} Ready", check, timeout=timeout))


def warnings(k: Kubectl, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in events_of(k, ns, name) if e["type"] == "Warning" and e["reason"] == reason]


def assert_stalled_not_rolling(obj: dict[str, Any], reason: str) -> None:
    """What kstatus and Argo CD read: Stalled (a person must act), not in progress."""
    assert obj["status"]["phase"] == "Degraded", obj["status"]
    assert condition(obj, "Stalled")["status"] == "True"
    assert condition(obj, "Stalled")["reason"] == reason
    assert condition(obj, "Ready")["status"] == "False"
    for kind in ("Progressing", "Reconciling"):
        cond = condition(obj, kind)
        assert cond["status"] == "False" and cond["reason"] != "RollingOut", cond


def test_unschedulable_names_the_scheduler_message_and_recovers(k: Kubectl, namespace: str) -> None:
    k.apply(
        builder("nowhere", namespace, nodeSelector={"kubernetes.io/arch": "s390x"}, **EPHEMERAL)
    )
    obj = degraded_by(k, "nowhere", namespace, "Unschedulable")
    # The scheduler's own words, as it wrote them on the pod.
    (pod,) = pods_of(k, namespace, "nowhere")
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    assert scheduled["message"] in condition(obj, "Degraded")["message"]
    assert_stalled_not_rolling(obj, "Unschedulable")
    (daemon,) = obj["status"]["daemons"]
    assert daemon["reason"] == "Unschedulable" and scheduled["message"] in daemon["message"]
    assert len(warnings(k, namespace, "nowhere", "Unschedulable")) == 1

    # Fixed by its owner: Ready, the daemon's cause gone.
    patch_spec(k, "nowhere", namespace, {"nodeSelector": {"kubernetes.io/arch": "amd64"}})
    obj = ready(k, "nowhere", namespace)
    assert obj["status"]["phase"] == "Ready"
    assert condition(obj, "Degraded")["status"] == "False"
    assert "reason" not in obj["status"]["daemons"][0]


def test_a_quota_that_refuses_the_pod_is_named(k: Kubectl, namespace: str) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods", "namespace": namespace},
        "spec": {"hard": {"pods": "0"}},
    }
    k.apply(quota)
    # The quota admits nothing until its controller has counted what the namespace holds.
    wait_until(
        "the quota counted",
        lambda: (get(k, "resourcequota", "no-pods", namespace).get("status") or {}).get("used"),
    )
    k.apply(builder("quota", namespace, **EPHEMERAL))
    obj = degraded_by(k, "quota", namespace, "FailedCreate")
    message = condition(obj, "Degraded")["message"]
    assert "exceeded quota: no-pods" in message, message
    assert_stalled_not_rolling(obj, "FailedCreate")
    assert obj["status"]["daemons"][0]["reason"] == "FailedCreate"
    assert len(warnings(k, namespace, "quota", "FailedCreate")) == 1

    k("delete", "resourcequota", "no-pods", "-n", namespace)
    ready(k, "quota", namespace, timeout=120)


def test_a_limit_range_that_refuses_the_pod_is_named(k: Kubectl, namespace: str) -> None:
    # A namespace whose containers may ask for at most 100m of CPU; the Builder asks for more.
    # The Builder and its Deployment are admitted: only the pod is refused, by the LimitRanger
    # admission plugin at the API server, so the cause is the ReplicaSet's FailedCreate.
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "small", "namespace": namespace},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]},
        }
    )
    resources = {"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}}
    k.apply(builder("big", namespace, resources=resources, **EPHEMERAL))
    obj = degraded_by(k, "big", namespace, "FailedCreate")
    message = condition(obj, "Degraded")["message"]
    # The LimitRanger's own words: the limit it enforces, on the resource it names.
    assert "maximum cpu usage per Container is 100m" in message, message
    assert_stalled_not_rolling(obj, "FailedCreate")
    assert len(warnings(k, namespace, "big", "FailedCreate")) == 1

    # Fixed by its owner: a request the namespace allows.
    small = {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}
    patch_spec(k, "big", namespace, {"resources": small})
    ready(k, "big", namespace, timeout=120)


def _kubelet_status(pod: dict[str, Any], *, crashing: bool, restarts: int, at: str) -> str:
    """A merge patch of the pod's status as the kubelet writes it: the buildkitd container
    waiting in CrashLoopBackOff with its last termination (its log's last lines, under
    FallbackToLogsOnError), or running and ready again."""
    now = "2026-01-01T00:00:00Z"
    (spec_container,) = [
        c for c in pod["status"]["containerStatuses"] if c["name"] == "buildkitd"
    ] or [{"name": "buildkitd", "image": "x"}]
    terminated = {
        "exitCode": 1,
        "reason": "Error",
        "startedAt": at,
        "finishedAt": at,
        "containerID": "containerd://4f2b",
        "message": f'time="{at}" level=info msg="auto snapshotter: using overlayfs"\n{LOCK}\n',
    }
    state: dict[str, Any] = (
        {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {10 * restarts}s restarting failed container=buildkitd "
                f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}"
                f"({pod['metadata']['uid']})",
            }
        }
        if crashing
        else {"running": {"startedAt": at}}
    )
    ready: dict[str, Any] = {"status": "False" if crashing else "True", "lastTransitionTime": at}
    if crashing:
        ready["reason"] = "ContainersNotReady"
        ready["message"] = "containers with unready status: [buildkitd]"
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", **ready},
        {"type": "ContainersReady", **ready},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]
    container = {
        "name": "buildkitd",
        "image": spec_container.get("image", "x"),
        "imageID": spec_container.get("imageID", ""),
        "containerID": "containerd://4f2b",
        "ready": not crashing,
        "started": not crashing,
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": terminated},
    }
    return json.dumps(
        {"status": {"phase": "Running", "conditions": conditions, "containerStatuses": [container]}}
    )


def _write_kubelet_status(k: Kubectl, ns: str, name: str, **kw: Any) -> None:
    (pod,) = pods_of(k, ns, name)
    patch = _kubelet_status(pod, **kw)
    name = pod["metadata"]["name"]
    k("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", patch)


def test_a_crash_loop_is_degraded_with_its_last_words_once(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    k.apply(builder("crashy", namespace, **EPHEMERAL))
    ready(k, "crashy", namespace)

    _write_kubelet_status(
        k, namespace, "crashy", crashing=True, restarts=3, at="2026-01-01T00:01:00Z"
    )
    obj = degraded_by(k, "crashy", namespace, "CrashLoopBackOff")
    assert LOCK in condition(obj, "Degraded")["message"]
    assert_stalled_not_rolling(obj, "CrashLoopBackOff")
    (daemon,) = obj["status"]["daemons"]
    assert daemon["reason"] == "CrashLoopBackOff" and LOCK in daemon["message"]
    assert not daemon["ready"]
    # kwok left the kubelet's status as written.
    (pod,) = pods_of(k, namespace, "crashy")
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    wait_until(
        "one Warning", lambda: len(warnings(k, namespace, "crashy", "CrashLoopBackOff")) == 1
    )

    # It goes round again: another restart, a later back-off, new timestamps. The Builder
    # says the same: the operator writes nothing (no status, no second Warning).
    since = time.time()
    _write_kubelet_status(
        k, namespace, "crashy", crashing=True, restarts=4, at="2026-01-01T00:02:30Z"
    )
    settle(cluster, namespace)
    assert writes_in(cluster, namespace, since) == []
    assert get(k, "builder", "crashy", namespace)["status"] == obj["status"]
    assert len(warnings(k, namespace, "crashy", "CrashLoopBackOff")) == 1

    # The daemon runs again: Ready, and the cause is gone.
    _write_kubelet_status(
        k, namespace, "crashy", crashing=False, restarts=4, at="2026-01-01T00:03:00Z"
    )
    obj = ready(k, "crashy", namespace)
    assert obj["status"]["phase"] == "Ready"
    assert "reason" not in obj["status"]["daemons"][0]
    assert len(warnings(k, namespace, "crashy", "CrashLoopBackOff")) == 1
