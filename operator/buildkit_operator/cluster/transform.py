"""What the children's cache keeps of an object, and which changes wake a pass: the
cache's transforms (as controller-runtime's), so that the memory held and the passes run
per Builder stay what a pass needs. Pure: each reads what the reconcile layer reads
(``daemon_state``, ``holds``, ``idle``, ``pods``, ``drift``) and nothing else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api.names import FIELD_MANAGER
from .kinds import OBSERVED

# What a pass reads of a Deployment's status (reconcile/daemon_state.py, holds.py,
# idle.py): the controller rewrites the rest (a condition's lastUpdateTime, the counts a
# pass never compares) on every step of a rollout.
_DEPLOYMENT_STATUS_READ = (
    "observedGeneration",
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "availableReplicas",
    "unavailableReplicas",
)


# What reconcile/pods.py reads of a pod, and what indexes it here.
_POD_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
)
_CONTAINER_STATUS_READ = ("name", "image", "ready", "restartCount", "state", "lastState")
# A container's waiting reasons that say it is on its way (reconcile/pods.py finds no cause
# in them), and those whose message changes on every retry while pods.py never reads it.
_STARTING = {"ContainerCreating", "PodInitializing"}
_MESSAGE_UNREAD = {"ErrImagePull", "ImagePullBackOff"}


def _deployment_status(status: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: status[k] for k in _DEPLOYMENT_STATUS_READ if k in status}
    if status.get("conditions"):
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastUpdateTime"} for c in status["conditions"]
        ]
    return out


def _pod_status(status: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: status[k] for k in ("phase", "conditions") if k in status}
    for key in ("initContainerStatuses", "containerStatuses"):
        if status.get(key):
            out[key] = [{k: c[k] for k in _CONTAINER_STATUS_READ if k in c} for c in status[key]]
    return out


def _pod_causes_read(pod: Mapping[str, Any] | None) -> dict[str, Any]:
    """What reconcile/pods.py derives a pod's cause from, as it reads it: nothing of a pod
    going away (its replacement is what counts); whether it cannot be scheduled (and why);
    and of each container not ready a waiting reason that is one, its message where it is
    read, whether it crash-loops (two restarts or more: the count itself is never shown)
    and its last termination then.

    A pod that starts as it should (created, scheduled, its containers creating, running,
    ready) reads the same all along: its Deployment's status says when it is ready, and
    wakes the pass for that. A pod only scheduled long ago reads the same too: a pass looks
    again every PROGRESS_CHECK while the rollout is under way, which is when it is judged."""
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return {}
    status = pod.get("status") or {}
    out: dict[str, Any] = {}
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            out["unschedulable"] = cond.get("message")
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            if container.get("ready"):
                continue
            state = container.get("state") or {}
            waiting = state.get("waiting") or {}
            reason = waiting.get("reason")
            looping = reason == "CrashLoopBackOff" or int(container.get("restartCount") or 0) >= 2
            said: dict[str, Any] = {}
            if reason and reason not in _STARTING and reason != "CrashLoopBackOff":
                said["reason"] = reason
                if reason not in _MESSAGE_UNREAD:
                    said["message"] = waiting.get("message")
            if looping:
                # Waiting in back-off or running again between two exits: one crash loop.
                said["ended"] = state.get("terminated") or (container.get("lastState") or {}).get(
                    "terminated"
                )
            if said:
                out[f"{key}/{container.get('name')}"] = said
    return out


def _as_read(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as a pass reads it: without its resource version, and of its status only
    what the status or a decision depends on (a Deployment's counts and conditions;
    nothing of the other kinds', a budget's counts for one)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = meta
    status = obj.get("status") or {}
    if obj.get("kind") == "Deployment":
        out["status"] = _deployment_status(status)
    return out


def worth_a_pass(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a change from ``old`` to ``new`` (as cached) can change what a pass does or
    reports: a Deployment status update that moves none of the fields read wakes nothing,
    nor does a disruption budget's count of healthy pods, nor a pod's change that moves
    nothing its cause is read from (a pass reads pods only for why a daemon does not run)."""
    if new.get("kind") in OBSERVED:
        return _pod_causes_read(old) != _pod_causes_read(new)
    return old is None or _as_read(old) != _as_read(new)


def worth_a_pass_gone(obj: Mapping[str, Any]) -> bool:
    """Whether the deletion of ``obj`` can change what a pass does or reports: a child's
    always; a pod's only when it said why its daemon does not run."""
    if obj.get("kind") in OBSERVED:
        return bool(_pod_causes_read(obj))
    return True


def slim(obj: dict[str, Any]) -> None:
    """Keep of a cached object only what a pass reads (as controller-runtime's cache
    transforms do): the memory held grows with every Builder.

    - ``managedFields``: only the operator's own apply entry, the one drift and
      ``admitted`` read (``drift.owned_fields``), its fieldsV1 kept as JSON text; the
      controllers' entries (a Deployment's status) are most of a cached object's size.
    - ``status``: of a Deployment the fields ``daemon_state``, ``holds`` and ``idle``
      read; of a pod those ``pods`` reads; of the other kinds nothing (no pass reads a
      Service's, a claim's or a budget's status).
    - a pod keeps of its metadata what indexes it and what ``pods`` reads, and no spec:
      it is never read, and may hold what is none of the operator's business
      (environment values)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if obj.get("kind") in OBSERVED:
        obj.pop("spec", None)
        obj["metadata"] = {k: meta[k] for k in _POD_METADATA if k in meta}
        obj["status"] = _pod_status(status)
        return
    entries = [
        {**e, "fieldsV1": _compact(e.get("fieldsV1"))}
        for e in meta.get("managedFields") or []
        if e.get("manager") == FIELD_MANAGER
        and e.get("operation") == "Apply"
        and not e.get("subresource")
    ]
    obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    if entries:
        obj["metadata"]["managedFields"] = entries
    if obj.get("kind") == "Deployment":
        obj["status"] = _deployment_status(status)
    else:
        obj.pop("status", None)


def _compact(fields: Any) -> Any:
    if isinstance(fields, Mapping):
        return json.dumps(fields, separators=(",", ":"))
    return fields
