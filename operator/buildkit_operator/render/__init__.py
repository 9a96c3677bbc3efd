"""Rendering: a Builder (and its TLS material) to the objects it should have. Pure."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..model import Builder
from ..names import ANNOTATION_APPLIED_HASH
from ..tls import TLSBundle
from .config import buildkitd_toml, config_hash
from .secrets import server_sans, tls_hash, tls_secrets
from .service import config_map, service
from .storage import cache_claims
from .workload import deployment

__all__ = ["render_builder", "server_sans"]


def render_builder(
    builder: Builder,
    tls: TLSBundle | None = None,
    *,
    external_tls_hash: str | None = None,
) -> list[dict[str, Any]]:
    """Every child of ``builder``, in the order they are best created.

    ``tls`` is required for ``tls.mode: auto``; for ``tls.mode: secret`` the caller may pass
    a checksum of the user's Secret so that replacing it rolls the pods.
    """
    mode = builder.spec.tls.mode
    toml_text = buildkitd_toml(builder)
    objects = [config_map(builder, toml_text)]
    pod_tls_hash: str | None = None
    if mode == "auto":
        if tls is None:
            raise ValueError("tls.mode auto needs TLS material to render")
        objects += tls_secrets(builder, tls)
        pod_tls_hash = tls_hash(tls.secret_data()["server"])
    elif mode == "secret":
        pod_tls_hash = external_tls_hash
    objects += cache_claims(builder)
    objects += [
        deployment(builder, index, config_hash=config_hash(toml_text), tls_hash=pod_tls_hash)
        for index in range(builder.spec.replicas)
    ]
    objects.append(service(builder))
    for obj in objects:
        stamp_applied_hash(obj)
    return objects


def stamp_applied_hash(obj: dict[str, Any]) -> None:
    """Annotate ``obj`` with a hash of itself. ``data`` is left out: ConfigMap and Secret
    keys are fixed, so their values are compared directly, and no hash of key material
    ends up in an annotation."""
    body = {k: v for k, v in obj.items() if k != "data"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED_HASH] = digest
