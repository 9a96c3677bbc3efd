"""Report: the Builder's status and Events. One Event per pass that changed something, one
Warning per new problem; the status is written only when it differs, so a Builder at rest
costs no write."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..api import Builder
from ..cluster import Kube
from ..pki import TLSBundle
from . import admitted
from .pods import CAUSES
from .status import invalid_status
from .types import Action, Outcome

_VERB_REASONS = {
    "scale": "ScaledToZero",
    "create": "Created",
    "recreate": "Recreating",
    "patch": "Updated",
    "roll": "Updated",
    "delete": "Deleted",
}
_PAST = {
    "create": "created",
    "recreate": "deleting to create anew",
    "patch": "updated",
    "roll": "rolled onto a renewed certificate",
    "delete": "deleted",
    "scale": "scaled to zero (no user namespace)",
}


def write_status(kube: Kube, obj: dict[str, Any], status: dict[str, Any]) -> bool:
    old = obj.get("status") or {}
    if status == old:
        return False
    # A merge patch keeps keys it does not name: clear the ones no longer set, or the next
    # pass would see them, differ again, and write forever.
    patch = {**{key: None for key in old if key not in status}, **status}
    kube.patch_status(obj["metadata"]["namespace"], obj["metadata"]["name"], patch)
    return True


def certificate_not_after(
    bundle: TLSBundle | None, applied: bool, previous: Mapping[str, Any]
) -> datetime | None:
    if bundle is None:
        return None
    if applied:
        return bundle.server.not_after
    text = previous.get("certificateNotAfter")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if text else None


def ca_certificate(
    bundle: TLSBundle | None, applied: bool, previous: Mapping[str, Any]
) -> str | None:
    """The CA certificate users verify the daemons with: the one in the live Secret, so
    the previous one while a new CA's Secret could not be written."""
    if bundle is None:
        return None
    if applied:
        return bundle.ca.cert_pem.decode()
    text = previous.get("caCertificate")
    return text if isinstance(text, str) else None


def record_actions(
    kube: Kube,
    obj: dict[str, Any],
    builder: Builder,
    done: list[Action],
    bundle: TLSBundle | None,
) -> None:
    """One Event for everything this pass changed: a converged Builder records nothing,
    and a new one records one."""
    if not done:
        return
    verbs = [a.verb for a in done]
    first = next(v for v in _VERB_REASONS if v in verbs)
    parts = []
    for verb in _VERB_REASONS:
        what = [f"{a.kind} {a.name}" for a in done if a.verb == verb]
        if what:
            parts.append(f"{_PAST[verb]} {', '.join(what)}")
    if bundle is not None and bundle.issued and any(a.kind == "Secret" for a in done):
        parts.append(
            f"issued {', '.join(sorted(bundle.issued))} certificate(s): "
            + ("; ".join(bundle.reasons) or "none existed")
        )
    kube.event(obj, "Normal", _VERB_REASONS[first], "; ".join(parts))


# Phases worth an Event of their own: the problems, and recovering from one.
_WARNING_PHASES = {"Degraded", "Drifted", "Missing", "Invalid"}


def record_phase_event(
    kube: Kube,
    obj: dict[str, Any],
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    written: bool,
) -> None:
    if not written:
        return
    phase, before = status["phase"], previous.get("phase")
    if phase == before and status.get("message") == previous.get("message"):
        return
    reason = status["conditions"][0]["reason"]
    if reason in CAUSES:
        return  # told per daemon, once per new cause (record_daemon_events)
    if phase in _WARNING_PHASES and status.get("message") != previous.get("message"):
        event_reason = {"ApiError": "ApplyFailed", "InvalidSpec": "InvalidSpec"}.get(reason, phase)
        kube.event(obj, "Warning", event_reason, str(status["message"]))
    elif phase == "Ready" and before in _WARNING_PHASES:
        kube.event(obj, "Normal", "Ready", str(status["message"]))


def _drifted(status: Mapping[str, Any]) -> Mapping[str, Any]:
    found = [c for c in status.get("conditions") or () if c.get("type") == "Drifted"]
    return found[0] if found else {}


def record_rewrites(
    kube: Kube,
    obj: dict[str, Any],
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    written: bool,
) -> None:
    """One Event when the fields an admission keeps as it likes first show, or change: the
    status says it from then on, and a Builder at rest records nothing."""
    if not written:
        return
    now, before = _drifted(status), _drifted(previous)
    if now.get("reason") != admitted.REASON:
        return
    if (before.get("reason"), before.get("message")) == (now.get("reason"), now.get("message")):
        return
    kube.event(obj, "Normal", admitted.REASON, str(now.get("message")))


def record_daemon_events(
    kube: Kube, obj: dict[str, Any], previous: Mapping[str, Any], status: Mapping[str, Any]
) -> None:
    """One Warning per daemon whose pods show a cause it did not have at the last status
    written: a crash loop is told once, not on every restart (its message, which may
    change between crashes, does not count)."""
    before = {d.get("name"): d.get("reason") for d in previous.get("daemons") or []}
    for daemon in status.get("daemons") or []:
        reason = daemon.get("reason")
        if reason and before.get(daemon.get("name")) != reason:
            kube.event(obj, "Warning", reason, f"{daemon['name']}: {daemon.get('message', '')}")


def report_invalid(
    kube: Kube,
    obj: dict[str, Any],
    problems: list[str],
    generation: int | None,
    previous: dict[str, Any],
    now: datetime,
    requeue_after: float | None = None,
) -> Outcome:
    status = invalid_status(problems, generation=generation, previous=previous, now=now)
    written = write_status(kube, obj, status)
    if written and previous.get("message") != status["message"]:
        kube.event(obj, "Warning", "InvalidSpec", status["message"])
    return Outcome(phase="Invalid", requeue_after=requeue_after, status_written=written)
