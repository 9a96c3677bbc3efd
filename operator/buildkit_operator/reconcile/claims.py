"""A cache claim changes in place only as far as Kubernetes lets it. Pure.

A claim's spec is immutable but for its size, which may only grow; and the operator never
deletes a cache. So what the spec asks for that a claim cannot take is kept as it is and
reported with what a person can do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import quantity_bytes

_CLAIM_FIXED = ("storageClassName", "accessModes", "volumeMode")


def claim_in_place(
    want: Mapping[str, Any], have: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The claim as it can be applied (the live class, modes and a size never smaller), and
    what of the spec it cannot take."""
    want_spec = dict(want.get("spec") or {})
    have_spec = have.get("spec") or {}
    kept: list[str] = []
    for key in _CLAIM_FIXED:
        if key in want_spec and key in have_spec and want_spec[key] != have_spec[key]:
            kept.append(f"spec.{key} is {have_spec[key]} (spec: {want_spec[key]})")
            want_spec[key] = have_spec[key]
    try:
        wanted = want_spec["resources"]["requests"]["storage"]
        current = have_spec["resources"]["requests"]["storage"]
        if quantity_bytes(str(wanted)) < quantity_bytes(str(current)):
            kept.append(f"size is {current} (spec: {wanted})")
            want_spec["resources"] = {"requests": {"storage": current}}
    except (KeyError, TypeError, ValueError):
        pass
    return {**want, "spec": want_spec}, kept


def claim_notice(name: str, kept: list[str]) -> str:
    return (
        f"PersistentVolumeClaim {name}: {'; '.join(kept)}; a claim cannot change this in "
        f"place, so the cache is kept as it is: delete the claim to have it made anew "
        f"(its cache is lost)"
    )
