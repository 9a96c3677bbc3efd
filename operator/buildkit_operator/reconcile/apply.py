"""Apply: carry out a plan's actions against the API server, in an order that never leaves
certificates stored without the CA that signs them. A refusal stops only the change it
refused; it is returned, with the server's own message, for the report."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from ..api.names import ChildNames
from ..cluster import Kube
from .types import WORKLOAD_KIND, Action, Key

log = logging.getLogger(__name__)

# What can cut a request short: the API server's refusal, and a timeout or a reset
# connection on the way (urllib3's errors, OSError for sockets).
FAILURES = (ApiException, DynamicApiError, urllib3.exceptions.HTTPError, OSError)


@dataclass
class Applied:
    """What applying a plan did: the actions done, the refusals (one line each), the keys
    refused, and each written object as the API server returned it (None once deleted)."""

    done: list[Action] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: set[Key] = field(default_factory=set)
    after: dict[Key, dict[str, Any] | None] = field(default_factory=dict)

    def extend(self, more: Applied) -> None:
        """Add what a further round of actions of the same pass did."""
        self.done += more.done
        self.errors += more.errors
        self.failed |= more.failed
        self.after.update(more.after)


def api_message(err: Exception) -> str:
    """The API server's own message for a refused request, or what cut it short."""
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    message = None
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    message = (
        message
        or getattr(err, "summary", lambda: None)()
        or getattr(err, "reason", None)
        or f"{type(err).__name__}: {err}"
    )
    return f"{status or ''} {message}".strip()


def _apply(kube: Kube, namespace: str, action: Action) -> dict[str, Any] | None:
    """Carry out one action; returns the object as the API server now has it, if any."""
    if action.replace:
        # A merge patch replaces a list whole (server-side apply merges it by key).
        kube.merge_patch(action.kind, namespace, action.name, replacing(action.obj, action.replace))
    if action.verb in ("create", "patch"):
        return kube.apply(action.obj)
    if action.verb in ("roll", "scale"):
        return dict(kube.merge_patch(action.kind, namespace, action.name, action.obj))
    # Deleted now and created by a later pass once it is gone, so old and new never run
    # side by side on one cache volume; only the object the plan saw (its uid).
    kube.delete(action.kind, namespace, action.name, uid=action.uid)
    return None


def replacing(obj: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """A merge patch that sets, whole, the outermost list on each of ``paths`` to what
    ``obj`` has there: ``spec.ports`` → ``{"spec": {"ports": [...]}}``; a list inside a
    list item (``spec.template.spec.containers[buildkitd].ports``) replaces the outer list."""
    patch: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        outer = next((i for i, p in enumerate(parts) if "[" in p), len(parts) - 1)
        steps = [*parts[:outer], parts[outer].split("[", 1)[0]]
        source: Any = obj
        target = patch
        for step in steps[:-1]:
            source = source[step]
            target = target.setdefault(step, {})
        target[steps[-1]] = source[steps[-1]]
    return patch


def _independent(action: Action) -> bool:
    return action.verb in ("create", "patch") and action.kind != WORKLOAD_KIND


def apply_actions(kube: Kube, namespace: str, name: str, actions: Sequence[Action]) -> Applied:
    """Carry out ``actions`` for Builder ``namespace/name``.

    A new CA is stored before anything it signs: were the operator killed between the two,
    certificates stored without their CA would have to be issued again. What the daemons
    mount (and the Services) depends on nothing else of the pass: applied together.
    Workloads follow, then deletions, one at a time as planned."""
    result = Applied()

    def attempt(action: Action) -> Exception | None:
        try:
            result.after[action.key] = _apply(kube, namespace, action)
        except FAILURES as err:
            return err
        return None

    names = ChildNames(name)
    ca_key = ("Secret", names.ca_secret)
    ca = [a for a in actions if a.key == ca_key and _independent(a)]
    first = [a for a in actions if _independent(a) and a.key != ca_key]
    rest = [a for a in actions if not _independent(a)]
    results: list[Exception | None] = [attempt(a) for a in ca]
    blocked: set[Key] = set()
    if any(r is not None for r in results):
        blocked = {("Secret", names.server_secret), ("Secret", names.client_secret)}
    ran = iter(kube.map(attempt, [a for a in first if a.key not in blocked]))
    unsigned = ApiException(reason="not written: the CA Secret that signs it was refused")
    results += [unsigned if a.key in blocked else next(ran) for a in first]
    results += [attempt(a) for a in rest]
    for action, refused in zip([*ca, *first, *rest], results, strict=True):
        if refused is not None:
            problem = f"{action.verb} {action.kind} {action.name}: {api_message(refused)}"
            result.errors.append(problem)
            result.failed.add(action.key)
            log.warning("%s/%s: %s", namespace, name, problem)
            continue
        result.done.append(action)
        log.info(
            "%s/%s: %s %s %s (%s)",
            namespace, name, action.verb, action.kind, action.name, action.reason,
        )  # fmt: skip
    return result
