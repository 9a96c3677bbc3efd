"""One reconcile of one Builder: observe → decide → apply → report.

Level-based and idempotent: it reads the Builder and its children afresh every time, so
it does not matter what woke it (a Builder change, a child event, a timer, a restart).
When nothing differs it writes nothing. It returns how soon it wants to run again.

A refusal by the API server (a quota, a validating webhook, an immutable field) stops only
the change it refused: the rest of the pass goes on, and the refusal becomes a condition
and a Warning Event naming the object and the server's message.

Each step has a module of its own: ``observe`` (what is read besides the children),
``scaling``/``autoscale`` (the daemon count), ``plan``/``holds``/``idle`` (decide, pure),
``apply``, ``status``/``report``, ``requeue``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..api import Builder, InvalidBuilder
from ..api.daemons import Activity
from ..api.daemons import daemons as daemon_slots
from ..api.defaults import DEFAULTS, Defaults, effective_status
from ..api.names import ChildNames, label_value
from ..cluster import Kube
from ..pki import TLSBundle
from ..render import render_builder
from .apply import FAILURES, Applied, api_message, apply_actions
from .daemon_state import daemon_state
from .holds import held_since
from .observe import (
    asleep,
    daemon_activity,
    forget,
    last_applied,
    running_tls_hash,
    tls_material,
)
from .plan import plan
from .pods import daemon_pods
from .report import (
    ca_certificate,
    certificate_not_after,
    record_actions,
    record_daemon_events,
    record_phase_event,
    record_rewrites,
    report_invalid,
    write_status,
)
from .requeue import USER_SECRET_CHECK, requeue_after
from .scaling import scale, with_builds_in_flight
from .status import compute_status, failed_status
from .types import WORKLOAD_KIND, Outcome, Plan
from .userns import describe, scale_to_zero, without_user_namespace

__all__ = ["Outcome", "reconcile"]


@dataclass
class _Observed:
    """What a pass works from: the Builder to render (the spec, or the one last applied while
    the spec cannot be used), what is wrong with the spec, and the TLS material."""

    builder: Builder
    applied_spec: Mapping[str, Any]
    invalid: list[str]
    live: dict[tuple[str, str], dict[str, Any]]
    bundle: TLSBundle | None
    external_hash: str | None
    # The names looked up by name this pass (found or not): each is asked once a pass.
    asked: set[tuple[str, str]]


def reconcile(
    kube: Kube,
    namespace: str,
    name: str,
    now: datetime | None = None,
    *,
    defaults: Defaults = DEFAULTS,
) -> Outcome:
    now = now or datetime.now(UTC)
    obj = kube.get_builder(namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        forget(namespace, name)
        return Outcome(phase=None)  # gone or going: owner references clean up
    try:
        return _pass(kube, obj, defaults, now)
    except FAILURES as err:
        # Whatever cut the pass short, the status must not go on claiming what it did.
        problem = api_message(err) or type(err).__name__
        previous = obj.get("status") or {}
        generation = obj["metadata"].get("generation")
        status = failed_status(problem, generation=generation, previous=previous, now=now)
        written = write_status(kube, obj, status)
        record_phase_event(kube, obj, previous, status, written)
        return Outcome(phase="Degraded", status_written=written, errors=(problem,))


def _pass(kube: Kube, obj: dict[str, Any], defaults: Defaults, now: datetime) -> Outcome:
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    previous = obj.get("status") or {}
    generation = obj["metadata"].get("generation")

    seen = _observe(kube, obj, defaults, now)
    if isinstance(seen, tuple):
        problems, requeue = seen
        return report_invalid(kube, obj, problems, generation, previous, now, requeue_after=requeue)
    # Decide. The autoscaler first: it fixes the daemon count the rest of the pass works to.
    scaling = scale(kube, seen.builder, obj, seen.live, now)
    seen.builder = scaling.builder
    builder, live = seen.builder, seen.live
    sleeping, idle_check = asleep(kube, builder, obj, live, now, answers=scaling.activity)
    desired = render_builder(
        builder,
        seen.bundle,
        external_tls_hash=seen.external_hash,
        asleep=sleeping,
        applied_spec=seen.applied_spec,
    )
    kube.get_missing(
        namespace, [(o["kind"], o["metadata"]["name"]) for o in desired], live, seen.asked
    )
    since = held_since(previous)

    def planned(activity: Mapping[str, Activity] | None = None) -> Plan:
        return plan(
            builder.spec,
            desired,
            live,
            builder=name,
            uid=obj["metadata"].get("uid"),
            label=label_value(name),
            activity=activity,
            held_since=since,
            now=now,
        )

    the_plan = planned()
    if the_plan.disruptive:
        # Only a change that would stop a daemon asks the daemons what they do: a Builder
        # at rest asks nothing.
        the_plan = planned(daemon_activity(kube, builder, live, the_plan.disruptive))

    applied = apply_actions(kube, namespace, name, the_plan.actions)
    # What the API server returned may lack what it was sent (userns): checked at once.
    applied.extend(apply_actions(kube, namespace, name, scale_to_zero(desired, applied.after)))
    record_actions(kube, obj, builder, applied.done, seen.bundle)
    unsafe = without_user_namespace(desired, {**live, **applied.after})
    status = _status(
        kube,
        seen,
        the_plan,
        applied,
        previous,
        sleeping,
        now,
        unsafe=describe(unsafe, kube.server_version()) if unsafe else [],
    )
    if scaling.entries:
        status["autoscale"] = scaling.entries
        with_builds_in_flight(status, scaling.activity)
    written = write_status(kube, obj, status)
    for decision in scaling.scaled:
        kube.event(obj, "Normal", decision.scaled or "Scaled", decision.message)
    record_phase_event(kube, obj, previous, status, written)
    record_rewrites(kube, obj, previous, status, written)
    if written:
        record_daemon_events(kube, obj, previous, status)
    requeue = requeue_after(
        the_plan,
        seen.bundle,
        status,
        now,
        user_secret=builder.spec.tls.mode == "secret",
        idle_check=idle_check,
    )
    if scaling.requeue is not None:
        requeue = min(requeue or scaling.requeue, scaling.requeue)
    return Outcome(
        phase=status["phase"],
        actions=tuple(f"{a.verb} {a.kind} {a.name}" for a in applied.done),
        requeue_after=requeue,
        status_written=written,
        errors=tuple(applied.errors),
    )


def _observe(
    kube: Kube, obj: dict[str, Any], defaults: Defaults, now: datetime
) -> _Observed | tuple[list[str], float | None]:
    """The Builder to render and its TLS material; or, when nothing can be rendered (an
    invalid spec with no applied spec to fall back on), the problems and when to look
    again (a user's Secret may appear any time; a spec changes only with an event)."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    live = kube.list_children(namespace, name)
    asked: set[tuple[str, str]] = set()
    invalid: list[str] = []
    try:
        builder = defaults.apply(Builder.from_manifest(obj))
        applied_spec: Mapping[str, Any] = obj.get("spec") or {}
    except InvalidBuilder as err:
        last = last_applied(obj, live, defaults)
        if last.builder is None or last.spec is None:
            return err.problems + ([last.refused] if last.refused else []), None
        invalid, builder, applied_spec = err.problems, last.builder, last.spec

    bundle, external_hash, tls_problem = tls_material(kube, builder, live, now, asked)
    if tls_problem:
        # The user's Secret is missing or unusable: nothing is made or rolled onto it.
        # What runs keeps running as last applied, with the certificate it has.
        invalid.append(f"spec.tls.secretName: {tls_problem}")
        last = last_applied(obj, live, defaults)
        if last.builder is None or last.spec is None:
            return invalid + ([last.refused] if last.refused else []), USER_SECRET_CHECK
        if last.builder.spec != builder.spec:
            builder, applied_spec = last.builder, last.spec
            bundle, external_hash, tls_problem = tls_material(kube, builder, live, now, asked)
        if tls_problem:
            external_hash = running_tls_hash(live, builder)
    return _Observed(builder, applied_spec, invalid, live, bundle, external_hash, asked)


def _status(
    kube: Kube,
    seen: _Observed,
    the_plan: Plan,
    applied: Applied,
    previous: Mapping[str, Any],
    sleeping: Mapping[str, str],
    now: datetime,
    *,
    unsafe: list[str],
) -> dict[str, Any]:
    """The status this pass found: daemons as the API server returned them after this
    pass's writes (a just-patched Deployment counts as rolling out), and for those not
    ready, what their pods say."""
    builder = seen.builder
    names = ChildNames(builder.name)
    workloads = []
    for daemon in daemon_slots(builder):
        key = (WORKLOAD_KIND, names.daemon(daemon.id))
        workloads.append(
            (daemon, applied.after[key] if key in applied.after else seen.live.get(key))
        )
    states = [daemon_state(names.daemon(d.id), w, d, idle=d.id in sleeping) for d, w in workloads]
    # Pods are looked at only when a daemon is not ready: a Builder at rest reads none.
    pods = (
        daemon_pods(kube.daemon_pods(builder.namespace, builder.name))
        if any(not (s.ready or s.idle) for s in states)
        else {}
    )
    daemons = [
        daemon_state(
            names.daemon(d.id), w, d, idle=d.id in sleeping, pods=pods.get(d.id, ()), now=now
        )
        if not (s.ready or s.idle)
        else s
        for (d, w), s in zip(workloads, states, strict=True)
    ]
    server_applied = ("Secret", names.server_secret) not in applied.failed
    status = compute_status(
        builder,
        the_plan,
        daemons,
        certificate_not_after=certificate_not_after(seen.bundle, server_applied, previous),
        previous=previous,
        now=now,
        errors=applied.errors,
        invalid=seen.invalid,
        unsafe=unsafe,
        applied_spec=seen.applied_spec,
    )
    status.update(effective_status(builder))
    ca_pem = ca_certificate(
        seen.bundle, ("Secret", names.ca_secret) not in applied.failed, previous
    )
    if ca_pem:
        status["caCertificate"] = ca_pem
    return status
