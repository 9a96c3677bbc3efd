"""The Service clients connect to, and the ConfigMap holding buildkitd.toml."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api import Builder, pool_slug
from ..api.names import (
    ANNOTATION_APPLIED_SPEC,
    LABEL_POOL,
    PORT,
    PORT_NAME,
    ChildNames,
    child_labels,
    selector_labels,
)
from .config import CONFIG_KEY
from .meta import object_meta


def service(builder: Builder) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(
            builder, ChildNames(builder.name).service, child_labels(builder.name, "service")
        ),
        "spec": {
            "type": builder.spec.service.type,
            "selector": selector_labels(builder.name),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def daemons_service(builder: Builder) -> dict[str, Any]:
    """The headless Service giving each daemon its own stable DNS name,
    ``<daemon>.<service>.<namespace>.svc`` (the pods name it as their subdomain), so a
    client can keep building on the daemon that holds its cache. Not-ready daemons are
    published too: a name that comes and goes with readiness would break a client that
    resolved it a moment before."""
    names = ChildNames(builder.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(
            builder, names.daemons_service, child_labels(builder.name, "daemons")
        ),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(builder.name),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def pool_services(builder: Builder) -> list[dict[str, Any]]:
    """One Service per pool, in front of that pool's daemons only (its endpoint)."""
    names, out = ChildNames(builder.name), []
    for pool in builder.spec.pools:
        labels = {**child_labels(builder.name, "pool"), LABEL_POOL: pool_slug(pool.platform)}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": object_meta(builder, names.pool_service(pool.platform), labels),
                "spec": {
                    "type": builder.spec.service.type,
                    "selector": {
                        **selector_labels(builder.name),
                        LABEL_POOL: pool_slug(pool.platform),
                    },
                    "ports": [
                        {
                            "name": PORT_NAME,
                            "port": PORT,
                            "targetPort": PORT_NAME,
                            "protocol": "TCP",
                        }
                    ],
                },
            }
        )
    return out


def config_map(
    builder: Builder, toml_text: str, applied_spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ConfigMap of buildkitd.toml; it also keeps the spec it was rendered from (see
    ``encode_applied_spec``), so that only the operator's own apply stores it."""
    meta = object_meta(
        builder, ChildNames(builder.name).config_map, child_labels(builder.name, "config")
    )
    if applied_spec is not None:
        meta["annotations"] = {ANNOTATION_APPLIED_SPEC: encode_applied_spec(applied_spec)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {CONFIG_KEY: toml_text},
    }


def encode_applied_spec(spec: Mapping[str, Any]) -> str:
    """A spec as stored on the ConfigMap: canonical JSON, so the same spec is always the
    same text and an unchanged spec is never written again."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))
