"""Does a live object carry what the operator would apply? Pure.

A guessed comparison loops for ever on a list whose items share a guessed key (two
tolerations with one key), and misses edits a rounding hides (``100m`` vs ``500m``). So the
answer follows the semantics the API server itself publishes and uses for server-side
apply:

- the OpenAPI v3 schema of each kind (``openapi_children.json``, snapshotted from the
  pinned API server and checked against it by a test): a list is a *map* keyed on
  ``x-kubernetes-list-map-keys``, a *set*, or *atomic* (the default); a map may be atomic;
  a ``Quantity`` compares by value (``0.1`` == ``100m``, ``1e3`` == ``1k``), exactly;
- the field ownership recorded in ``managedFields``: a field the operator's manager still
  owns but no longer renders (a setting removed from the spec) is drift too, since applying
  would remove it.

Fields the live object has and the rendered one does not (defaults, other managers' fields)
are not drift: server-side apply leaves them alone, so comparing them would only make the
operator write for ever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from kubernetes.utils.quantity import parse_quantity

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_REF_PREFIX = "#/components/schemas/"

ROOTS = {
    "ConfigMap": "io.k8s.api.core.v1.ConfigMap",
    "Secret": "io.k8s.api.core.v1.Secret",
    "PersistentVolumeClaim": "io.k8s.api.core.v1.PersistentVolumeClaim",
    "Service": "io.k8s.api.core.v1.Service",
    "Deployment": "io.k8s.api.apps.v1.Deployment",
    "PodDisruptionBudget": "io.k8s.api.policy.v1.PodDisruptionBudget",
}
# What of an object is compared: metadata is the API server's as much as ours.
_META_COMPARED = ("labels", "annotations", "ownerReferences")
_EMPTY: tuple[Any, ...] = (None, {}, [])


class Schema:
    """The published schemas of the child kinds, walked by reference."""

    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self.schemas = schemas

    def root(self, kind: str) -> dict[str, Any]:
        return {"$ref": _REF_PREFIX + ROOTS[kind]}

    def resolve(self, node: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], str | None]:
        """Follow ``$ref`` (directly or as the single ``allOf`` that carries a default)."""
        ref: str | None = None
        node = node or {}
        for _ in range(16):
            if "$ref" in node:
                ref = str(node["$ref"]).removeprefix(_REF_PREFIX)
                node = self.schemas.get(ref, {})
            elif len(node.get("allOf") or ()) == 1 and "type" not in node:
                node = node["allOf"][0]
            else:
                break
        return node, ref


@cache
def default_schema() -> Schema:
    text = resources.files(__package__).joinpath("openapi_children.json").read_text()
    return Schema(json.loads(text)["schemas"])


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object that is compared: metadata's labels, annotations and owners,
    and everything but status."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind", "status")}
    out["metadata"] = {k: meta[k] for k in _META_COMPARED if k in meta}
    return out


def _quantity(value: Any) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item_key(item: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    if not isinstance(item, Mapping):
        return (item,)
    return tuple(item.get(k) for k in keys)


def _key_text(key: tuple[Any, ...]) -> str:
    return ",".join(str(k) for k in key)


def differences(
    want: Any,
    have: Any,
    node: Mapping[str, Any] | None,
    schema: Schema,
    path: str = "",
    displaced: list[str] | None = None,
) -> list[str]:
    """Paths where ``have`` does not carry what ``want`` says, by the schema's semantics.

    ``displaced`` collects the list-maps where a wanted item is missing while a live item of
    the same ``name`` sits under another key (a Service port edited from 1234 to 8266): an
    apply would add the wanted item beside it, and the API server refuses two of one name."""
    node, ref = schema.resolve(node)
    if ref == QUANTITY:
        a, b = _quantity(want), _quantity(have)
        return [] if (a is not None and a == b) or want == have else [path]
    if ref == INT_OR_STRING:
        return [] if str(want) == str(have) and type(want) is type(have) else [path]
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [path or "."]
        props: Mapping[str, Any] = node.get("properties") or {}
        extra = node.get("additionalProperties")
        found: list[str] = []
        for key, value in want.items():
            sub = _join(path, str(key))
            if key not in have:
                if value not in _EMPTY:
                    found.append(sub)
                continue
            child = props.get(key) if props else (extra if isinstance(extra, Mapping) else None)
            found += differences(value, have[key], child, schema, sub, displaced)
        if not props and node.get("x-kubernetes-map-type") == "atomic":
            # An atomic map (nodeSelector) is replaced whole by an apply: a key someone
            # added is drift.
            found += [_join(path, str(k)) for k in have if k not in want]
        return found
    if isinstance(want, list):
        if not isinstance(have, list):
            return [path]
        items = node.get("items")
        list_type = node.get("x-kubernetes-list-type", "atomic")
        if list_type == "map":
            keys = list(node.get("x-kubernetes-list-map-keys") or ())
            by_key = {_item_key(item, keys): item for item in have}
            found = []
            for item in want:
                key = _item_key(item, keys)
                sub = f"{path}[{_key_text(key)}]"
                if key in by_key:
                    found += differences(item, by_key[key], items, schema, sub, displaced)
                    continue
                found.append(sub)
                name = item.get("name") if isinstance(item, Mapping) else None
                if (
                    displaced is not None
                    and name is not None
                    and any(isinstance(h, Mapping) and h.get("name") == name for h in have)
                ):
                    displaced.append(path)
            return found
        if list_type == "set":
            return [f"{path}[{item}]" for item in want if item not in have]
        # Atomic: an apply replaces the whole list, so the live one must be the same list
        # (its items may still carry defaults the server added).
        if len(want) != len(have):
            return [path]
        found = []
        for index, (a, b) in enumerate(zip(want, have, strict=True)):
            found += differences(a, b, items, schema, f"{path}[{index}]", displaced)
        return found
    if want == have and type(want) is type(have):
        return []
    if isinstance(want, int | float) and isinstance(have, int | float) and want == have:
        return []
    return [path]


def object_differences(
    want: Mapping[str, Any], have: Mapping[str, Any], schema: Schema | None = None
) -> list[str]:
    """Where the live object ``have`` does not carry the rendered ``want``."""
    schema = schema or default_schema()
    return differences(comparable(want), comparable(have), schema.root(str(want["kind"])), schema)


def displaced_lists(
    want: Mapping[str, Any], have: Mapping[str, Any], schema: Schema | None = None
) -> list[str]:
    """The list-maps of ``have`` where an item of a wanted name sits under another key
    (see ``differences``): an apply cannot repair them, only a replacement of the list."""
    schema = schema or default_schema()
    found: list[str] = []
    differences(
        comparable(want), comparable(have), schema.root(str(want["kind"])), schema, "", found
    )
    return sorted(set(found))


# --- field ownership -------------------------------------------------------------------------


def owned_fields(obj: Mapping[str, Any], manager: str) -> Mapping[str, Any] | None:
    """The fieldsV1 set ``manager`` holds on ``obj`` through apply, if any. The children's
    cache keeps it as its JSON text (a tenth of the memory of the parsed tree, and read
    only here, once per pass), so either form is read."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            fields = entry.get("fieldsV1")
            if isinstance(fields, str):
                fields = json.loads(fields)
            return fields if isinstance(fields, Mapping) else {}
    return None


def _stale(fields: Mapping[str, Any], want: Any, path: str) -> Iterator[str]:
    for key, sub in fields.items():
        if key == ".":
            continue
        kind, _, text = key.partition(":")
        if kind == "f":
            if not isinstance(want, Mapping) or text not in want:
                yield _join(path, text)
            elif sub:
                yield from _stale(sub, want[text], _join(path, text))
        elif kind == "k":
            wanted_key = json.loads(text)
            match = None
            if isinstance(want, list):
                for item in want:
                    if isinstance(item, Mapping) and all(
                        item.get(k) == v for k, v in wanted_key.items()
                    ):
                        match = item
                        break
            where = f"{path}[{_key_text(tuple(wanted_key.values()))}]"
            if match is None:
                yield where
            elif sub:
                yield from _stale(sub, match, where)
        elif kind == "v":
            value = json.loads(text)
            if not isinstance(want, list) or value not in want:
                yield f"{path}[{value}]"


def stale_fields(want: Mapping[str, Any], have: Mapping[str, Any], manager: str) -> list[str]:
    """Fields ``manager`` owns on ``have`` that ``want`` no longer sets: an apply of
    ``want`` would remove them, so until then the live object differs from the spec."""
    fields = owned_fields(have, manager)
    if not fields:
        return []
    body = {k: v for k, v in want.items() if k != "status"}
    return list(_stale(fields, body, ""))
