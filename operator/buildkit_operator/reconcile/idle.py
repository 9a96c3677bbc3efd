"""Scale to zero: which daemons sleep (zero pods, cache claim kept) and which wake. Pure.

A daemon sleeps when ``idleTimeout`` is set and its activity says it has not built for
that long and is not building now; an activity that cannot be judged keeps it running.
Sleeping is recorded on its Deployment (``replicas: 0`` and the annotation
``buildkit.dev/idle-since``), so the operator keeps no state of its own. A wake request (the
annotation ``buildkit.dev/wake`` on the Builder, set by ``buildkit-operator connect`` or
``wake``) newer than that starts it again, and counts as activity: a woken daemon gets a
whole idleTimeout before it may sleep again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..api.daemons import Activity
from ..api.names import ANNOTATION_IDLE_SINCE, ANNOTATION_WAKE

__all__ = [
    "ANNOTATION_IDLE_SINCE",
    "ANNOTATION_WAKE",
    "decide",
    "format_time",
    "parse_time",
    "wake_requested",
]
_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, _FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def wake_requested(builder: Mapping[str, Any]) -> datetime | None:
    """When a wake was last asked for: the Builder's ``buildkit.dev/wake`` annotation."""
    annotations = (builder.get("metadata") or {}).get("annotations") or {}
    return parse_time(annotations.get(ANNOTATION_WAKE))


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_FORMAT)


def idle_since(deployment: Mapping[str, Any] | None) -> datetime | None:
    """When the daemon was put to sleep, if it sleeps."""
    if not deployment:
        return None
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return parse_time(annotations.get(ANNOTATION_IDLE_SINCE))


def sleeping(deployment: Mapping[str, Any] | None, wake_requested: datetime | None) -> bool:
    """Asleep, and no wake asked for since."""
    slept = idle_since(deployment)
    return slept is not None and (wake_requested is None or wake_requested < slept)


def started(deployment: Mapping[str, Any] | None) -> datetime | None:
    """When the daemon's current pods were last (re)started: the Deployment's Available
    condition turning true, or its creation."""
    if not deployment:
        return None
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Available" and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return parse_time((deployment.get("metadata") or {}).get("creationTimestamp"))


def decide(
    *,
    timeout: timedelta | None,
    deployment: Mapping[str, Any] | None,
    activity: Activity | None,
    wake_requested: datetime | None,
    now: datetime,
) -> tuple[datetime | None, float | None]:
    """(since when the daemon sleeps, or None to run it; seconds until it should be looked
    at again, or None)."""
    if timeout is None or deployment is None:
        return None, None
    if sleeping(deployment, wake_requested):
        return idle_since(deployment), None
    if activity is None or not activity.known or activity.building:
        return None, timeout.total_seconds()  # cannot judge, or busy: look again later
    moments = [activity.last_build, wake_requested, started(deployment)]
    last = max((m for m in moments if m is not None), default=None)
    if last is None:
        return None, timeout.total_seconds()
    left = (last + timeout - now).total_seconds()
    if left <= 0:
        return now, None
    return None, left
