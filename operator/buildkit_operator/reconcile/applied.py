"""Whether the spec last applied may stand in for the current one. Pure.

While the current spec cannot be used (an invalid config, a missing tls Secret), the
operator keeps what runs repaired from the spec it last applied. That stored spec was judged
by admission when it was current, but ``status.appliedSpec`` can be written by anyone who
may write a Builder's status (a GitOps or CI role), and status writes are judged by no
policy: so it is used only where it asks for nothing the current spec, which admission did
judge, does not ask for. Where the pod's privilege, image, placement or identity differ, it
is not used, and that is reported.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

# Fields that decide what the daemon pod is and where it runs: the stored spec must say
# exactly what the current one says.
_SAME = (
    "image",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "serviceAccountName",
    "imagePullSecrets",
    "podLabels",
    "podAnnotations",
    "pools",
)
_PROFILE_RANK = {"rootless": 0, "userns": 1, "privileged": 2}
_ENTITLEMENT_FLAG = "allow-insecure-entitlement"


def profile(spec: Mapping[str, Any]) -> str:
    """The isolation a raw spec asks for (``rootless: false`` means privileged)."""
    named = spec.get("securityProfile")
    if isinstance(named, str) and named in _PROFILE_RANK:
        return named
    return "privileged" if spec.get("rootless") is False else "rootless"


def _entitlements(spec: Mapping[str, Any]) -> set[str]:
    """Insecure entitlements a raw spec grants, by flag or by config (unreadable: none)."""
    buildkitd = spec.get("buildkitd") or {}
    found: set[str] = set()
    args = [str(a) for a in buildkitd.get("args") or []]
    for i, arg in enumerate(args):
        flag, _, value = arg.lstrip("-").partition("=")
        if flag == _ENTITLEMENT_FLAG:
            found.add(value or (args[i + 1] if i + 1 < len(args) else ""))
    try:
        config = tomllib.loads(str(buildkitd.get("config") or ""))
    except (tomllib.TOMLDecodeError, RecursionError):
        config = {}
    listed = config.get("insecure-entitlements")
    if isinstance(listed, list):
        found.update(str(e) for e in listed)
    return found


def more_privileged(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The fields where the stored spec asks for more than the current one; [] when it may
    be used."""
    fields = [f"spec.{name}" for name in _SAME if stored.get(name) != current.get(name)]
    if _PROFILE_RANK[profile(stored)] > _PROFILE_RANK[profile(current)]:
        fields.insert(0, "spec.securityProfile")
    if not _entitlements(stored) <= _entitlements(current):
        fields.append("insecure entitlements")
    return fields
