"""The Service clients connect to, and the ConfigMap holding buildkitd.toml."""

from __future__ import annotations

from typing import Any

from ..model import Builder
from ..names import ChildNames, child_labels, selector_labels
from .config import CONFIG_KEY
from .meta import object_meta

PORT = 1234
PORT_NAME = "buildkitd"


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


def config_map(builder: Builder, toml_text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(
            builder, ChildNames(builder.name).config_map, child_labels(builder.name, "config")
        ),
        "data": {CONFIG_KEY: toml_text},
    }
