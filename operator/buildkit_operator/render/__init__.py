"""Rendering: a Builder (and its TLS material) to the objects it should have. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import Builder
from ..api.daemons import daemons, has_many_daemons
from ..pki import TLSBundle
from .config import buildkitd_toml, config_hash
from .disruption import disruption_budget
from .secrets import server_sans, tls_hash, tls_secrets
from .service import config_map, daemons_service, encode_applied_spec, pool_services, service
from .storage import cache_claims
from .workload import deployment

__all__ = ["encode_applied_spec", "render_builder", "server_sans"]


def render_builder(
    builder: Builder,
    tls: TLSBundle | None = None,
    *,
    external_tls_hash: str | None = None,
    asleep: Mapping[str, str] | None = None,
    applied_spec: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every child of ``builder``, in the order they are best created.

    ``tls`` is required for ``tls.mode: auto``; for ``tls.mode: secret`` the caller may pass
    a checksum of the user's Secret so that replacing it rolls the pods. ``asleep`` maps the
    ids of daemons scaled to zero (idleTimeout) to when they went to sleep.
    ``applied_spec`` is the Builder's spec as written (before defaults) that ``builder``
    came from: the ConfigMap keeps it, where only the operator writes it.
    """
    mode = builder.spec.tls.mode
    toml_text = buildkitd_toml(builder)
    objects = [config_map(builder, toml_text, applied_spec)]
    pod_tls_hash: str | None = None
    if mode == "auto":
        if tls is None:
            raise ValueError("tls.mode auto needs TLS material to render")
        objects += tls_secrets(builder, tls)
        pod_tls_hash = tls_hash(tls.secret_data()["server"])
    elif mode == "secret":
        pod_tls_hash = external_tls_hash
    objects += cache_claims(builder)
    every_daemon = daemons(builder)
    objects += [
        deployment(
            builder,
            daemon,
            config_hash=config_hash(toml_text),
            tls_hash=pod_tls_hash,
            idle_since=(asleep or {}).get(daemon.id),
        )
        for daemon in every_daemon
    ]
    objects += [service(builder), *pool_services(builder)]
    if has_many_daemons(every_daemon):
        # Only with a second daemon do they have an effect: a headless Service for one
        # daemon repeats the Service, and a budget of one unavailable over one daemon lets
        # every eviction through. The pods name the headless Service as their subdomain
        # and the certificate covers its names from the start, so a second daemon arriving
        # or leaving adds or deletes these two objects and changes nothing that runs.
        objects += [daemons_service(builder), disruption_budget(builder)]
    return objects
