"""Desired vs live: what to create, patch, recreate or delete, and what to only report. Pure.

The reconciler hands in the rendered objects and the live ones (as the API server returned
them) and gets back a list of actions. ``noCreate``, ``noRecreate`` and ownership are
honoured here and nowhere else:

- An object is the Builder's when it carries the Builder's controller owner reference (or,
  for a retained cache claim, which has none, our labels on a claim of the expected name).
  Anything else of a child's name is someone else's: never patched, owned or deleted, only
  reported as a conflict.
- ``noCreate`` adopts a workload it finds: changes the API server makes in place are
  applied; if any is not possible in place, nothing is changed and all of it is reported.
- ``noRecreate`` changes nothing of what runs and reports the differences, except
  certificate renewal (a certificate is not part of the spec, and holding it back would
  let it expire) and the record of the spec last applied on the ConfigMap (it runs
  nothing).
- A cache claim is never deleted or recreated: what cannot change in place (a smaller size,
  another class) is kept and reported with what to do.
- A change that stops a daemon (a roll of its pod template, a recreate, a removal) waits
  while that daemon is building, and while another daemon of the Builder is still rolling:
  daemons are stopped one at a time and never mid-build, each wait bounded by
  ``drain.maxWaitSeconds`` (see ``holds.py``). What a daemon is doing comes in as
  ``activity`` (``api.daemons.Activity``); a daemon that could not be asked counts as idle,
  since its preStop hook still waits for its builds.

Drift follows the API server's own semantics (see ``drift.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from ..api import API_VERSION, KIND, BuilderSpec
from ..api.daemons import Activity
from ..api.names import (
    ANNOTATION_APPLIED_SPEC,
    ANNOTATION_INTENT,
    ANNOTATION_TLS_HASH,
    FIELD_MANAGER,
    LABEL_BUILDER,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from . import admitted, userns
from .claims import claim_in_place, claim_notice
from .drift import (
    Schema,
    default_schema,
    displaced_lists,
    object_differences,
    stale_fields,
)
from .holds import hold_disruptions
from .types import CLAIM_KIND, WORKLOAD_KIND, Action, Key, Plan

# Changing these in place is refused by the API server or would be wrong for a running
# daemon (the security context decides which user owns the cache), so the object is
# deleted and created again.
_RECREATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": (
        "spec.selector",
        "spec.template.spec.securityContext",
        "spec.template.spec.containers[buildkitd].securityContext",
    ),
    "Secret": ("type",),
}
# What the API server refuses to change in place on a workload someone else made.
_IMMUTABLE_PATHS: dict[str, tuple[str, ...]] = {"Deployment": ("spec.selector",)}
_TLS_HASH_PATH = f"spec.template.metadata.annotations.{ANNOTATION_TLS_HASH}"
# The spec last applied, kept on the ConfigMap: a record, not something that runs.
_APPLIED_SPEC_PATH = f"metadata.annotations.{ANNOTATION_APPLIED_SPEC}"
_RECORD_PATHS = {_APPLIED_SPEC_PATH, f"metadata.annotations.{ANNOTATION_INTENT}"}


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in prefixes)


def ownership(
    obj: Mapping[str, Any], *, builder: str, uid: str | None, label: str
) -> Literal["ours", "previous", "foreign"]:
    """Whose ``obj`` is: this Builder's, a deleted namesake Builder's (the garbage collector
    is about to remove it), or someone else's."""
    meta = obj.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if uid and any(ref.get("uid") == uid for ref in refs):
        return "ours"
    if any(
        ref.get("apiVersion") == API_VERSION
        and ref.get("kind") == KIND
        and ref.get("name") == builder
        for ref in refs
    ):
        return "previous"
    labels = meta.get("labels") or {}
    if (
        obj.get("kind") == CLAIM_KIND
        and not any(ref.get("controller") for ref in refs)
        and labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        and labels.get(LABEL_BUILDER) == label
    ):
        return "ours"  # a retained cache claim
    return "foreign"


def _describe(kind: str, name: str, paths: Iterable[str]) -> list[str]:
    return [f"{kind} {name}: {p}" for p in paths]


def plan(
    spec: BuilderSpec,
    desired: Iterable[Mapping[str, Any]],
    live: Mapping[Key, Mapping[str, Any]],
    *,
    builder: str,
    uid: str | None,
    label: str,
    schema: Schema | None = None,
    activity: Mapping[str, Activity] | None = None,
    held_since: Mapping[str, datetime] | None = None,
    now: datetime | None = None,
) -> Plan:
    """Decide what to do.

    ``live`` holds every live object that has a desired name or carries this Builder's
    labels, as read from the API server. ``builder``, ``uid`` and ``label`` identify the
    Builder (its name, uid and label value), to tell its objects from anyone else's.
    ``activity`` says which daemons are building (absent: not known); ``held_since`` when
    each held change began to wait (from the status), ``now`` the time to measure it by.
    """
    schema = schema or default_schema()
    desired = list(desired)
    desired_keys = {(o["kind"], o["metadata"]["name"]) for o in desired}
    workloads = [o for o in desired if o["kind"] == WORKLOAD_KIND]

    actions: list[Action] = []
    drifted: list[str] = []
    missing: list[str] = []
    waiting: list[str] = []
    conflicts: list[str] = []
    kept: list[str] = []
    rewritten: list[str] = []
    blocked: set[Key] = set()  # objects a daemon mounts that are not ours

    def whose(obj: Mapping[str, Any]) -> str:
        return ownership(obj, builder=builder, uid=uid, label=label)

    missing_workloads = [o for o in workloads if (WORKLOAD_KIND, o["metadata"]["name"]) not in live]
    # noCreate: create nothing while no workload exists; once one does, the objects that
    # serve it (Service, config, certificates, cache) are made as usual.
    hold_creates = spec.no_create and len(missing_workloads) == len(workloads) > 0

    for want in desired:
        kind, name = want["kind"], want["metadata"]["name"]
        have = live.get((kind, name))
        if have is None:
            if kind == WORKLOAD_KIND and spec.no_create:
                missing.append(f"{kind} {name}")
            elif not hold_creates:
                first = admitted.stamped(userns.first_write(want))
                actions.append(Action("create", kind, name, first, "absent"))
            continue
        if (have.get("metadata") or {}).get("deletionTimestamp"):
            waiting.append(f"{kind} {name} is being deleted")
            continue
        owner = whose(have)
        if owner == "previous":
            # Its Builder is gone. The garbage collector removes it in time, but may back
            # off for many minutes after an API server restart (seen in the chaos rounds);
            # the operator removes its own leftovers at once, by uid. Never a claim, and
            # nothing where the spec forbids deleting workloads.
            if kind != CLAIM_KIND and not spec.no_create and not spec.no_recreate:
                reason = "left by a deleted Builder of this name"
                actions.append(Action("delete", kind, name, have, reason, uid=_uid(have)))
            waiting.append(f"{kind} {name} of a deleted Builder of this name is being removed")
            continue
        if owner == "foreign":
            if kind == WORKLOAD_KIND and spec.no_create:
                _adopt(spec, want, have, schema, actions, drifted)
                continue
            conflicts.append(
                f"{kind} {name} already exists and is not this Builder's (no owner reference "
                f"to it): rename or delete it, or give the Builder another name"
            )
            blocked.add((kind, name))
            continue

        if kind == CLAIM_KIND:
            want, claim_kept = claim_in_place(want, have)
            if claim_kept:
                kept.append(claim_notice(name, claim_kept))
        dropped = kind == WORKLOAD_KIND and userns.host_users_dropped(want, have)
        if dropped:
            # The API server does not keep hostUsers: false (see ``userns``): the daemon
            # stays at zero, and rewriting the field it drops would only write for ever.
            want = userns.zeroed(want)
            if userns.has_replicas(have):
                actions.append(userns.scale_action(name))
        want = admitted.stamped(want)
        compared = admitted.as_live(want, have)
        paths = object_differences(compared, have, schema)
        paths += stale_fields(compared, have, FIELD_MANAGER)
        if dropped:
            paths = [p for p in paths if p not in (userns.HOST_USERS, userns.REPLICAS)]
        kept_as_admitted = admitted.rewritten(want, have, paths, FIELD_MANAGER)
        rewritten += _describe(kind, name, kept_as_admitted)
        paths = [p for p in paths if p not in kept_as_admitted]
        if not paths:
            continue
        is_tls_secret = kind == "Secret" and _component(want) == "tls"
        if spec.no_recreate and not is_tls_secret:
            if kind == WORKLOAD_KIND and set(paths) == {_TLS_HASH_PATH}:
                actions.append(Action("roll", kind, name, _roll_patch(want), "new certificate"))
                continue
            if set(paths) <= _RECORD_PATHS:
                # Only the operator's records differ (the spec last applied, the digest of
                # what it applied): writing them changes nothing that runs, and a record
                # edited by hand is put back.
                reason = ", ".join(paths)
                actions.append(Action("patch", kind, name, want, reason, tuple(paths)))
                continue
            drifted += _describe(kind, name, paths)
            if kind == WORKLOAD_KIND and _TLS_HASH_PATH in paths:
                actions.append(Action("roll", kind, name, _roll_patch(want), "new certificate"))
            continue
        if _under_any(paths, _RECREATE_PATHS.get(kind, ())):
            actions.append(
                Action("recreate", kind, name, want, ", ".join(paths), tuple(paths), uid=_uid(have))
            )
        else:
            replace = tuple(displaced_lists(want, have, schema))
            reason = ", ".join(paths) + (f" (replacing {', '.join(replace)})" if replace else "")
            actions.append(Action("patch", kind, name, want, reason, tuple(paths), replace))

    # The TLS Secrets are one set: certificates signed by a CA that cannot be stored (its
    # Secret is someone else's) would be issued anew on every pass. Hold the whole set.
    tls_keys = {
        (o["kind"], o["metadata"]["name"])
        for o in desired
        if o["kind"] == "Secret" and _component(o) == "tls"
    }
    if blocked & tls_keys:
        actions = [a for a in actions if a.key not in tls_keys]
        blocked |= tls_keys

    # A daemon never starts on someone else's config, certificate or claim.
    if blocked:
        mounts = {k for k in blocked if k[0] in ("ConfigMap", "Secret", CLAIM_KIND)}
        if mounts:
            actions = [
                a
                for a in actions
                if not (a.kind == WORKLOAD_KIND and a.verb in ("create", "patch", "recreate"))
                or not _mounts(a.obj, mounts)
            ]

    # What a daemon of the current spec mounts, or a running one still does, is never
    # deleted: a Builder moved to tls.mode secret may name the server Secret it had.
    in_use = set().union(
        *(_mounted(o) for o in workloads),
        *(_mounted(o) for (k, _), o in live.items() if k == WORKLOAD_KIND and whose(o) == "ours"),
    )
    for key, have in live.items():
        if key in desired_keys or whose(have) != "ours":
            continue
        kind, name = key
        if (have.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if kind == CLAIM_KIND:
            continue  # a cache is never deleted by the operator
        if key in in_use:
            continue
        if spec.no_recreate:
            drifted.append(f"{kind} {name}: not in the spec")
            continue
        reason = "no longer in the spec"
        actions.append(Action("delete", kind, name, have, reason, uid=_uid(have)))

    disruptive = tuple(a.name for a in actions if a.stops_daemon)
    # The daemons this Builder runs (its own, or adopted under noCreate), to see which are
    # still rolling.
    running = {
        name: have
        for (kind, name), have in live.items()
        if kind == WORKLOAD_KIND
        and (whose(have) == "ours" or (spec.no_create and (kind, name) in desired_keys))
    }
    actions, held = hold_disruptions(
        spec, actions, running, activity or {}, held_since or {}, now, waiting
    )
    return Plan(
        tuple(actions),
        tuple(drifted),
        tuple(missing),
        tuple(waiting),
        tuple(conflicts),
        tuple(kept),
        tuple(held),
        disruptive,
        tuple(rewritten),
    )


def _uid(obj: Mapping[str, Any]) -> str | None:
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def _under_any(paths: Iterable[str], prefixes: Iterable[str]) -> bool:
    prefixes = tuple(prefixes)
    return any(_under(p, prefixes) for p in paths)


def _component(obj: Mapping[str, Any]) -> str | None:
    labels: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_COMPONENT)


def _roll_patch(want: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of only the certificate checksum on the pod template: it rolls the pods
    onto a renewed certificate and touches nothing else of a workload held by noRecreate."""
    annotations = want["spec"]["template"]["metadata"]["annotations"]
    return {
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION_TLS_HASH: annotations[ANNOTATION_TLS_HASH]}}
            }
        }
    }


def _mounted(workload: Mapping[str, Any]) -> set[Key]:
    """The ConfigMaps, Secrets and claims a workload's pods mount."""
    template = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    found: set[Key] = set()
    for volume in template.get("volumes") or []:
        if cm := volume.get("configMap"):
            found.add(("ConfigMap", cm.get("name")))
        if secret := volume.get("secret"):
            found.add(("Secret", secret.get("secretName")))
        if claim := volume.get("persistentVolumeClaim"):
            found.add((CLAIM_KIND, claim.get("claimName")))
    return found


def _mounts(workload: Mapping[str, Any], keys: set[Key]) -> bool:
    return bool(_mounted(workload) & keys)


def _adopt(
    spec: BuilderSpec,
    want: Mapping[str, Any],
    have: Mapping[str, Any],
    schema: Schema,
    actions: list[Action],
    drifted: list[str],
) -> None:
    """noCreate found a workload that is not ours: it stays the user's (no owner reference,
    so deleting the Builder leaves it). What the API server changes in place is applied,
    unless noRecreate is set or some change is impossible in place: then all of it is
    reported and nothing is touched."""
    kind, name = want["kind"], want["metadata"]["name"]
    meta = {k: v for k, v in want["metadata"].items() if k != "ownerReferences"}
    adopted = {**want, "metadata": meta}
    paths = object_differences(adopted, have, schema) + stale_fields(adopted, have, FIELD_MANAGER)
    if not paths:
        return
    if spec.no_recreate or _under_any(paths, _IMMUTABLE_PATHS.get(kind, ())):
        drifted += _describe(kind, name, paths)
        return
    actions.append(
        Action("patch", kind, name, adopted, "adopted: " + ", ".join(paths), tuple(paths))
    )
