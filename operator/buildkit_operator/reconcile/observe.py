"""Observe: what a pass reads besides the Builder and its children (which come from the
cluster's cache): its certificates, reused while valid; a user's TLS Secret; the spec as last
applied; and what the daemons are doing, asked of the daemons themselves
(``buildkit.activity``) only when a change would stop one or scale-to-zero must judge it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from ..api import Builder, InvalidBuilder, duration_seconds
from ..api.daemons import Activity
from ..api.daemons import daemons as daemon_slots
from ..api.defaults import Defaults
from ..api.identity import GROUP as API_GROUP
from ..api.names import (
    ANNOTATION_APPLIED_SPEC,
    ANNOTATION_TLS_HASH,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PORT,
    ChildNames,
    label_value,
)
from ..buildkit.activity import describe, gather, targets
from ..cluster import Kube, secret_data
from ..pki import RENEW_BEFORE, TLSBundle, ensure_tls, validate_user_secret
from ..render import server_sans
from ..render.secrets import tls_hash
from . import idle
from .applied import more_privileged
from .idle import format_time
from .plan import ownership
from .types import WORKLOAD_KIND

log = logging.getLogger(__name__)

# The certificates a pass last found reusable, per Builder, with the inputs they came
# from: parsing and verifying them is the largest cost of a pass that changes nothing.
# ensure_tls depends on the clock only through validity and the renewal window, so the
# same Secrets give the same answer from then until the earliest renewal time.
_REUSED: dict[tuple[str, str], tuple[Any, datetime, datetime, TLSBundle]] = {}
# The operator's client material per Builder without tls.sharedClientCertificate: kept in
# memory (issued anew after a restart), never written to a Secret.
_OWN_CLIENT: dict[tuple[str, str], dict[str, bytes]] = {}


def daemon_activity(
    kube: Kube,
    builder: Builder,
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    daemons: Sequence[str],
) -> dict[str, Activity]:
    """Ask the daemons a change would stop whether they are building (at most about
    activity.TIMEOUT); the ones that cannot be asked are left unknown."""
    names = ChildNames(builder.name)
    try:
        addresses = kube.daemon_addresses(builder.namespace, names.service)
    except (ApiException, OSError, urllib3.exceptions.HTTPError) as err:
        log.info("%s/%s: no daemon addresses: %s", builder.namespace, builder.name, err)
        return {}
    mode = builder.spec.tls.mode
    tls = (
        None
        if mode == "disabled"
        else _OWN_CLIENT.get((builder.namespace, builder.name))
        or secret_data(live.get(("Secret", names.client_secret)))
        if mode == "auto"
        else {}
    )
    found, unknown = targets(
        daemons,
        addresses,
        port=PORT,
        tls=tls,
        server_name=f"{names.service}.{builder.namespace}.svc",
    )
    answers = {**unknown, **gather(found)}
    log.info("%s/%s: activity %s", builder.namespace, builder.name, describe(answers))
    return answers


def tls_material(
    kube: Kube,
    builder: Builder,
    live: dict[tuple[str, str], dict[str, Any]],
    now: datetime,
    asked: set[tuple[str, str]] | None = None,
) -> tuple[TLSBundle | None, str | None, str | None]:
    """(bundle for auto mode, checksum of a user's Secret, problem with the user's Secret).
    ``asked``: the names this pass looked up already (``Kube.get_missing``)."""
    tls = builder.spec.tls
    if tls.mode == "auto":
        names = ChildNames(builder.name)
        # Found by name, not by label: a CA Secret whose labels someone removed is still
        # this Builder's (ownership decides, in plan), and must never be issued anew.
        secrets = [names.ca_secret, names.server_secret, names.client_secret]
        kube.get_missing(builder.namespace, [("Secret", s) for s in secrets], live, asked)

        def ours(secret: str) -> Mapping[str, Any] | None:
            obj = live.get(("Secret", secret))
            return obj if obj and _owned(obj, builder) else None

        slot = (builder.namespace, builder.name)
        existing = {
            role: secret_data(ours(secret))
            for role, secret in (
                ("ca", names.ca_secret),
                ("server", names.server_secret),
                ("client", names.client_secret),
            )
        }
        if not tls.shared_client_certificate:
            # No shared Secret: the operator's own client certificate (to ask the daemons
            # whether they build) lives in this process only, reused while valid.
            existing["client"] = _OWN_CLIENT.get(slot, {})
        sans = server_sans(builder)
        memo_key = (
            builder.name,
            tuple(sans),
            tls.revoked_before,
            tuple((role, tuple(sorted(data.items()))) for role, data in existing.items()),
        )
        reused = _REUSED.get(slot)
        if reused is not None and reused[0] == memo_key and reused[1] <= now < reused[2]:
            return reused[3], None, None
        bundle = ensure_tls(
            existing,
            name=builder.name,
            server_sans=sans,
            now=now,
            revoked_before=tls.revoked_before_time,
        )
        _OWN_CLIENT[slot] = bundle.secret_data()["client"]
        if not bundle.issued:
            renew_at = (
                min(
                    bundle.ca.not_after,
                    bundle.client_ca.not_after,
                    bundle.server.not_after,
                    bundle.client.not_after,
                )
                - RENEW_BEFORE
            )
            if bundle.revisit is not None:
                renew_at = min(renew_at, bundle.revisit)
            _REUSED[slot] = (memo_key, now, renew_at, bundle)
        return bundle, None, None
    if tls.mode == "secret":
        assert tls.secret_name
        secret = kube.get("Secret", builder.namespace, tls.secret_name)
        if secret is None:
            return None, None, f"Secret {tls.secret_name} (tls.secretName) does not exist"
        managed = operator_managed(secret)
        if managed and not _own_server_secret(builder, secret):
            # The operator reads it with its own rights: mounting it would hand another
            # Builder's keys (or this one's CA) to a daemon whose image the author chose.
            return (
                None,
                None,
                (
                    f"Secret {tls.secret_name} is managed by buildkit-operator ({managed}); "
                    "tls.secretName must name a Secret of your own"
                ),
            )
        data = secret_data(secret)
        problems = validate_user_secret(data, now=now)
        if problems:
            return None, None, f"Secret {tls.secret_name}: " + "; ".join(problems)
        return None, tls_hash(data), None
    return None, None, None


def _own_server_secret(builder: Builder, secret: Mapping[str, Any]) -> bool:
    """This Builder's own server Secret, still owned by it: naming it is how its owner
    freezes the certificate auto mode issued (the daemons keep serving it, and it is kept
    while they mount it). Its keys are the daemon's own already; the CA's and the client's
    are never taken this way (the CA Secret is another name, and neither holds a serverAuth
    certificate)."""
    meta = secret.get("metadata") or {}
    if meta.get("name") != ChildNames(builder.name).server_secret or not builder.uid:
        return False
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Builder"]
    return bool(refs) and all(r.get("uid") == builder.uid for r in refs)


def operator_managed(obj: Mapping[str, Any]) -> str | None:
    """Why an object is the operator's (a Builder's owner reference or the operator's
    label), or None when it is not."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Builder" and str(ref.get("apiVersion", "")).startswith(
            f"{API_GROUP}/"
        ):
            return f"owned by Builder {ref.get('name')}"
    if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY:
        return f"labelled {LABEL_MANAGED_BY}={MANAGED_BY}"
    return None


@dataclass(frozen=True)
class LastApplied:
    """The spec last applied, as stored on the Builder's ConfigMap: the Builder it gives
    (None when there is none it may use), the spec as written, and why it is not used."""

    builder: Builder | None = None
    spec: Mapping[str, Any] | None = None
    refused: str | None = None


def last_applied(
    obj: Mapping[str, Any],
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    defaults: Defaults,
) -> LastApplied:
    """The Builder as last applied, to keep what runs repaired and renewed while the
    current spec cannot be used.

    It is read from the annotation the operator's apply puts on the Builder's own ConfigMap
    (``ANNOTATION_APPLIED_SPEC``), never from the status: ``status.appliedSpec`` is written
    by whoever may write the status, judged by no policy. Even so it is used only where it
    asks for nothing more than the current spec (``applied.more_privileged``): whoever may
    edit ConfigMaps in the namespace could edit it too. A Builder last applied by a release
    that kept it only in the status has none: nothing stands in for its spec, and what runs
    is left as it is."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    where = ChildNames(name).config_map
    config = live.get(("ConfigMap", where))
    if config is None:
        return LastApplied(refused=_nothing_stored(obj, f"ConfigMap {where} is not there"))
    if ownership(config, builder=name, uid=meta.get("uid"), label=label_value(name)) != "ours":
        return LastApplied(refused=_nothing_stored(obj, f"ConfigMap {where} is not the Builder's"))
    text = ((config.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED_SPEC)
    if text is None:
        return LastApplied(refused=_nothing_stored(obj, f"ConfigMap {where} keeps none"))
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        spec = None
    if not isinstance(spec, Mapping):
        return LastApplied(
            refused=f"the spec last applied ({ANNOTATION_APPLIED_SPEC} on ConfigMap {where}) "
            "does not parse; what runs is left as it is"
        )
    raised = more_privileged(spec, obj.get("spec") or {})
    if raised:
        return LastApplied(
            refused=f"the spec last applied ({ANNOTATION_APPLIED_SPEC} on ConfigMap {where}): "
            "not used, it asks for more than the spec ("
            + ", ".join(raised)
            + "); what runs is left as it is"
        )
    try:
        return LastApplied(defaults.apply(Builder.from_manifest({**obj, "spec": spec})), spec)
    except InvalidBuilder as err:
        return LastApplied(
            refused=f"the spec last applied ({ANNOTATION_APPLIED_SPEC} on ConfigMap {where}) "
            f"is not valid ({err}); what runs is left as it is"
        )


def _nothing_stored(obj: Mapping[str, Any], why: str) -> str | None:
    """Why nothing stands in for an unusable spec, said only where a person could expect
    something to (the status claims a spec was applied: a Builder of an earlier release)."""
    if not (obj.get("status") or {}).get("appliedSpec"):
        return None
    return (
        f"no spec applied by the operator is stored ({why}; status.appliedSpec is never "
        "used to decide what runs); what runs is left as it is"
    )


def running_tls_hash(
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


def asleep(
    kube: Kube,
    builder: Builder,
    obj: Mapping[str, Any],
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime,
    *,
    answers: Mapping[str, Activity] | None = None,
) -> tuple[dict[str, str], float | None]:
    """The daemons that sleep (scaled to zero by idleTimeout), and when to look again.
    ``answers``: what daemons already said this pass (the autoscaler asked); only the
    others are asked."""
    timeout = builder.spec.idle_timeout
    if timeout is None:
        return {}, None
    limit = timedelta(seconds=duration_seconds(timeout))
    wake_requested = idle.wake_requested(obj)
    names = ChildNames(builder.name)
    asleep: dict[str, str] = {}
    soonest: float | None = None
    slots = {names.daemon(d.id): d for d in daemon_slots(builder)}
    # Only daemons that run are asked (a sleeping one has no pod, and waits for a wake).
    awake = [
        name for name in slots if not idle.sleeping(live.get((WORKLOAD_KIND, name)), wake_requested)
    ]
    known = dict(answers or {})
    unasked = [name for name in awake if name not in known]
    if unasked:
        known.update(daemon_activity(kube, builder, live, unasked))
    for name, daemon in slots.items():
        deployment = live.get((WORKLOAD_KIND, name))
        since, again = idle.decide(
            timeout=limit,
            deployment=deployment,
            activity=known.get(name),
            wake_requested=wake_requested,
            now=now,
        )
        if since is not None:
            asleep[daemon.id] = format_time(since)
        if again is not None:
            soonest = again if soonest is None else min(soonest, again)
    return asleep, None if soonest is None else max(1.0, soonest)


def forget(namespace: str, name: str) -> None:
    """Drop what was remembered of a Builder that is gone."""
    _REUSED.pop((namespace, name), None)
    _OWN_CLIENT.pop((namespace, name), None)


def _owned(obj: Mapping[str, Any], builder: Builder) -> bool:
    """Only this Builder's own Secrets are certificate material: anything else of their
    names (someone's copy with our labels, a deleted namesake's) is never signed with or
    reused."""
    return (
        ownership(obj, builder=builder.name, uid=builder.uid, label=label_value(builder.name))
        == "ours"
    )
