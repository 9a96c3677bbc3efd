"""Status of a Builder: phase, conditions and the fields a client needs. Pure.

Conditions keep their lastTransitionTime while their status holds, so a status computed
twice from the same world is equal and the reconciler writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..api import (
    Builder,
    BuilderStatus,
    Condition,
    DaemonStatus,
    Phase,
    PoolStatus,
    WaitingDaemon,
)
from ..api.daemons import daemon_address
from ..api.names import ChildNames
from . import admitted
from .daemon_state import DaemonState
from .types import WORKLOAD_KIND, Plan

# Phases that stay as they are until a person acts (kstatus: Failed).
_STALLED_PHASES = ("Degraded", "Drifted", "Missing", "Invalid")


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    previous: Sequence[Mapping[str, Any]],
    type_: str,
    true: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> Condition:
    status = "True" if true else "False"
    since = _timestamp(now)
    for old in previous:
        if old.get("type") == type_ and old.get("status") == status:
            since = old.get("lastTransitionTime") or since
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def compute_status(
    builder: Builder,
    plan: Plan,
    daemons: Sequence[DaemonState],
    *,
    certificate_not_after: datetime | None,
    previous: Mapping[str, Any],
    now: datetime,
    errors: Sequence[str] = (),
    invalid: Sequence[str] = (),
    unsafe: Sequence[str] = (),
    applied_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status subresource as it should read.

    ``daemons`` describe the workloads as they are after this pass's writes, so a daemon
    whose template was just changed counts as rolling out, not as ready. ``errors`` are
    the API server's refusals of this pass; ``invalid`` the problems of a spec the operator
    cannot act on (what runs is then kept from ``applied_spec``); ``unsafe`` the daemons
    scaled to zero because the API server did not keep their user namespace (``userns``).
    """
    spec, names = builder.spec, ChildNames(builder.name)
    ready = sum(d.ready or d.idle for d in daemons)
    desired = len(daemons)
    problems = [f"{d.name}: {d.problem}" for d in daemons if d.problem and d.problem != "absent"]
    rolling = [d.name for d in daemons if d.rolling]
    # A sleeping daemon's Deployment is patched to zero replicas (or to a new template it
    # starts with on waking): no pod is replaced, so nothing is rolling out.
    asleep = {d.name for d in daemons if d.idle}
    workload_changes = [a for a in plan.actions if a.kind == WORKLOAD_KIND and a.name not in asleep]
    progressing = (
        bool(rolling or workload_changes or plan.waiting or plan.held) and not plan.missing
    )
    holds = [f"{h.daemon} ({h.what}): {h.why}" for h in plan.held]

    phase: Phase
    if invalid:
        phase, reason = "Invalid", "InvalidSpec"
        message = "the spec is invalid, so the daemons keep running as last applied: " + "; ".join(
            invalid
        )
    elif unsafe:
        phase, reason = "Degraded", "UserNamespaceNotKept"
        message = _listing(list(unsafe), 2)
    elif plan.missing:
        phase, reason = "Missing", "WorkloadMissing"
        message = (
            f"noCreate is set and {_listing(plan.missing)} does not exist in namespace "
            f"{builder.namespace}: create it, or set noCreate to false"
        )
    elif plan.drifted:
        phase, reason = "Drifted", "NoRecreate" if spec.no_recreate else "CannotChangeInPlace"
        what = (
            "noRecreate is set and the live objects differ from the spec"
            if spec.no_recreate
            else "the adopted workload differs from the spec in ways it cannot change in place"
        )
        todo = (
            "set noRecreate to false to apply the spec"
            if spec.no_recreate
            else "recreate it from the spec, or set noCreate to false"
        )
        message = f"{what} ({_listing(plan.drifted, 3)}): {todo}"
    elif errors:
        phase, reason = "Degraded", "ApiError"
        message = "the API server refused a change: " + _listing(list(errors), 2)
    elif plan.conflicts:
        phase, reason = "Degraded", "Conflict"
        message = _listing(list(plan.conflicts), 2)
    elif ready >= desired and not progressing:
        phase, reason = "Ready", "DaemonsReady"
        message = f"{ready}/{desired} daemons ready at {names.endpoint(builder.namespace)}"
        if any(d.idle for d in daemons):
            message += f" ({sum(d.idle for d in daemons)} idle, woken by connect)"
    elif problems:
        # The reason of the first daemon a pod's cause explains (CrashLoopBackOff,
        # Unschedulable...), so a person sees what kind of fix is wanted at a glance.
        causes = [d.cause.reason for d in daemons if d.cause is not None]
        phase, reason = "Degraded", causes[0] if causes else "RolloutFailed"
        message = f"{ready}/{desired} daemons ready; {_listing(problems, 2)}"
    elif progressing and not (rolling or workload_changes or plan.waiting):
        phase, reason = "Pending", "WaitingForIdle"
        message = f"{ready}/{desired} daemons run the current spec; {_listing(holds, 3)}"
    elif progressing:
        phase, reason = "Pending", "RollingOut"
        waiting = rolling or [a.name for a in workload_changes] or list(plan.waiting)
        message = f"{ready}/{desired} daemons ready; rolling out {_listing(waiting)}"
    elif ready > 0:
        phase, reason = "Degraded", "DaemonsNotReady"
        not_ready = [d.name for d in daemons if not d.ready]
        message = f"{ready}/{desired} daemons ready; waiting for {_listing(not_ready)}"
    else:
        phase, reason = "Pending", "DaemonsStarting"
        message = f"0/{desired} daemons ready; waiting for the pods to start"

    old_conditions = previous.get("conditions") or []
    generation = builder.generation
    held = [*plan.drifted, *plan.kept]
    if plan.drifted:
        drift_reason = "NoRecreate" if spec.no_recreate else "CannotChangeInPlace"
    else:
        drift_reason = "CacheClaimKept" if plan.kept else "InSync"
    if drift_reason == "InSync" and plan.rewritten:
        drift_reason = admitted.REASON
    if progressing and holds and not any(h.why.startswith("waits for") for h in plan.held):
        progress_reason = "WaitingForIdle"
        progress_message = (
            f"{ready}/{desired} daemons run the current spec; held while building "
            f"(at most drain.maxWaitSeconds={spec.drain.max_wait_seconds}s): " + _listing(holds, 3)
        )
    elif progressing:
        progress_reason = (
            "Recreating"
            if any(a.verb == "recreate" for a in workload_changes) or plan.waiting
            else "RollingOut"
        )
        progress_message = (
            f"{ready}/{desired} daemons run the current spec; "
            + _listing(rolling or [a.name for a in workload_changes] or list(plan.waiting))
            + " in progress"
            + (f"; {_listing(holds, 3)}" if holds else "")
        )
    elif problems:
        # Nothing is under way: what is wrong waits on a person (see Degraded).
        progress_reason = "NotProgressing"
        progress_message = f"no change is under way; {len(problems)} daemon(s) cannot run"
    else:
        progress_reason, progress_message = "Complete", "every daemon runs the current spec"

    def condition(type_: str, true: bool, why: str, what: str) -> Condition:
        return _condition(old_conditions, type_, true, why, what, now, generation)

    progress = (progressing, progress_reason, progress_message)
    stalled = phase in _STALLED_PHASES
    conditions = [
        condition("Ready", phase == "Ready", reason, message),
        condition("Progressing", *progress),
        condition(
            "Drifted",
            bool(held),
            drift_reason,
            "; ".join(held[:10])
            if held
            else admitted.describe(plan.rewritten)
            if plan.rewritten
            else "live objects match the spec",
        ),
        condition(
            "Degraded",
            phase == "Degraded",
            reason if phase == "Degraded" else "AsExpected",
            message if phase == "Degraded" else "no daemon is failing",
        ),
        # The two "abnormal-true" conditions kstatus (Flux, kpt, cli-utils) reads first:
        # in progress while reconciling (the same as Progressing), failed while stalled on
        # something that needs a person.
        condition("Reconciling", *progress),
        condition(
            "Stalled",
            stalled,
            reason if stalled else "AsExpected",
            message if stalled else "nothing needs a person",
        ),
    ]
    every = [d.slot for d in daemons if d.slot is not None]
    status = BuilderStatus(
        phase=phase,
        message=message,
        observed_generation=generation,
        ready=f"{ready}/{desired}",
        replicas=desired,
        ready_replicas=ready,
        endpoint=names.endpoint(builder.namespace),
        client_secret_name=names.client_secret
        if spec.tls.mode == "auto" and spec.tls.shared_client_certificate
        else None,
        certificate_not_after=_timestamp(certificate_not_after) if certificate_not_after else None,
        drifted_fields=held,
        pools=_pools(builder, daemons),
        daemons=[
            DaemonStatus(
                name=d.name,
                address=daemon_address(builder, d.slot, every),
                platform=d.slot.platform,
                ready=d.ready,
                idle=d.idle,
                reason=d.cause.reason if d.cause is not None else None,
                message=d.cause.message if d.cause is not None else None,
            )
            for d in daemons
            if d.slot is not None
        ],
        waiting_for_idle=_waiting_for_idle(plan, previous, now),
        conditions=conditions,
        applied_spec=dict(applied_spec) if applied_spec is not None else None,
    )
    return status.model_dump(by_alias=True, exclude_none=True)


def _pools(builder: Builder, daemons: Sequence[DaemonState]) -> list[PoolStatus]:
    names = ChildNames(builder.name)
    out = []
    for pool in builder.spec.pools:
        mine = [d for d in daemons if d.slot is not None and d.slot.pool == pool]
        out.append(
            PoolStatus(
                platform=pool.platform,
                replicas=pool.replicas,
                ready_replicas=sum(d.ready for d in mine),
                endpoint=names.pool_endpoint(pool.platform, builder.namespace),
            )
        )
    return out


def _waiting_for_idle(
    plan: Plan, previous: Mapping[str, Any], now: datetime
) -> list[WaitingDaemon]:
    """The held changes, each with when it began to wait (kept from the last status)."""
    since = {
        entry.get("daemon"): entry.get("since") for entry in previous.get("waitingForIdle") or []
    }
    return [
        WaitingDaemon(
            daemon=h.daemon,
            since=since.get(h.daemon) or _timestamp(now),
            reason=f"{h.what} held: {h.why}",
        )
        for h in plan.held
    ]


def invalid_status(
    problems: Sequence[str], *, generation: int | None, previous: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Status for a spec the operator cannot act on when nothing was ever applied. What
    runs keeps running, so the fields describing it are kept as they were."""
    message = "the spec is invalid, nothing was changed: " + "; ".join(problems)
    old_conditions = previous.get("conditions") or []
    kept = {k: v for k, v in previous.items() if k not in ("phase", "message", "conditions")}
    conditions = [
        _condition(old_conditions, "Ready", False, "InvalidSpec", message, now, generation),
        *[
            Condition.model_validate(c)
            for c in old_conditions
            if c.get("type") in ("Progressing", "Drifted", "Degraded", "Reconciling")
        ],
        _condition(old_conditions, "Stalled", True, "InvalidSpec", message, now, generation),
    ]
    status = {
        **kept,
        "phase": "Invalid",
        "message": message,
        "observedGeneration": generation,
        "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
    }
    return {k: v for k, v in status.items() if v is not None}


def failed_status(
    problem: str, *, generation: int | None, previous: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Status for a pass the API server cut short (a timeout, a reset connection, a refused
    read): nothing can be said of the daemons, so their fields are kept as they were, but
    the Builder no longer claims to be Ready."""
    message = f"the last pass failed, will retry: {problem}"
    old_conditions = previous.get("conditions") or []
    kept = {k: v for k, v in previous.items() if k not in ("phase", "message", "conditions")}

    def condition(type_: str, true: bool) -> Condition:
        return _condition(old_conditions, type_, true, "ApiError", message, now, generation)

    conditions = [
        condition("Ready", False),
        *[
            Condition.model_validate(c)
            for c in old_conditions
            if c.get("type") in ("Progressing", "Drifted", "Reconciling")
        ],
        condition("Degraded", True),
        condition("Stalled", True),
    ]
    status = {
        **kept,
        "phase": "Degraded",
        "message": message,
        "observedGeneration": generation,
        "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
    }
    return {k: v for k, v in status.items() if v is not None}
