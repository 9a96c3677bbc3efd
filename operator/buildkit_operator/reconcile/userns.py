"""securityProfile userns holds only if the API server keeps ``hostUsers: false``. Pure.

A daemon of the ``userns`` profile runs as root with the capabilities buildkitd needs,
safely only inside the pod's own user namespace. The API server drops
``spec.template.spec.hostUsers`` where the ``UserNamespacesSupport`` feature gate is off,
and a mutating admission (a webhook, a MutatingAdmissionPolicy) may remove it: the pod
would then run those capabilities as root on the node, with no error anywhere. So a userns
daemon's Deployment is created at zero replicas, and what the API server returns for it is
checked: without ``hostUsers: false`` the daemon stays at zero (or is scaled to zero at
once, never held for builds: it must not run another moment as root on the node), and the
Builder is reported ``Degraded`` naming the field and the Kubernetes version. A template
someone edited to ``hostUsers: true`` is ordinary drift, put back by the next apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .types import WORKLOAD_KIND, Action, Key

HOST_USERS = "spec.template.spec.hostUsers"
REPLICAS = "spec.replicas"
SCALE_TO_ZERO: dict[str, Any] = {"spec": {"replicas": 0}}


def _pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def host_users_dropped(want: Mapping[str, Any], have: Mapping[str, Any] | None) -> bool:
    """Whether ``want`` asks for its own user namespace (``hostUsers: false``) and ``have``,
    as the API server keeps it, has no ``hostUsers`` at all."""
    if have is None or _pod_spec(want).get("hostUsers") is not False:
        return False
    return "hostUsers" not in _pod_spec(have)


def zeroed(want: Mapping[str, Any]) -> dict[str, Any]:
    """``want`` with no replicas: what a daemon without its user namespace is kept at."""
    return {**want, "spec": {**(want.get("spec") or {}), "replicas": 0}}


def first_write(want: Mapping[str, Any]) -> Mapping[str, Any]:
    """How a Deployment is created: a userns daemon at zero replicas. Its pods start only
    once the API server has returned the Deployment with ``hostUsers: false`` (the next
    pass, woken by the new Deployment, scales it up), so a cluster that drops the field never
    starts one as root on the node, not even for the moment before the check."""
    if want["kind"] == WORKLOAD_KIND and _pod_spec(want).get("hostUsers") is False:
        return zeroed(want)
    return want


def scale_action(name: str) -> Action:
    return Action(
        "scale",
        WORKLOAD_KIND,
        name,
        SCALE_TO_ZERO,
        f"{HOST_USERS} not kept by the API server: scaled to zero",
        (REPLICAS,),
    )


def has_replicas(obj: Mapping[str, Any]) -> bool:
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    return bool(replicas != 0)


def scale_to_zero(
    desired: Iterable[Mapping[str, Any]], after: Mapping[Key, Mapping[str, Any] | None]
) -> list[Action]:
    """The scale-downs a pass's writes call for: each userns daemon the API server
    returned without ``hostUsers`` and with replicas."""
    actions = []
    for want in desired:
        key = (want["kind"], want["metadata"]["name"])
        if want["kind"] != WORKLOAD_KIND or key not in after:
            continue
        have = after[key]
        if have is not None and host_users_dropped(want, have) and has_replicas(have):
            actions.append(scale_action(key[1]))
    return actions


def without_user_namespace(
    desired: Iterable[Mapping[str, Any]], objects: Mapping[Key, Mapping[str, Any] | None]
) -> list[str]:
    """The userns daemons whose Deployment (as last returned by the API server) lacks
    ``hostUsers``."""
    return [
        want["metadata"]["name"]
        for want in desired
        if want["kind"] == WORKLOAD_KIND
        and host_users_dropped(want, objects.get((WORKLOAD_KIND, want["metadata"]["name"])))
    ]


def describe(names: Iterable[str], version: str) -> list[str]:
    """What the status says of each such daemon."""
    return [
        f"Deployment {name}: {HOST_USERS} is not kept by the API server (Kubernetes "
        f"{version}): securityProfile userns needs the UserNamespacesSupport feature gate and "
        "no admission that removes hostUsers; scaled to zero rather than run as root on "
        "the node"
        for name in names
    ]
