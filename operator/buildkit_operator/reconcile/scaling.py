"""The autoscaler's part of a pass: read what it decides from (the status it wrote, the live
Deployments, the daemons' own activity), decide each autoscaled set (``autoscale.decide``),
and hand the rest of the pass a Builder whose daemon count is the decided one.

Rendering, planning, holds and status then treat an autoscaled Builder as one of that fixed
count: an added daemon is created like any missing one, a removed one is deleted like any
daemon no longer in the spec (held while it builds, its cache claim kept), so autoscaling
adds no path of its own to the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api import Builder
from ..api.daemons import Activity, autoscaled, daemon_id, with_counts
from ..api.names import ChildNames
from ..api.pools import MAX_DAEMONS
from ..api.status import AutoscaleStatus
from ..cluster import Kube
from . import autoscale, idle
from .autoscale import Decision, Seen
from .daemon_state import daemon_state
from .idle import format_time, parse_time
from .observe import daemon_activity
from .types import WORKLOAD_KIND

# Nothing reports that a build started: an autoscaled Builder's daemons are asked at least
# this often (a read of each daemon's build history, no write anywhere).
POLL = 10.0


@dataclass
class Scaling:
    """What the autoscaler decided for a pass: the Builder with the decided counts, what
    the daemons said (by Deployment name), the ``status.autoscale`` entries, the decisions
    that scaled (one Event each) and when to look again."""

    builder: Builder
    activity: dict[str, Activity] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    scaled: list[Decision] = field(default_factory=list)
    requeue: float | None = None


def _remembered(previous: Mapping[str, Any]) -> dict[str | None, Mapping[str, Any]]:
    out: dict[str | None, Mapping[str, Any]] = {}
    for entry in previous.get("autoscale") or []:
        if isinstance(entry, Mapping):
            out[entry.get("platform")] = entry
    return out


def scale(
    kube: Kube,
    builder: Builder,
    obj: Mapping[str, Any],
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime,
) -> Scaling:
    sets = autoscaled(builder)
    if not sets:
        return Scaling(builder)
    names = ChildNames(builder.name)
    previous = _remembered(obj.get("status") or {})
    wake_requested = idle.wake_requested(obj)

    def workload(index: int, pool: Any) -> Mapping[str, Any] | None:
        return live.get((WORKLOAD_KIND, names.daemon(daemon_id(index, pool))))

    counts: dict[str | None, int] = {}
    for pool, _ in sets:
        key = pool.platform if pool else None
        have = 0
        while have < MAX_DAEMONS and workload(have, pool) is not None:
            have += 1
        remembered = previous.get(key, {}).get("replicas")
        counts[key] = autoscale.current_count(
            remembered if isinstance(remembered, int) else None, have
        )

    # One question to every running daemon of every set, at once.
    ask = [
        names.daemon(daemon_id(i, pool))
        for pool, spec in sets
        for i in range(min(counts[pool.platform if pool else None], spec.max_replicas))
        if workload(i, pool) is not None and not idle.sleeping(workload(i, pool), wake_requested)
    ]
    answers = daemon_activity(kube, builder, live, ask) if ask else {}

    result = Scaling(builder, activity=answers)
    soonest = POLL
    for pool, spec in sets:
        key = pool.platform if pool else None
        seen = []
        for i in range(counts[key]):
            name = names.daemon(daemon_id(i, pool))
            dep = workload(i, pool)
            seen.append(
                Seen(
                    ready=daemon_state(name, dep).ready,
                    asleep=idle.sleeping(dep, wake_requested),
                    activity=answers.get(name),
                    started=idle.started(dep),
                )
            )
        before = previous.get(key, {})
        decision = autoscale.decide(
            spec, counts[key], seen, parse_time(before.get("busySince")), now
        )
        counts[key] = decision.replicas
        if decision.again is not None:
            soonest = min(soonest, decision.again)
        last_time: Any = before.get("lastScaleTime")
        last: Any = before.get("lastScale")
        if decision.scaled:
            result.scaled.append(decision)
            last_time, last = format_time(now), decision.message
        entry = AutoscaleStatus(
            platform=key,
            replicas=decision.replicas,
            busy_since=format_time(decision.busy_since) if decision.busy_since else None,
            message=decision.message,
            last_scale_time=last_time if isinstance(last_time, str) else None,
            last_scale=last if isinstance(last, str) else None,
        )
        result.entries.append(entry.model_dump(by_alias=True, exclude_none=True))
    result.builder = with_counts(builder, counts)
    result.requeue = soonest
    return result


def with_builds_in_flight(
    status: dict[str, Any], activity: Mapping[str, Activity]
) -> dict[str, Any]:
    """``status.daemons[].buildsInFlight`` from what the daemons said this pass."""
    for daemon in status.get("daemons") or []:
        answer = activity.get(daemon.get("name"))
        if answer is not None and answer.known:
            daemon["buildsInFlight"] = answer.in_flight
    return status
