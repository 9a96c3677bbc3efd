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


def _as_read(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as a pass reads it: without its resource version, and of its status only
    what the status or a decision depends on (a Deployment's counts and conditions, a
    pod's whole status; nothing of the other kinds', a budget's counts for one)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = meta
    status = obj.get("status") or {}
    if obj.get("kind") == "Deployment":
        out["status"] = _deployment_status(status)
    elif obj.get("kind") in OBSERVED:
        out["status"] = _pod_status(status)
    return out


def worth_a_pass(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a change from ``old`` to ``new`` (as cached) can change what a pass does or
    reports: a Deployment status update that moves none of the fields read wakes nothing,
    nor does a disruption budget's count of healthy pods."""
    return old is None or _as_read(old) != _as_read(new)


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
