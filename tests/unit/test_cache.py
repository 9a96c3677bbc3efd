"""The children's cache keeps the newest state of each object, whatever order the watch's
events and the operator's own writes arrive in. Events are fed in directly: the cache's
watch and list against the real API server are exercised by every integration test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buildkit_operator.cluster.cache import ChildCache

LABELS = {"app.kubernetes.io/managed-by": "buildkit-operator", "buildkit.dev/builder": "b"}


def secret(uid: str, version: int) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {
            "name": "b-ca",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": str(version),
            "labels": LABELS,
        },
    }


def cache() -> tuple[ChildCache, list[dict[str, Any]]]:
    woken: list[dict[str, Any]] = []
    return ChildCache(None, [], woken.append), woken  # type: ignore[arg-type]


def cached(c: ChildCache) -> dict[str, Any] | None:
    return c.children("ns", "b").get(("Secret", "b-ca"))


def test_a_late_delete_of_the_old_object_keeps_its_successor() -> None:
    """Deleted and made anew under the same name (a recreate): the DELETED event of the old
    one arrives after the operator recorded the new one. Before, the new one vanished."""
    c, _ = cache()
    c.remember(secret("old", 10))
    c.remember(secret("new", 12))  # the write's answer
    c._drop(secret("old", 11))  # the late DELETED event
    assert cached(c) is not None and cached(c)["metadata"]["uid"] == "new"


def test_a_delete_of_the_cached_object_removes_it() -> None:
    c, woken = cache()
    c.remember(secret("a", 10))
    c._drop(secret("a", 11))
    assert cached(c) is None
    assert woken and woken[-1]["metadata"]["uid"] == "a"


def test_a_relist_older_than_a_write_does_not_drop_it() -> None:
    """A list taken at version 20, the operator's create answered at 21 while it ran: the
    object is absent from the list, but not gone."""
    c, _ = cache()
    c.remember(secret("a", 21))
    c._drop(secret("a", 21), listed_at="20")
    assert cached(c) is not None
    c._drop(secret("a", 21), listed_at="22")  # listed after: really gone
    assert cached(c) is None


def test_an_older_event_never_replaces_a_newer_write() -> None:
    c, _ = cache()
    c.remember(secret("a", 15))
    c._put(secret("a", 14))
    assert cached(c)["metadata"]["resourceVersion"] == "15"


def test_pods_are_kept_apart_from_the_children_without_their_spec() -> None:
    """A pass must never plan to delete a pod (it is no child it renders), and a pod's spec,
    which the operator never reads, is not held in memory."""
    c, woken = cache()
    pod = {
        "kind": "Pod",
        "metadata": {
            "name": "b-0-7c9d8f5b6-x7k2p",
            "namespace": "ns",
            "uid": "p",
            "resourceVersion": "5",
            "labels": LABELS,
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "spec": {"containers": [{"name": "x", "env": [{"name": "TOKEN", "value": "s3cret"}]}]},
        "status": {"phase": "Running"},
    }
    c._put(pod)  # a watch event
    c.remember({**pod, "metadata": {**pod["metadata"], "resourceVersion": "6"}})
    assert c.children("ns", "b") == {}
    (kept,) = c.pods("ns", "b")
    assert kept["status"] == {"phase": "Running"} and "spec" not in kept
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["resourceVersion"] == "5"  # a write's answer is never a pod
    assert woken == []  # a pod that runs says no cause: it wakes nothing


def test_a_refused_watch_of_pods_leaves_the_children_fresh() -> None:
    """An operator upgraded without its chart's RBAC: the pods' watch never lists. The
    children's cache is still used (no 30 s wait, no LIST of every kind on each pass)."""
    import threading
    import time

    c, _ = cache()
    for kind in ("Deployment", "Pod"):
        c._synced[(kind, "")] = threading.Event()
    c._synced[("Deployment", "")].set()
    c._heard[("Deployment", "")] = time.monotonic()
    assert c.fresh() and not c.fresh(pods=True)
    assert c.wait_synced(0.01)


# --- which changes wake a pass ------------------------------------------------------------


def deployment(version: int, **status: Any) -> dict[str, Any]:
    """A Deployment as its controller reports it mid-rollout, ``status`` changed."""
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "b-0",
            "namespace": "ns",
            "uid": "d",
            "generation": 1,
            "resourceVersion": str(version),
            "labels": LABELS,
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "unavailableReplicas": 1,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": 'ReplicaSet "b-0-5d9" is progressing.',
                    "lastUpdateTime": "2026-11-24T12:00:00Z",
                    "lastTransitionTime": "2026-11-24T12:00:00Z",
                }
            ],
            **status,
        },
    }


def _progressing(**changes: str) -> list[dict[str, str]]:
    (cond,) = deployment(0)["status"]["conditions"]
    return [{**cond, **changes}]


def test_a_deployment_status_update_that_changes_nothing_read_wakes_no_pass() -> None:
    """The controller rewrites a rolling Deployment's status many times (a condition's
    lastUpdateTime, counts a pass never reads): the cache keeps the newest, and wakes no
    pass for it. Before, each cost a whole pass."""
    c, woken = cache()
    c._put(deployment(10))
    assert len(woken) == 1  # a new child wakes its Builder
    c._put(deployment(11, conditions=_progressing(lastUpdateTime="2026-11-24T12:00:05Z")))
    c._put(deployment(12, collisionCount=0, terminatingReplicas=0))
    assert len(woken) == 1
    assert c.children("ns", "b")[("Deployment", "b-0")]["metadata"]["resourceVersion"] == "12"


@pytest.mark.parametrize(
    "status",
    [
        {"readyReplicas": 1},
        {"availableReplicas": 1},
        {"updatedReplicas": 0},
        {"replicas": 2},
        {"observedGeneration": 2},
        {"unavailableReplicas": 0},
        {"conditions": _progressing(reason="NewReplicaSetAvailable")},
        {"conditions": _progressing(status="False", reason="ProgressDeadlineExceeded")},
        {"conditions": [*_progressing(), {"type": "Available", "status": "True"}]},
    ],
)
def test_a_deployment_status_update_that_changes_what_is_read_wakes_a_pass(
    status: dict[str, Any],
) -> None:
    c, woken = cache()
    c._put(deployment(10))
    c._put(deployment(11, **status))
    assert len(woken) == 2


def test_a_change_of_spec_or_metadata_always_wakes_a_pass() -> None:
    c, woken = cache()
    c._put(deployment(10))
    changed = deployment(11)
    changed["spec"] = {"replicas": 0}
    c._put(changed)
    annotated = deployment(12)
    annotated["spec"] = {"replicas": 0}
    annotated["metadata"]["annotations"] = {"someone": "was here"}
    c._put(annotated)
    assert len(woken) == 3


def test_a_budgets_count_of_healthy_pods_wakes_no_pass_but_a_pods_cause_does() -> None:
    """Nothing reads a PodDisruptionBudget's status; a pod's status is read for the causes
    of a daemon that does not run."""
    c, woken = cache()
    budget = {
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "b", "namespace": "ns", "resourceVersion": "3", "labels": LABELS},
        "spec": {"maxUnavailable": 1},
        "status": {"currentHealthy": 1, "disruptionsAllowed": 0},
    }
    c._put(budget)
    c._put({**budget, "metadata": {**budget["metadata"], "resourceVersion": "4"},
            "status": {"currentHealthy": 2, "disruptionsAllowed": 1}})  # fmt: skip
    assert len(woken) == 1
    c._put(pod(5, {"phase": "Pending"}))
    c._put(pod(6, {"phase": "Pending", "containerStatuses": [_waiting("ErrImagePull", "no")]}))
    assert len(woken) == 2


def pod(version: int, status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": "b-0-x",
            "namespace": "ns",
            "uid": "p",
            "resourceVersion": str(version),
            "labels": LABELS,
            **meta,
        },
        "status": status,
    }


def _waiting(reason: str, message: str = "", restarts: int = 0, **more: Any) -> dict[str, Any]:
    return {
        "name": "buildkitd",
        "ready": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": message}},
        **more,
    }


_SCHEDULED = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-03T19:00Z"}
_RUNNING_READY = {
    "name": "buildkitd",
    "ready": True,
    "restartCount": 0,
    "state": {"running": {"startedAt": "2026-12-03T19:00:03Z"}},
}


def test_a_pod_that_starts_as_it_should_wakes_no_pass() -> None:
    """Created, scheduled, its container creating, running, ready, then deleted: nothing
    a cause is read from moves (the Deployment's status says when it is ready, and wakes
    the pass for that). Before, each step cost its Builder a pass."""
    c, woken = cache()
    c._put(pod(1, {}))
    c._put(pod(2, {"phase": "Pending", "conditions": [_SCHEDULED]}))
    c._put(pod(3, {"phase": "Pending", "conditions": [_SCHEDULED],
                   "containerStatuses": [_waiting("ContainerCreating")]}))  # fmt: skip
    running = {**_RUNNING_READY, "ready": False}
    c._put(pod(4, {"phase": "Running", "conditions": [_SCHEDULED], "containerStatuses": [running]}))
    c._put(pod(5, {"phase": "Running", "podIP": "10.0.0.9", "conditions": [_SCHEDULED],
                   "containerStatuses": [_RUNNING_READY]}))  # fmt: skip
    c._put(pod(6, {"phase": "Running"}, deletionTimestamp="2026-12-03T19:05:00Z"))
    c._drop(pod(7, {"phase": "Running"}))
    assert woken == []


def test_a_crash_loop_wakes_a_pass_when_it_starts_not_on_each_restart() -> None:
    """A container that crash-loops is a cause from its second exit on; the restarts after
    that (and the back-off's changing message) change nothing the cause says."""
    c, woken = cache()
    ended = {"terminated": {"exitCode": 1, "reason": "Error", "message": "bad flag"}}
    c._put(pod(1, {"phase": "Running", "containerStatuses": [_waiting("ContainerCreating")]}))
    c._put(pod(2, {"phase": "Running", "containerStatuses": [
        _waiting("CrashLoopBackOff", "back-off 10s", 1, lastState=ended)]}))  # fmt: skip
    assert len(woken) == 1
    for version, restarts in ((3, 2), (4, 3), (5, 4)):
        c._put(pod(version, {"phase": "Running", "containerStatuses": [
            _waiting("CrashLoopBackOff", f"back-off {10 * restarts}s", restarts,
                     lastState=ended)]}))  # fmt: skip
        between = {**_RUNNING_READY, "ready": False, "restartCount": restarts, "lastState": ended}
        c._put(pod(version * 10, {"phase": "Running", "containerStatuses": [between]}))
    assert len(woken) == 1
    other = {"terminated": {"exitCode": 2, "reason": "Error", "message": "worse"}}
    c._put(pod(60, {"phase": "Running", "containerStatuses": [
        _waiting("CrashLoopBackOff", "back-off 80s", 5, lastState=other)]}))  # fmt: skip
    assert len(woken) == 2
    c._drop(pod(70, {"phase": "Running", "containerStatuses": [
        _waiting("CrashLoopBackOff", "back-off 80s", 5, lastState=other)]}))  # fmt: skip
    assert len(woken) == 3  # its cause gone with it


_UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                  "message": "0/3 nodes are available"}  # fmt: skip


@pytest.mark.parametrize(
    "status",
    [
        {"conditions": [_UNSCHEDULABLE]},
        {"containerStatuses": [_waiting("ImagePullBackOff", "Back-off pulling image")]},
        {"containerStatuses": [_waiting("CreateContainerConfigError", "secret x not found")]},
        {"initContainerStatuses": [_waiting("ErrImagePull", "not found")]},
    ],
)
def test_a_pod_that_says_why_its_daemon_does_not_run_wakes_a_pass(status: dict[str, Any]) -> None:
    c, woken = cache()
    c._put(pod(1, {"phase": "Pending"}))
    c._put(pod(2, {"phase": "Pending", **status}))
    assert len(woken) == 1


# --- what the cache keeps ---------------------------------------------------------------


def test_the_cache_keeps_what_drift_and_status_read_and_drift_reads_the_same() -> None:
    """Of the managed fields only the operator's apply entry is kept (as text), and of the
    status only what a pass reads: drift finds the same stale field on the cached object
    as on the object the API server sent."""
    from buildkit_operator.api.names import FIELD_MANAGER
    from buildkit_operator.reconcile.drift import stale_fields

    ours = {"f:spec": {"f:replicas": {}, "f:paused": {}}, "f:metadata": {"f:labels": {".": {}}}}
    sent = deployment(10, readyReplicas=1, collisionCount=3)
    sent["metadata"]["managedFields"] = [
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": ours},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "fieldsV1": {"f:status": {"f:replicas": {}}}},
        {"manager": FIELD_MANAGER, "operation": "Update", "fieldsV1": {"f:x": {}}},
    ]  # fmt: skip
    c, _ = cache()
    c._put(json.loads(json.dumps(sent)))
    kept = c.children("ns", "b")[("Deployment", "b-0")]
    (entry,) = kept["metadata"]["managedFields"]
    assert entry["manager"] == FIELD_MANAGER and entry["operation"] == "Apply"
    assert "collisionCount" not in kept["status"] and kept["status"]["readyReplicas"] == 1
    assert all("lastUpdateTime" not in cond for cond in kept["status"]["conditions"])
    want = {"metadata": {"labels": LABELS}, "spec": {"replicas": 1}}
    assert stale_fields(want, kept, FIELD_MANAGER) == ["spec.paused"]
    assert stale_fields(want, kept, FIELD_MANAGER) == stale_fields(want, sent, FIELD_MANAGER)

    service = {
        "kind": "Service",
        "metadata": {"name": "b", "namespace": "ns", "resourceVersion": "3", "labels": LABELS},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    }
    c._put(service)
    assert "status" not in c.children("ns", "b")[("Service", "b")]


def test_a_pod_keeps_only_what_its_causes_are_read_from() -> None:
    c, _ = cache()
    waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
    c._put(
        {
            "kind": "Pod",
            "metadata": {
                "name": "b-0-x", "namespace": "ns", "uid": "p", "resourceVersion": "5",
                "labels": LABELS, "annotations": {"big": "x" * 1000},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "b-0-5d9"}],
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.1", "hostIP": "10.0.0.2",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "buildkitd", "ready": False, "restartCount": 3, "state": waiting,
                     "lastState": {}, "image": "moby/buildkit", "imageID": "sha256:x",
                     "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                ],
            },
        }
    )  # fmt: skip
    (kept,) = c.pods("ns", "b")
    assert set(kept["metadata"]) == {"name", "namespace", "uid", "resourceVersion", "labels"}
    assert kept["status"] == {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "buildkitd", "image": "moby/buildkit", "ready": False, "restartCount": 3,
             "state": waiting, "lastState": {}},
        ],
    }  # fmt: skip


def test_the_cause_read_from_a_cached_pod_is_the_one_read_from_the_pod() -> None:
    """Slimming must not change what a user reads: the image a pull fails for was dropped
    once, and the message read "cannot pull image ?" on the real node."""
    from datetime import UTC, datetime

    from buildkit_operator.reconcile.pods import pod_cause

    c, _ = cache()
    pod = {
        "kind": "Pod",
        "metadata": {
            "name": "b-0-y", "namespace": "ns", "uid": "q", "resourceVersion": "7",
            "labels": LABELS, "creationTimestamp": "2026-12-03T10:00:00Z",
        },
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {"name": "buildkitd", "ready": False, "restartCount": 0,
                 "image": "registry.invalid/buildkit:none", "imageID": "",
                 "state": {"waiting": {"reason": "ImagePullBackOff",
                                       "message": "Back-off pulling image"}}},
            ],
        },
    }  # fmt: skip
    c._put(pod)
    (kept,) = c.pods("ns", "b")
    now = datetime(2026, 12, 3, 10, 1, tzinfo=UTC)
    full = pod_cause(pod, now)
    assert full is not None and "registry.invalid/buildkit:none" in full.message
    assert pod_cause(kept, now) == full
