"""Autoscaling: how many daemons a set (the Builder's, or one pool's) should run. Pure.

Each pass decides afresh from what it sees: the daemon count decided last (kept in
``status.autoscale``; the live Deployments count when the status lost it), what each daemon
is doing (``Activity``, asked of the daemon itself), and since when every daemon has been
building (``busySince`` in the same status entry). Nothing lives in the operator's memory,
so a restart in the middle of a window picks it up where it was.

- **Up**, one daemon at a time up to ``maxReplicas``: when every daemon of the set has been
  ready and building for ``scaleUpAfter``. A daemon that is starting, asleep, or cannot be
  asked breaks the run: an added daemon must be ready before another can be added, and a
  burst shorter than the window is served by the daemons there are.
- **Down**, one at a time down to ``minReplicas`` (at least one daemon: ``minReplicas: 0``
  lets it sleep by ``idleTimeout``): when the highest-numbered daemon has run no build for
  ``scaleDownAfter``, counted from its last build or, if it built nothing, from when it
  started. Removing always the highest number keeps the numbers contiguous, so the
  daemon of a number comes back to its own cache claim (which removal keeps); a daemon that
  builds is never chosen, and its removal still goes through the holds (``holds.py``) and
  its preStop drain should a build start in between.

The two windows are the hysteresis: a flapping load resets ``busySince`` at every lull
and never adds a daemon; an added daemon is fresh, so it is not removed before a whole
``scaleDownAfter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..api.autoscale import AutoscaleSpec
from ..api.daemons import Activity

Scaled = Literal["ScaledUp", "ScaledDown"]
_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Seen:
    """One daemon of the set as the pass found it: ``ready`` (serving the current spec),
    ``asleep`` (scaled to zero by idleTimeout), its ``activity`` (None: not asked), and
    ``started`` (when its pods last started, for a daemon that remembers no build)."""

    ready: bool
    asleep: bool = False
    activity: Activity | None = None
    started: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """The count the set should run, since when all of it builds (to remember), a message
    for the status, whether it scaled, and in how many seconds a window ends (the pass
    should look again then)."""

    replicas: int
    busy_since: datetime | None
    message: str
    scaled: Scaled | None = None
    again: float | None = None


def floor(spec: AutoscaleSpec) -> int:
    """The fewest daemons a set keeps: minReplicas, but one at least (it may sleep)."""
    return max(spec.min_replicas, 1)


def current_count(remembered: int | None, live: int) -> int:
    """The count to decide from: the one decided last, else the daemons that exist."""
    return remembered if remembered is not None and remembered >= 0 else live


def _time(when: datetime) -> str:
    return when.strftime(_FORMAT)


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _building(seen: Seen) -> bool:
    return seen.ready and not seen.asleep and seen.activity is not None and seen.activity.building


def _why_not_all_building(daemons: Sequence[Seen]) -> str:
    for index, seen in enumerate(daemons):
        if seen.asleep:
            return f"daemon {index} sleeps"
        if not seen.ready:
            return f"daemon {index} is not ready"
        if seen.activity is None or not seen.activity.known:
            # Not the reason itself (a gRPC code, an address): it may change from poll to
            # poll, and the status would be rewritten each time.
            return f"daemon {index} could not be asked what it builds"
    idle = [str(i) for i, seen in enumerate(daemons) if not _building(seen)]
    return f"daemon{'s' if len(idle) > 1 else ''} {', '.join(idle)} not building"


def decide(
    spec: AutoscaleSpec,
    current: int,
    daemons: Sequence[Seen],
    busy_since: datetime | None,
    now: datetime,
) -> Decision:
    """Decide the set's count from ``current`` (``current_count``), its daemons numbered
    0 to current - 1 (missing ones as not ready), and the remembered ``busy_since``. A count
    outside the bounds (a new Builder, an edit of the bounds) is brought within them at
    once."""
    low, high = floor(spec), spec.max_replicas
    bounds = f"minReplicas {spec.min_replicas}, maxReplicas {high}"
    bounded = min(max(current, low), high)
    if bounded != current:
        added = bounded > current
        return Decision(
            bounded,
            None,
            f"{'added' if added else 'removed'} {abs(bounded - current)} daemon(s) to "
            f"keep within {bounds} (now {bounded})",
            "ScaledUp" if added else "ScaledDown",
        )
    daemons = list(daemons)[:current]
    daemons += [Seen(ready=False)] * (current - len(daemons))

    all_building = current > 0 and all(_building(d) for d in daemons)
    if all_building and current < high:
        since = busy_since or now
        waited = (now - since).total_seconds()
        if waited >= spec.up_seconds:
            return Decision(
                current + 1,
                None,
                f"added daemon {current}: all {current} daemon(s) had builds in flight for "
                f"{_span(waited)} (scaleUpAfter {spec.scale_up_after}); {bounds}",
                "ScaledUp",
            )
        at = since + timedelta(seconds=spec.up_seconds)
        return Decision(
            current,
            since,
            f"all {current} daemon(s) building since {_time(since)}: a daemon is added at "
            f"{_time(at)} if they still are; {bounds}",
            again=max(1.0, (at - now).total_seconds()),
        )
    if all_building:
        state = f"all {current} daemon(s) building, at maxReplicas {high}"
    else:
        state = f"{current} daemon(s), not all building ({_why_not_all_building(daemons)})"

    if current > low:
        top, index = daemons[-1], current - 1
        if top.asleep:
            return Decision(
                index,
                None,
                f"removed daemon {index}: it sleeps (idleTimeout); its cache claim is kept; "
                f"{bounds}",
                "ScaledDown",
            )
        idle = top.activity.idle_for(now, top.started) if top.ready and top.activity else None
        if idle is not None:
            if idle >= spec.down_seconds:
                return Decision(
                    index,
                    None,
                    f"removed daemon {index}: it ran no build for {_span(idle)} "
                    f"(scaleDownAfter {spec.scale_down_after}); its cache claim is kept; "
                    f"{bounds}",
                    "ScaledDown",
                )
            assert top.activity is not None
            idle_since = top.activity.last_build or top.started or now
            at = idle_since + timedelta(seconds=spec.down_seconds)
            return Decision(
                current,
                None,
                f"{state}; daemon {index} idle since {_time(idle_since)}: removed at "
                f"{_time(at)} unless it builds; {bounds}",
                again=max(1.0, (at - now).total_seconds()),
            )
    return Decision(current, None, f"{state}; {bounds}")
