"""Which changes that stop a daemon wait, and for what. Pure; called by ``plan.py``.

buildkitd cancels the builds it runs when it stops, so a change that stops a daemon (a roll
of its pod template, a recreate, a removal) waits while that daemon is building, and while
another daemon of the Builder is still rolling: daemons are stopped one at a time and never
mid-build. Each wait is bounded by ``drain.maxWaitSeconds``, counted from when it began (the
status keeps that). A daemon whose activity is not known counts as idle: its preStop hook
still waits for its builds. A daemon with no ready pod serves nobody and is never held.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..api import BuilderSpec
from ..api.daemons import Activity
from .types import WORKLOAD_KIND, Action, Held


def _settled(deployment: Mapping[str, Any]) -> bool:
    """A workload whose pods all run its current template and are ready."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    want = (deployment.get("spec") or {}).get("replicas", 1)
    return (
        not meta.get("deletionTimestamp")
        and status.get("observedGeneration", 0) >= meta.get("generation", 1)
        and status.get("updatedReplicas", 0) >= want
        and status.get("readyReplicas", 0) >= want
        and not status.get("unavailableReplicas")
    )


def _serving(deployment: Mapping[str, Any] | None) -> bool:
    """A workload with a ready pod: one that clients reach and builds may run on."""
    return bool(((deployment or {}).get("status") or {}).get("readyReplicas"))


def hold_disruptions(
    spec: BuilderSpec,
    actions: list[Action],
    workloads: Mapping[str, Mapping[str, Any]],
    activity: Mapping[str, Activity],
    held_since: Mapping[str, datetime],
    now: datetime | None,
    waiting: list[str],
) -> tuple[list[Action], list[Held]]:
    """Let through at most one change that stops a daemon, and only to an idle daemon
    while every other daemon runs settled; hold the rest. A hold ends after
    drain.maxWaitSeconds (then the change goes ahead and the daemon's preStop hook drains
    it): a daemon that is never idle, or another that never settles, cannot hold the
    Builder's changes for ever."""
    stopping = [a for a in actions if a.stops_daemon]
    if not stopping:
        return actions, []
    max_wait = spec.drain.max_wait_seconds
    stopped = {a.name for a in stopping}
    unsettled = sorted(
        name for name, have in workloads.items() if name not in stopped and not _settled(have)
    )
    if any(w.startswith(f"{WORKLOAD_KIND} ") for w in waiting):
        unsettled.append("a daemon being deleted")
    let_through: Action | None = None
    held: list[Held] = []
    for action in sorted(stopping, key=lambda a: _daemon_order(a.name)):
        since = held_since.get(action.name)
        overdue = max_wait == 0 or (
            since is not None and now is not None and (now - since).total_seconds() >= max_wait
        )
        blockers = [let_through.name] if let_through is not None else unsettled
        state = activity.get(action.name)
        building = state is not None and bool(state.building)
        if not _serving(workloads.get(action.name)) and not building:
            # No ready pod (unschedulable, crashing, starting): stopping it takes nothing
            # from clients and no build with it, so another daemon's roll does not hold it
            # (a hand edit of a Pending daemon's template was otherwise never repaired). A
            # serving daemon still waits for it, one at a time, as for any roll.
            let_through = let_through or action
            continue
        if blockers and not overdue:
            why = f"waits for {', '.join(blockers)} to finish its roll (one daemon at a time)"
        elif state is not None and state.building and not overdue:
            why = f"{state.in_flight} build(s) in flight"
        else:
            let_through = let_through or action
            continue
        held.append(Held(action.name, _what_stops(action), why))
    allowed = {a.name for a in stopping} - {h.daemon for h in held}
    kept = [a for a in actions if not a.stops_daemon or a.name in allowed]
    return kept, held


def _daemon_order(name: str) -> tuple[int, str]:
    index = name.rsplit("-", 1)[-1]
    return (int(index), name) if index.isdigit() else (1 << 30, name)


def _what_stops(action: Action) -> str:
    if action.verb == "recreate":
        return "recreate"
    if action.verb == "delete":
        return "removal"
    if action.verb == "roll":
        return "roll onto a renewed certificate"
    return "roll"


def held_since(previous: Mapping[str, Any]) -> dict[str, datetime]:
    """When each change still held at the last pass began to wait (status.waitingForIdle)."""
    since: dict[str, datetime] = {}
    for entry in previous.get("waitingForIdle") or []:
        try:
            when = datetime.strptime(entry["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except (KeyError, TypeError, ValueError):
            continue
        since[str(entry.get("daemon"))] = when
    return since
