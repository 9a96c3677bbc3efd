"""What a mutating admission changed in what the operator applied. Pure.

A mutating webhook or MutatingAdmissionPolicy may rewrite a child as it is written (an
image pointed at a registry mirror, a memory limit set or a cpu request rounded). The API
server then keeps the admission's value whatever the operator sends: writing the spec again
changes nothing, and a pass that took the difference for drift would write (and record an
Event, and claim a rollout) every few seconds for ever.

Such a field is told from a person's edit by what the API server records:

- each child the operator applies carries a digest of the object as the operator sent it
  (``buildkit.dev/intent``). While the live digest is the one of what would be sent now,
  the operator's intent has not changed since it last wrote the object;
- server-side apply records the fields the operator's apply set in its ``managedFields``
  entry, and a mutating admission that changes a value in that same request leaves them
  there: the operator still owns the field. A person's edit (``kubectl edit``, ``set
  image``, a patch, a forced apply) moves the fields it changes to the person's manager.

So a field that differs, under an unchanged digest, while the operator still owns it, is the
admission's value for the operator's own write: left as admitted and reported. Anything
else is written as usual: a new intent (the digest differs), a person's edit (the field is
someone else's now), an object written before digests (none yet). Secrets carry no digest:
their content is keys, and nothing else may stand in for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..api.names import ANNOTATION_INTENT
from .drift import comparable, owned_fields

_UNSTAMPED = ("Secret",)


def digest(obj: Mapping[str, Any]) -> str:
    """A digest of what applying ``obj`` asks for (its digest annotation left out)."""
    body = comparable(obj)
    annotations = {
        k: v
        for k, v in (body["metadata"].get("annotations") or {}).items()
        if k != ANNOTATION_INTENT
    }
    body["metadata"] = {**body["metadata"], "annotations": annotations}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stamped(want: Mapping[str, Any]) -> Mapping[str, Any]:
    """``want`` carrying the digest of itself, as it is applied."""
    if want.get("kind") in _UNSTAMPED:
        return want
    meta = dict(want.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_INTENT: digest(want)}
    return {**want, "metadata": meta}


def as_live(want: Mapping[str, Any], have: Mapping[str, Any]) -> Mapping[str, Any]:
    """What is compared with ``have``: ``want`` without its digest when ``have`` carries
    none (a child of a release before digests: the digest goes with its next real write,
    so an upgrade writes nothing), else ``want`` as stamped, so that a digest edited by
    hand is put back like any other field the operator sets."""
    if _annotation(have) is not None:
        return want
    meta = dict(want.get("metadata") or {})
    meta["annotations"] = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != ANNOTATION_INTENT
    }
    return {**want, "metadata": meta}


def _annotation(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_INTENT)
    return str(value) if value is not None else None


def rewritten(
    want: Mapping[str, Any], have: Mapping[str, Any], paths: Iterable[str], manager: str
) -> list[str]:
    """Of ``paths`` (where ``have`` differs from the stamped ``want``), those an admission
    rewrote in the operator's last write and the API server keeps so."""
    intent = _annotation(want)
    if intent is None or _annotation(have) != intent:
        return []
    fields = owned_fields(have, manager)
    if not fields:
        return []
    return [p for p in paths if owns(fields, p)]


def _matches_item(key: str, text: str) -> bool:
    """Whether the fieldsV1 key of a list item (``k:{"name":"x"}``, ``v:"a"``) is the item
    ``drift`` names ``[text]``."""
    kind, _, raw = key.partition(":")
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    if kind == "k" and isinstance(value, Mapping):
        return sorted(str(v) for v in value.values()) == sorted(text.split(","))
    return kind == "v" and str(value) == text


def owns(fields: Mapping[str, Any], path: str) -> bool:
    """Whether the fieldsV1 set ``fields`` holds the field ``drift`` names ``path``
    (``spec.template.spec.containers[buildkitd].image``). A field held whole (an atomic
    list or map, a scalar) holds everything under it. Map keys may contain dots
    (``buildkit.dev/tls-hash``), so each way of reading the path is tried."""
    rest = path.removeprefix(".")
    if not rest:
        return True
    if not fields:
        return True  # held whole
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return False
        text, after = rest[1:end], rest[end + 1 :]
        return any(
            _matches_item(key, text) and owns(sub or {}, after)
            if after
            else _matches_item(key, text)
            for key, sub in fields.items()
        )
    for key, sub in fields.items():
        kind, _, name = key.partition(":")
        if kind != "f" or not rest.startswith(name):
            continue
        after = rest[len(name) :]
        if after and after[0] not in ".[":
            continue
        if not after or owns(sub or {}, after):
            return True
    return False


REASON = "AdmissionRewrote"


def describe(fields: Iterable[str], limit: int = 10) -> str:
    """What the status and the Event say of the fields kept as admitted."""
    fields = list(fields)
    shown = "; ".join(fields[:limit]) + (
        f" and {len(fields) - limit} more" if len(fields) > limit else ""
    )
    return (
        "a mutating admission (webhook or MutatingAdmissionPolicy) changed what the operator "
        f"applied, and the API server keeps its value: {shown}; left as admitted until the "
        "spec changes them"
    )
