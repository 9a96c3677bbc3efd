"""Desired vs live: what to create, patch, recreate or delete, and what has drifted.

Pure: the reconciler hands in the rendered objects and the live ones and gets back a list
of actions. ``noCreate`` and ``noRecreate`` are honoured here and nowhere else.

Drift is found by comparing the live object with the desired one on the fields we set
(a live object may carry more: defaults, other managers' fields), plus the applied-hash
annotation that every rendered object carries, which catches fields removed from the spec.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .model import QUANTITY_PATTERN, BuilderSpec, quantity_bytes
from .names import ANNOTATION_APPLIED_HASH, LABEL_DAEMON

Verb = Literal["create", "patch", "recreate", "delete"]
Key = tuple[str, str]  # (kind, name)

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
WORKLOAD_KIND = "Deployment"

# Changing these in place is refused by the API server or would be wrong for a running
# daemon (the security context decides which user owns the cache), so the object is
# deleted and created again.
_RECREATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": (
        "spec.selector",
        "spec.template.spec.securityContext",
        "spec.template.spec.containers[buildkitd].securityContext",
    ),
    "PersistentVolumeClaim": (
        "spec.storageClassName",
        "spec.accessModes",
        "spec.volumeMode",
    ),
    "Secret": ("type",),
    "Service": (),
    "ConfigMap": (),
}


@dataclass(frozen=True)
class Action:
    verb: Verb
    kind: str
    name: str
    obj: Mapping[str, Any] = field(repr=False)
    reason: str

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    drifted: tuple[str, ...] = ()  # held back by noRecreate: "Deployment x-0: spec.replicas"
    missing: tuple[str, ...] = ()  # held back by noCreate: "Deployment x-0"
    waiting: tuple[str, ...] = ()  # objects still being deleted

    @property
    def converged(self) -> bool:
        return not (self.actions or self.waiting)


def _item_key(item: Any) -> str | None:
    if isinstance(item, Mapping):
        for key in ("name", "key", "uid", "mountPath"):
            if key in item:
                return str(item[key])
    return None


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, str) and isinstance(have, str | int):
        have_text = str(have)
        if _QUANTITY_RE.match(want) and _QUANTITY_RE.match(have_text):
            try:
                return quantity_bytes(want) == quantity_bytes(have_text)
            except ValueError:
                return False
    return False


def diff(want: Any, have: Any, path: str = "") -> list[str]:
    """Paths where ``have`` does not carry what ``want`` says; fields only in ``have`` are
    not drift. Lists of named items are matched by name, other lists must be equal."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in have:
                if value in (None, {}, []):
                    continue
                found.append(sub)
            else:
                found += diff(value, have[key], sub)
        return found
    if isinstance(want, list):
        if not isinstance(have, list):
            return [path]
        keys = [_item_key(item) for item in want]
        if want and all(keys):
            by_key = {_item_key(item): item for item in have}
            found = []
            for k, item in zip(keys, want, strict=True):
                sub = f"{path}[{k}]"
                found += [sub] if k not in by_key else diff(item, by_key[k], sub)
            return found
        if len(want) != len(have):
            return [path]
        found = []
        for index, (a, b) in enumerate(zip(want, have, strict=True)):
            found += diff(a, b, f"{path}[{index}]")
        return found
    return [] if _scalar_equal(want, have) else [path]


def _needs_recreate(kind: str, paths: Iterable[str], want: Mapping[str, Any], have: Any) -> bool:
    prefixes = _RECREATE_PATHS.get(kind, ())
    if any(
        p == pre or p.startswith(pre + ".") or p.startswith(pre + "[")
        for p in paths
        for pre in prefixes
    ):
        return True
    if kind == "PersistentVolumeClaim":
        # A claim can grow in place but never shrink.
        try:
            wanted = quantity_bytes(want["spec"]["resources"]["requests"]["storage"])
            current = quantity_bytes(have["spec"]["resources"]["requests"]["storage"])
        except (KeyError, TypeError, ValueError):
            return False
        return wanted < current
    return False


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What of an object we compare: metadata labels, annotations and owners, and the rest."""
    meta = obj.get("metadata", {})
    out = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind", "status")}
    out["metadata"] = {
        k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta
    }
    return out


def _describe(kind: str, name: str, paths: list[str]) -> list[str]:
    applied = f"metadata.annotations.{ANNOTATION_APPLIED_HASH}"
    shown = [p for p in paths if p != applied] or ["fields removed from the spec"]
    return [f"{kind} {name}: {p}" for p in shown]


def _daemon_index(obj: Mapping[str, Any]) -> str | None:
    labels: Mapping[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels.get(LABEL_DAEMON)


def plan(
    spec: BuilderSpec,
    desired: Iterable[Mapping[str, Any]],
    live: Mapping[Key, Mapping[str, Any]],
    owned: Iterable[Key] = (),
) -> Plan:
    """Decide what to do.

    ``live`` holds every live object that either has a desired name or is labelled as this
    Builder's; ``owned`` names the live objects that are ours (labelled and owned), which
    are deleted when no longer desired (retained cache claims excepted).
    """
    desired = list(desired)
    desired_keys = {(o["kind"], o["metadata"]["name"]) for o in desired}
    workloads = [o for o in desired if o["kind"] == WORKLOAD_KIND]
    missing_workloads = [
        o["metadata"]["name"]
        for o in workloads
        if (WORKLOAD_KIND, o["metadata"]["name"]) not in live
    ]
    # noCreate: create nothing while the workload is absent; once it exists, the objects
    # that serve it (Service, config, certificates, cache) are created as usual.
    hold_creates = spec.no_create and len(missing_workloads) == len(workloads) > 0

    actions: list[Action] = []
    drifted: list[str] = []
    missing: list[str] = []
    waiting: list[str] = []
    recreating_daemons: set[str] = set()

    for want in desired:
        kind, name = want["kind"], want["metadata"]["name"]
        have = live.get((kind, name))
        if have is not None and have.get("metadata", {}).get("deletionTimestamp"):
            waiting.append(f"{kind} {name}")
            continue
        if have is None:
            if kind == WORKLOAD_KIND and spec.no_create:
                missing.append(f"{kind} {name}")
            elif not hold_creates:
                actions.append(Action("create", kind, name, want, "absent"))
            continue
        paths = diff(_comparable(want), _comparable(have))
        if not paths:
            continue
        if spec.no_recreate:
            drifted += _describe(kind, name, paths)
            continue
        if _needs_recreate(kind, paths, want, have):
            actions.append(Action("recreate", kind, name, want, ", ".join(paths)))
            if kind == "PersistentVolumeClaim" and (index := _daemon_index(want)) is not None:
                recreating_daemons.add(index)
        else:
            actions.append(Action("patch", kind, name, want, ", ".join(paths)))

    # A claim in use cannot go until its pod does: recreate the daemon with it.
    if recreating_daemons:
        for want in workloads:
            name = want["metadata"]["name"]
            if _daemon_index(want) in recreating_daemons and (WORKLOAD_KIND, name) in live:
                actions = [a for a in actions if a.key != (WORKLOAD_KIND, name)]
                actions.append(
                    Action("recreate", WORKLOAD_KIND, name, want, "its cache volume is recreated")
                )

    for key in owned:
        if key in desired_keys or key not in live:
            continue
        kind, name = key
        have = live[key]
        if have.get("metadata", {}).get("deletionTimestamp"):
            continue
        if kind == "PersistentVolumeClaim" and spec.cache.retain:
            continue
        if spec.no_recreate:
            drifted.append(f"{kind} {name}: not in the spec")
            continue
        actions.append(Action("delete", kind, name, have, "no longer in the spec"))

    return Plan(tuple(actions), tuple(drifted), tuple(missing), tuple(waiting))
