"""Whether each daemon serves builds, and if not, why: read from its Deployment and, when it
is not ready, its pods. Pure.

Kept apart from the Builder's status (status.py), which sums these states into a phase and
conditions: this is the one place that reads a Deployment's and a pod's status fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.daemons import Daemon
from .pods import Cause, daemon_cause


@dataclass(frozen=True)
class DaemonState:
    name: str
    ready: bool
    problem: str | None = None  # e.g. a failed rollout's message
    rolling: bool = False  # its rollout is under way (kstatus: in progress)
    slot: Daemon | None = None
    idle: bool = False  # scaled to zero after idleTimeout
    cause: Cause | None = None  # why it does not run, from its pods (pods.py)


def daemon_state(
    name: str,
    deployment: Mapping[str, Any] | None,
    slot: Daemon | None = None,
    *,
    idle: bool = False,
    pods: Sequence[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> DaemonState:
    """Whether a daemon's Deployment serves builds with its current template, and if not,
    why, as its ``pods`` say (read at ``now``). A Deployment its controller has not caught
    up with yet says nothing of its pods' causes: they are the old template's."""
    if deployment is None:
        return DaemonState(name, False, "absent", slot=slot)
    if idle:
        return DaemonState(name, False, slot=slot, idle=True)
    meta, status = deployment.get("metadata", {}), deployment.get("status") or {}
    current = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    ready = (
        current
        and status.get("readyReplicas", 0) >= 1
        and status.get("updatedReplicas", 0) >= 1
        and not status.get("unavailableReplicas")
    )
    problem = None
    rollout_done = False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            problem = cond.get("message") or "rollout exceeded its progress deadline"
        if cond.get("type") == "Progressing" and cond.get("reason") == "NewReplicaSetAvailable":
            rollout_done = True
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            problem = cond.get("message") or "pod could not be created"
    cause = None
    if not ready and current and now is not None:
        cause = daemon_cause(pods, deployment, now)
        problem = cause.message if cause is not None else problem
    # Not ready while the Deployment controller still rolls it out is progress; not ready
    # after its rollout completed (a pod that crashes, a failing probe), or with a pod that
    # cannot run, is not.
    rolling = not ready and problem is None and not (current and rollout_done)
    return DaemonState(name, bool(ready), problem, rolling, slot, cause=cause)
