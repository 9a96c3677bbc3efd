"""Object metadata shared by every child: name, namespace, labels, owner reference."""

from __future__ import annotations

from typing import Any

from ..api import API_VERSION, KIND, Builder


def owner_reference(builder: Builder) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": builder.name,
        "uid": builder.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    builder: Builder, name: str, labels: dict[str, str], *, owned: bool = True
) -> dict[str, Any]:
    """Metadata of a child; the owner reference needs the Builder's uid, so objects rendered
    offline (``buildkit-operator render``) have none."""
    meta: dict[str, Any] = {"name": name, "namespace": builder.namespace, "labels": labels}
    if owned and builder.uid:
        meta["ownerReferences"] = [owner_reference(builder)]
    return meta
