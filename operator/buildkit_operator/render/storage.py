"""Cache volumes: one PersistentVolumeClaim per daemon, never shared between daemons."""

from __future__ import annotations

from typing import Any

from ..api import Builder
from ..api.daemons import daemons
from ..api.names import ChildNames, child_labels, daemon_selector_labels
from .meta import object_meta


def cache_claim(builder: Builder, index: int | str) -> dict[str, Any]:
    """The cache PVC of daemon ``index``.

    A retained claim carries no owner reference, so the garbage collector leaves it when
    the Builder goes, and a Builder created again under the same name finds its cache.
    """
    cache = builder.spec.cache
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": cache.effective_size}},
    }
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    labels = {**child_labels(builder.name, "cache"), **daemon_selector_labels(builder.name, index)}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(
            builder, ChildNames(builder.name).cache_claim(index), labels, owned=not cache.retain
        ),
        "spec": spec,
    }


def cache_claims(builder: Builder) -> list[dict[str, Any]]:
    if builder.spec.cache.type != "persistent":
        return []
    return [cache_claim(builder, daemon.id) for daemon in daemons(builder)]
