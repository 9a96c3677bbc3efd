"""The Builder CustomResourceDefinition, generated from the pydantic model.

pydantic emits JSON Schema (``$ref``/``$defs``, ``anyOf`` with ``null`` for optional
fields, titles); Kubernetes wants a *structural* OpenAPI v3 schema: everything inline, one
``type`` per node, no nulls. This module converts one into the other and adds what only a
CRD has: printer columns, the status subresource, short names.
"""

from __future__ import annotations

from typing import Any

import yaml

from .identity import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from .spec import BuilderSpec
from .status import BuilderStatus

_DROP = {"title"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node.pop("allOf")[0], defs)
        return _resolve({**inner, **node}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            node.pop("anyOf")
            inner = _resolve(options[0], defs)
            return _resolve({**inner, **node}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key in ("$defs",):
            continue
        else:
            out[key] = _resolve(value, defs)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("type") == "object" and "additionalProperties" in out:
        extra = out["additionalProperties"]
        if extra is False:
            out.pop("additionalProperties")
        elif extra is True or extra == {}:
            out.pop("additionalProperties")
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    # Defaults of nested objects are filled in by their own properties' defaults.
    if isinstance(out.get("default"), dict | list) and not out["default"]:
        out.pop("default")
    return out


def structural_schema(model: type[BuilderSpec] | type[BuilderStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


def builder_crd() -> dict[str, Any]:
    spec_schema = structural_schema(BuilderSpec)
    status_schema = structural_schema(BuilderStatus)
    # Every spec sub-object is defaulted as a whole so that its properties' defaults apply
    # (the API server defaults only objects that are present).
    for key in ("buildkitd", "cache", "tls", "service"):
        spec_schema["properties"][key]["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "buildkit-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "buildkit"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "description": "Ready daemons / desired daemons.",
                            "jsonPath": ".status.ready",
                        },
                        {
                            "name": "Phase",
                            "type": "string",
                            "description": "Pending, Ready, Degraded, Drifted, Missing or Invalid.",
                            "jsonPath": ".status.phase",
                        },
                        {
                            "name": "Endpoint",
                            "type": "string",
                            "description": "Where clients connect.",
                            "jsonPath": ".status.endpoint",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A Builder runs BuildKit daemons in the cluster, reachable by "
                                "docker buildx and buildctl over mutual TLS."
                            ),
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "Versioned schema of this object: "
                                    f"{GROUP}/{VERSION}.",
                                },
                                "kind": {
                                    "type": "string",
                                    "description": f"The kind of this object: {KIND}.",
                                },
                                # The API server allows nothing but the type here.
                                "metadata": {"type": "object"},
                                "spec": {**spec_schema, "default": {}},
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    return yaml.safe_dump(builder_crd(), sort_keys=False, width=100)
