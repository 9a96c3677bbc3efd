"""One reconcile of one Builder: observe → render → plan → apply → status.

Level-based and idempotent: it reads the Builder and its children afresh every time, so
it does not matter what woke it (a Builder change, a child event, a timer, a restart).
When nothing differs it writes nothing. It returns how soon it wants to run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .defaults import DEFAULTS, Defaults, effective_status
from .kube import Kube, secret_data
from .model import Builder, InvalidBuilder
from .names import ChildNames
from .plan import WORKLOAD_KIND, Action, Plan, plan
from .render import render_builder, server_sans
from .render.config import unknown_keys
from .render.secrets import tls_hash
from .status import compute_status, daemon_state, invalid_status
from .tls import RENEW_BEFORE, TLSBundle, ensure_tls, validate_user_secret

log = logging.getLogger(__name__)

# How soon to look again while something is still settling (a deletion in progress).
SETTLE_DELAY = 2.0
# Certificates are checked at least this often, so renewal never waits on an event.
RENEWAL_CHECK = timedelta(hours=1)
# A user's tls.secretName Secret carries none of our labels, so no watch reports its
# rotation (watching every Secret of the cluster would cost far more): look at it this often.
USER_SECRET_CHECK = 30.0


@dataclass(frozen=True)
class Outcome:
    phase: str | None
    actions: tuple[str, ...] = ()
    requeue_after: float | None = None
    status_written: bool = False


_EVENT_REASONS = {
    "create": "Created",
    "patch": "Updated",
    "recreate": "Recreating",
    "delete": "Deleted",
}


def _apply(kube: Kube, builder_obj: dict[str, Any], action: Action) -> None:
    ns = builder_obj["metadata"]["namespace"]
    if action.verb in ("create", "patch"):
        kube.apply(action.obj)
    elif action.verb == "recreate":
        # Deleted now and created by a later pass once it is gone, so old and new never
        # run side by side on one cache volume.
        kube.delete(action.kind, ns, action.name, wait_for_dependents=True)
    elif action.verb == "delete":
        kube.delete(action.kind, ns, action.name, wait_for_dependents=False)
    what = f"{action.kind} {action.name}"
    message = {
        "create": f"created {what}",
        "patch": f"updated {what} ({action.reason})",
        "recreate": f"deleting {what} to create it anew ({action.reason})",
        "delete": f"deleted {what} ({action.reason})",
    }[action.verb]
    kube.event(builder_obj, "Normal", _EVENT_REASONS[action.verb], message)


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
        bundle = ensure_tls(existing, name=builder.name, server_sans=server_sans(builder), now=now)
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
        return Outcome(phase=None)  # gone or going: owner references clean up
    previous = obj.get("status") or {}
    generation = obj["metadata"].get("generation")

    try:
        builder = defaults.apply(Builder.from_manifest(obj))
    except InvalidBuilder as err:
        return _invalid(kube, obj, err.problems, generation, previous, now)

    live = kube.list_children(namespace, name)
    names = ChildNames(name)
    # The expected workloads may exist without our labels (noCreate adoption, or objects
    # made by hand): look them up by name too.
    for index in range(builder.spec.replicas):
        key = (WORKLOAD_KIND, names.daemon(index))
        if key not in live and (found := kube.get(WORKLOAD_KIND, namespace, key[1])):
            live[key] = found

    bundle, external_hash, tls_problem = _tls(kube, builder, live, now)
    if tls_problem:
        return _invalid(
            kube,
            obj,
            [f"spec.tls.secretName: {tls_problem}"],
            generation,
            previous,
            now,
            requeue_after=USER_SECRET_CHECK,
        )

    desired = render_builder(builder, bundle, external_tls_hash=external_hash)
    owned = [key for key, child in live.items() if _owned_by(child, obj)]
    the_plan = plan(builder.spec, desired, live, owned)

    if (
        bundle is not None
        and bundle.issued
        and any(a.kind == "Secret" and a.verb in ("create", "patch") for a in the_plan.actions)
    ):
        kube.event(
            obj,
            "Normal",
            "CertificateIssued",
            f"issued {', '.join(sorted(bundle.issued))} certificate(s): "
            + ("; ".join(bundle.reasons) or "none existed"),
        )

    unknown = unknown_keys(builder.spec.buildkitd.config)
    if unknown and any(a.kind == "ConfigMap" for a in the_plan.actions):
        kube.event(
            obj,
            "Warning",
            "UnknownConfigKeys",
            "buildkitd ignores these keys of spec.buildkitd.config: " + ", ".join(unknown),
        )

    done: list[str] = []
    for action in the_plan.actions:
        _apply(kube, obj, action)
        done.append(f"{action.verb} {action.kind} {action.name}")
        log.info(
            "%s/%s: %s %s %s (%s)",
            namespace,
            name,
            action.verb,
            action.kind,
            action.name,
            action.reason,
        )

    if the_plan.drifted and not _drift_reported(previous, the_plan):
        kube.event(
            obj,
            "Warning",
            "Drifted",
            "noRecreate is set; live objects differ: " + "; ".join(the_plan.drifted[:10]),
        )
    if the_plan.missing and previous.get("phase") != "Missing":
        kube.event(
            obj,
            "Warning",
            "WorkloadMissing",
            "noCreate is set and " + ", ".join(the_plan.missing) + " does not exist",
        )

    daemons = [
        daemon_state(names.daemon(i), live.get((WORKLOAD_KIND, names.daemon(i))))
        for i in range(builder.spec.replicas)
    ]
    status = compute_status(
        builder,
        the_plan,
        daemons,
        certificate_not_after=bundle.server.not_after if bundle else None,
        previous=previous,
        now=now,
    )
    status.update(effective_status(builder))
    written = _write_status(kube, obj, status)
    if written and previous.get("phase") != status["phase"]:
        kube.event(
            obj,
            "Normal" if status["phase"] in ("Ready", "Pending") else "Warning",
            status["phase"],
            status["message"],
        )
    return Outcome(
        phase=status["phase"],
        actions=tuple(done),
        requeue_after=_requeue(
            the_plan, bundle, now, user_secret=builder.spec.tls.mode == "secret"
        ),
        status_written=written,
    )


def _owned_by(child: dict[str, Any], builder_obj: dict[str, Any]) -> bool:
    uid = builder_obj["metadata"].get("uid")
    refs = child.get("metadata", {}).get("ownerReferences") or []
    if any(ref.get("uid") == uid for ref in refs):
        return True
    # Retained cache claims carry our labels but no owner reference.
    return child.get("kind") == "PersistentVolumeClaim"


def _drift_reported(previous: dict[str, Any], the_plan: Plan) -> bool:
    return list(previous.get("driftedFields") or []) == list(the_plan.drifted)


def _requeue(
    the_plan: Plan, bundle: TLSBundle | None, now: datetime, *, user_secret: bool
) -> float | None:
    if the_plan.actions or the_plan.waiting:
        return SETTLE_DELAY
    if user_secret:
        return USER_SECRET_CHECK
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
