"""One reconcile of one Builder: observe → render → plan → apply → status.

Level-based and idempotent: it reads the Builder and its children afresh every time, so
it does not matter what woke it (a Builder change, a child event, a timer, a restart).
When nothing differs it writes nothing. It returns how soon it wants to run again.

A refusal by the API server (a quota, a validating webhook, an immutable field) stops only
the change it refused: the rest of the pass goes on, and the refusal becomes a condition
and a Warning Event naming the object and the server's message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from ..api import Builder, InvalidBuilder, duration_seconds
from ..api.daemons import Activity
from ..api.daemons import daemons as daemon_slots
from ..api.defaults import DEFAULTS, Defaults, effective_status
from ..api.names import ANNOTATION_TLS_HASH, ANNOTATION_WAKE, ChildNames, label_value
from ..cluster import Kube, secret_data
from ..pki import RENEW_BEFORE, TLSBundle, ensure_tls, validate_user_secret
from ..render import render_builder, server_sans
from ..render.config import unknown_keys
from ..render.secrets import tls_hash
from . import idle
from .idle import format_time, parse_time
from .observe import daemon_activity
from .plan import WORKLOAD_KIND, Action, Plan, plan
from .status import compute_status, daemon_state, invalid_status

log = logging.getLogger(__name__)

# How soon to look again while something is still settling (a deletion in progress).
SETTLE_DELAY = 2.0
# Certificates are checked at least this often, so renewal never waits on an event.
RENEWAL_CHECK = timedelta(hours=1)
# A user's tls.secretName Secret carries none of our labels, so no watch reports its
# rotation (watching every Secret of the cluster would cost far more): look at it this often.
USER_SECRET_CHECK = 30.0
# Objects that are not ours carry none of our labels either: look again this often, so
# the Builder goes on soon after someone removes a conflicting object.
CONFLICT_CHECK = 30.0
# While a rollout is under way the children's watch events say when it is done; look
# again this often anyway, so a watch that went quiet (a dropped connection) cannot leave
# a Builder Pending.
PROGRESS_CHECK = 15.0
# While a change waits for a building daemon, ask it again this often: nothing reports the
# end of a build.
IDLE_CHECK = 5.0

_VERB_REASONS = {
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
}


# The certificates a pass last found reusable, per Builder, with the inputs they came
# from: parsing and verifying them is the largest cost of a pass that changes nothing.
# ensure_tls depends on the clock only through validity and the renewal window, so the
# same Secrets give the same answer from then until the earliest renewal time.
_REUSED: dict[tuple[str, str], tuple[Any, datetime, datetime, TLSBundle]] = {}


@dataclass(frozen=True)
class Outcome:
    phase: str | None
    actions: tuple[str, ...] = ()
    requeue_after: float | None = None
    status_written: bool = False
    errors: tuple[str, ...] = ()


def _api_message(err: Exception) -> str:
    """The API server's own message for a refused request."""
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    message = None
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    message = message or getattr(err, "summary", lambda: None)() or getattr(err, "reason", "")
    return f"{status or ''} {message}".strip()


def _apply(kube: Kube, namespace: str, action: Action) -> dict[str, Any] | None:
    """Carry out one action; returns the object as the API server now has it, if any."""
    if action.verb in ("create", "patch"):
        return kube.apply(action.obj)
    if action.verb == "roll":
        return dict(kube.merge_patch(action.kind, namespace, action.name, action.obj))
    uid = (action.obj.get("metadata") or {}).get("uid") if action.verb == "delete" else None
    # Deleted now and created by a later pass once it is gone, so old and new never run
    # side by side on one cache volume.
    kube.delete(action.kind, namespace, action.name, uid=uid)
    return None


def _tls(
    kube: Kube, builder: Builder, live: dict[tuple[str, str], dict[str, Any]], now: datetime
) -> tuple[TLSBundle | None, str | None, str | None]:
    """(bundle for auto mode, checksum of a user's Secret, problem with the user's Secret)."""
    tls = builder.spec.tls
    if tls.mode == "auto":
        names = ChildNames(builder.name)
        existing = {
            role: secret_data(live.get(("Secret", secret)))
            for role, secret in (
                ("ca", names.ca_secret),
                ("server", names.server_secret),
                ("client", names.client_secret),
            )
        }
        sans = server_sans(builder)
        memo_key = (
            builder.name,
            tuple(sans),
            tuple((role, tuple(sorted(data.items()))) for role, data in existing.items()),
        )
        slot = (builder.namespace, builder.name)
        reused = _REUSED.get(slot)
        if reused is not None and reused[0] == memo_key and reused[1] <= now < reused[2]:
            return reused[3], None, None
        bundle = ensure_tls(existing, name=builder.name, server_sans=sans, now=now)
        if not bundle.issued:
            renew_at = (
                min(bundle.ca.not_after, bundle.server.not_after, bundle.client.not_after)
                - RENEW_BEFORE
            )
            _REUSED[slot] = (memo_key, now, renew_at, bundle)
        return bundle, None, None
    if tls.mode == "secret":
        assert tls.secret_name
        secret = kube.get("Secret", builder.namespace, tls.secret_name)
        if secret is None:
            return None, None, f"Secret {tls.secret_name} (tls.secretName) does not exist"
        data = secret_data(secret)
        problems = validate_user_secret(data, now=now)
        if problems:
            return None, None, f"Secret {tls.secret_name}: " + "; ".join(problems)
        return None, tls_hash(data), None
    return None, None, None


def _write_status(kube: Kube, obj: dict[str, Any], status: dict[str, Any]) -> bool:
    old = obj.get("status") or {}
    if status == old:
        return False
    # A merge patch keeps keys it does not name: clear the ones no longer set, or the next
    # pass would see them, differ again, and write forever.
    patch = {**{key: None for key in old if key not in status}, **status}
    kube.patch_status(obj["metadata"]["namespace"], obj["metadata"]["name"], patch)
    return True


def _last_applied(obj: Mapping[str, Any], defaults: Defaults) -> Builder | None:
    """The Builder as last applied (``status.appliedSpec``), to keep what runs repaired
    and renewed while the current spec is invalid."""
    spec = (obj.get("status") or {}).get("appliedSpec")
    if not isinstance(spec, Mapping):
        return None
    try:
        return defaults.apply(Builder.from_manifest({**obj, "spec": spec}))
    except InvalidBuilder:
        return None


def _running_tls_hash(
    live: Mapping[tuple[str, str], Mapping[str, Any]], builder: Builder
) -> str | None:
    """The certificate checksum the running daemon was started with, to keep it as it is."""
    slots = daemon_slots(builder)
    first = ChildNames(builder.name).daemon(slots[0].id) if slots else None
    dep = live.get((WORKLOAD_KIND, first)) if first else None
    dep = dep or {}
    template = (dep.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_TLS_HASH)
    return str(value) if value else None


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
        _REUSED.pop((namespace, name), None)
        return Outcome(phase=None)  # gone or going: owner references clean up
    previous = obj.get("status") or {}
    generation = obj["metadata"].get("generation")

    invalid: list[str] = []
    try:
        builder = defaults.apply(Builder.from_manifest(obj))
        applied_spec: Mapping[str, Any] | None = obj.get("spec") or {}
    except InvalidBuilder as err:
        last = _last_applied(obj, defaults)
        if last is None:
            return _invalid(kube, obj, err.problems, generation, previous, now)
        invalid, builder = err.problems, last
        applied_spec = previous.get("appliedSpec")

    names = ChildNames(name)
    live = kube.list_children(namespace, name)
    bundle, external_hash, tls_problem = _tls(kube, builder, live, now)
    if tls_problem:
        # The user's Secret is missing or unusable: nothing is made or rolled onto it.
        # What runs keeps running as last applied, with the certificate it has.
        invalid.append(f"spec.tls.secretName: {tls_problem}")
        last = _last_applied(obj, defaults)
        if last is None:
            return _invalid(
                kube, obj, invalid, generation, previous, now, requeue_after=USER_SECRET_CHECK
            )
        if last.spec != builder.spec:
            builder, applied_spec = last, previous.get("appliedSpec")
            bundle, external_hash, tls_problem = _tls(kube, builder, live, now)
        if tls_problem:
            external_hash = _running_tls_hash(live, builder)

    asleep, idle_requeue = _asleep(kube, builder, obj, live, now)
    desired = render_builder(builder, bundle, external_tls_hash=external_hash, asleep=asleep)
    kube.get_missing(namespace, [(o["kind"], o["metadata"]["name"]) for o in desired], live)
    held_since = _held_since(previous)

    def planned(activity: Mapping[str, Activity] | None = None) -> Plan:
        return plan(
            builder.spec,
            desired,
            live,
            builder=name,
            uid=obj["metadata"].get("uid"),
            label=label_value(name),
            activity=activity,
            held_since=held_since,
            now=now,
        )

    the_plan = planned()
    if the_plan.disruptive:
        # Only a change that would stop a daemon asks the daemons what they do: a Builder
        # at rest asks nothing.
        the_plan = planned(daemon_activity(kube, builder, live, the_plan.disruptive))

    done: list[Action] = []
    errors: list[str] = []
    failed: set[tuple[str, str]] = set()
    after: dict[tuple[str, str], dict[str, Any] | None] = {}

    def attempt(action: Action) -> Exception | None:
        try:
            after[action.key] = _apply(kube, namespace, action)
        except (ApiException, DynamicApiError) as err:
            return err
        return None

    # A new CA is stored before anything it signs: were the operator killed between the
    # two, certificates stored without their CA would have to be issued again. What the
    # daemons mount (and the Services) depends on nothing else of the pass: applied
    # together. Workloads follow, then deletions, one at a time as planned.
    names = ChildNames(name)
    ca_key = ("Secret", names.ca_secret)
    ca = [a for a in the_plan.actions if a.key == ca_key and _independent(a)]
    first = [a for a in the_plan.actions if _independent(a) and a.key != ca_key]
    rest = [a for a in the_plan.actions if not _independent(a)]
    results: list[Exception | None] = [attempt(a) for a in ca]
    blocked: set[tuple[str, str]] = set()
    if any(r is not None for r in results):
        blocked = {("Secret", names.server_secret), ("Secret", names.client_secret)}
    ran = iter(kube.map(attempt, [a for a in first if a.key not in blocked]))
    unsigned = ApiException(reason="not written: the CA Secret that signs it was refused")
    results += [unsigned if a.key in blocked else next(ran) for a in first]
    results += [attempt(a) for a in rest]
    for action, refused in zip([*ca, *first, *rest], results, strict=True):
        if refused is not None:
            problem = f"{action.verb} {action.kind} {action.name}: {_api_message(refused)}"
            errors.append(problem)
            failed.add(action.key)
            log.warning("%s/%s: %s", namespace, name, problem)
            continue
        done.append(action)
        log.info(
            "%s/%s: %s %s %s (%s)",
            namespace, name, action.verb, action.kind, action.name, action.reason,
        )  # fmt: skip

    _record_actions(kube, obj, builder, done, bundle)

    daemons = []
    for daemon in daemon_slots(builder):
        key = (WORKLOAD_KIND, names.daemon(daemon.id))
        state = after[key] if key in after else live.get(key)
        daemons.append(daemon_state(key[1], state, daemon, idle=daemon.id in asleep))
    server_applied = ("Secret", names.server_secret) not in failed
    status = compute_status(
        builder,
        the_plan,
        daemons,
        certificate_not_after=_certificate_not_after(bundle, server_applied, previous),
        previous=previous,
        now=now,
        errors=errors,
        invalid=invalid,
        applied_spec=applied_spec,
    )
    status.update(effective_status(builder))
    written = _write_status(kube, obj, status)
    _record_phase_event(kube, obj, previous, status, written)
    requeue = _requeue(the_plan, bundle, now, user_secret=builder.spec.tls.mode == "secret")
    if idle_requeue is not None:
        requeue = min(requeue or idle_requeue, idle_requeue)
    if any(c["type"] == "Progressing" and c["status"] == "True" for c in status["conditions"]):
        requeue = min(requeue or PROGRESS_CHECK, PROGRESS_CHECK)
    return Outcome(
        phase=status["phase"],
        actions=tuple(f"{a.verb} {a.kind} {a.name}" for a in done),
        requeue_after=requeue,
        status_written=written,
        errors=tuple(errors),
    )


def _asleep(
    kube: Kube,
    builder: Builder,
    obj: Mapping[str, Any],
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime,
) -> tuple[dict[str, str], float | None]:
    """The daemons that sleep (scaled to zero by idleTimeout), and when to look again."""
    timeout = builder.spec.idle_timeout
    if timeout is None:
        return {}, None
    limit = timedelta(seconds=duration_seconds(timeout))
    annotations = obj["metadata"].get("annotations") or {}
    wake_requested = parse_time(annotations.get(ANNOTATION_WAKE))
    names = ChildNames(builder.name)
    asleep: dict[str, str] = {}
    soonest: float | None = None
    slots = {names.daemon(d.id): d for d in daemon_slots(builder)}
    # Only daemons that run are asked (a sleeping one has no pod, and waits for a wake).
    awake = [
        name for name in slots if not idle.sleeping(live.get((WORKLOAD_KIND, name)), wake_requested)
    ]
    answers = daemon_activity(kube, builder, live, awake) if awake else {}
    for name, daemon in slots.items():
        deployment = live.get((WORKLOAD_KIND, name))
        since, again = idle.decide(
            timeout=limit,
            deployment=deployment,
            activity=answers.get(name),
            wake_requested=wake_requested,
            now=now,
        )
        if since is not None:
            asleep[daemon.id] = format_time(since)
        if again is not None:
            soonest = again if soonest is None else min(soonest, again)
    return asleep, None if soonest is None else max(1.0, soonest)


def _held_since(previous: Mapping[str, Any]) -> dict[str, datetime]:
    """When each change still held at the last pass began to wait (status.waitingForIdle)."""
    since: dict[str, datetime] = {}
    for entry in previous.get("waitingForIdle") or []:
        try:
            when = datetime.strptime(entry["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except (KeyError, TypeError, ValueError):
            continue
        since[str(entry.get("daemon"))] = when
    return since


def _independent(action: Action) -> bool:
    return action.verb in ("create", "patch") and action.kind != WORKLOAD_KIND


def _certificate_not_after(
    bundle: TLSBundle | None, applied: bool, previous: Mapping[str, Any]
) -> datetime | None:
    if bundle is None:
        return None
    if applied:
        return bundle.server.not_after
    text = previous.get("certificateNotAfter")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if text else None


def _record_actions(
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
    unknown = unknown_keys(builder.spec.buildkitd.config)
    if unknown and any(a.kind == "ConfigMap" for a in done):
        parts.append("buildkitd ignores these keys of spec.buildkitd.config: " + ", ".join(unknown))
        kube.event(obj, "Warning", "UnknownConfigKeys", parts[-1])
    kube.event(obj, "Normal", _VERB_REASONS[first], "; ".join(parts))


# Phases worth an Event of their own: the problems, and recovering from one.
_WARNING_PHASES = {"Degraded", "Drifted", "Missing", "Invalid"}


def _record_phase_event(
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
    if phase in _WARNING_PHASES and status.get("message") != previous.get("message"):
        reason = status["conditions"][0]["reason"]
        event_reason = {"ApiError": "ApplyFailed", "InvalidSpec": "InvalidSpec"}.get(reason, phase)
        kube.event(obj, "Warning", event_reason, str(status["message"]))
    elif phase == "Ready" and before in _WARNING_PHASES:
        kube.event(obj, "Normal", "Ready", str(status["message"]))


def _requeue(
    the_plan: Plan, bundle: TLSBundle | None, now: datetime, *, user_secret: bool
) -> float | None:
    if the_plan.actions or the_plan.waiting:
        return SETTLE_DELAY
    if the_plan.held:
        return IDLE_CHECK
    if user_secret:
        return USER_SECRET_CHECK
    if the_plan.conflicts:
        return CONFLICT_CHECK
    if bundle is not None:
        renew_at = min(bundle.server.not_after, bundle.client.not_after, bundle.ca.not_after)
        until = (renew_at - RENEW_BEFORE - now).total_seconds()
        return max(60.0, min(until, RENEWAL_CHECK.total_seconds()))
    return None


def _invalid(
    kube: Kube,
    obj: dict[str, Any],
    problems: list[str],
    generation: int | None,
    previous: dict[str, Any],
    now: datetime,
    requeue_after: float | None = None,
) -> Outcome:
    status = invalid_status(problems, generation=generation, previous=previous, now=now)
    written = _write_status(kube, obj, status)
    if written and previous.get("message") != status["message"]:
        kube.event(obj, "Warning", "InvalidSpec", status["message"])
    return Outcome(phase="Invalid", requeue_after=requeue_after, status_written=written)
