"""Kopf handlers: thin. Every trigger asks the runner to reconcile the Builder concerned."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError
from prometheus_client import Counter, Histogram, start_http_server
from urllib3.exceptions import HTTPError

from .defaults import DEFAULTS, Defaults
from .kube import REQUEST_TIMEOUT, Kube
from .model import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .names import LABEL_BUILDER, LABEL_MANAGED_BY, MANAGED_BY, label_value
from .reconcile import Outcome, reconcile
from .settings import configure

log = logging.getLogger(__name__)

RECONCILES = Counter("buildkit_operator_reconciles", "Reconciles run, by result.", ["result"])
ACTIONS = Counter("buildkit_operator_actions", "Changes made to children, by verb.", ["verb"])
DURATION = Histogram("buildkit_operator_reconcile_seconds", "Time one reconcile takes.")

# Events that arrive together (a rollout updates a Deployment many times) are folded
# into one reconcile after this short pause.
COALESCE = 0.3
MAX_BACKOFF = 300.0


def backoff(failures: int) -> float:
    """Seconds before retry ``failures``: doubling from 2 s, capped (and never overflowing,
    however long the API server keeps refusing)."""
    return min(MAX_BACKOFF, 2.0 ** min(failures, 16))


class Runner:
    """Runs reconciles: one at a time per Builder, bursts folded, requeues scheduled."""

    def __init__(self, kube: Kube, defaults: Defaults = DEFAULTS) -> None:
        self.kube = kube
        self.defaults = defaults
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._queued: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._failures: dict[tuple[str, str], int] = {}

    async def run(self, namespace: str, name: str) -> Outcome:
        key = (namespace, name)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        async with self._locks.setdefault(key, asyncio.Lock()):
            started = time.monotonic()
            try:
                outcome = await asyncio.to_thread(
                    reconcile, self.kube, namespace, name, defaults=self.defaults
                )
            except Exception:
                RECONCILES.labels("error").inc()
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                self._schedule(key, backoff(failures))
                raise
            finally:
                DURATION.observe(time.monotonic() - started)
        RECONCILES.labels(outcome.phase or "gone").inc()
        if outcome.errors:
            # Refused changes are retried, backing off while the refusal lasts.
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            self._schedule(key, backoff(failures))
            return outcome
        self._failures.pop(key, None)
        for action in outcome.actions:
            ACTIONS.labels(action.split(" ", 1)[0]).inc()
        if outcome.phase is None:
            self._locks.pop(key, None)
        elif outcome.requeue_after is not None:
            self._schedule(key, outcome.requeue_after)
        return outcome

    def request(self, namespace: str, name: str) -> None:
        """Ask for a reconcile soon; requests made while one is queued are folded into it."""
        key = (namespace, name)
        if key in self._queued:
            return
        self._queued.add(key)
        asyncio.get_running_loop().create_task(self._run_queued(key))

    async def _run_queued(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(COALESCE)
        self._queued.discard(key)
        try:
            await self.run(*key)
        except Exception as err:  # retried by the schedule run() set up
            log.warning("reconcile of %s/%s failed, will retry: %s", *key, err)

    def _schedule(self, key: tuple[str, str], delay: float) -> None:
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self.request, *key)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    timeout = float(memo.get("request_timeout") or REQUEST_TIMEOUT[1])
    kube = await asyncio.to_thread(Kube, timeout=(min(REQUEST_TIMEOUT[0], timeout), timeout))
    memo["runner"] = Runner(kube, memo.get("defaults", DEFAULTS))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def builder_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    assert namespace is not None  # Builders are namespaced
    try:
        await memo["runner"].run(namespace, name)
    except (ApiException, DynamicApiError) as err:
        raise kopf.TemporaryError(f"API server said {err.status} {err.reason}", delay=5) from err
    except HTTPError as err:  # a timeout or a dropped connection
        raise kopf.TemporaryError(f"API server unreachable: {err}", delay=5) from err


@kopf.index(GROUP, VERSION, PLURAL)
def builders_by_label(
    namespace: str | None, name: str, **_: Any
) -> dict[tuple[str | None, str], str]:
    """Builder names by their label value, to find the owner of a retained cache claim."""
    return {(namespace, label_value(name)): name}


def owner_name(body: Mapping[str, Any], index: kopf.Index[Any, str]) -> list[str]:
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") == KIND:
            return [ref["name"]]
    value = (meta.get("labels") or {}).get(LABEL_BUILDER)
    return list(index.get((meta.get("namespace"), value), [])) if value else []


_OURS = {LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.event("apps", "v1", "deployments", labels=_OURS)
@kopf.on.event("v1", "services", labels=_OURS)
@kopf.on.event("v1", "configmaps", labels=_OURS)
@kopf.on.event("v1", "secrets", labels=_OURS)
@kopf.on.event("v1", "persistentvolumeclaims", labels=_OURS)
async def child_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A child changed or went away: look at its Builder again, so drift is repaired within
    seconds rather than at the next periodic pass."""
    runner: Runner | None = memo.get("runner")
    if runner is None:
        return
    for name in owner_name(body, kwargs["builders_by_label"]):
        runner.request(body["metadata"]["namespace"], name)


def run_operator(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    verbose: bool,
    liveness: str,
    metrics_port: int,
    request_timeout: float = REQUEST_TIMEOUT[1],
    defaults: Defaults = DEFAULTS,
) -> None:
    kopf.configure(verbose=verbose)
    if metrics_port:
        start_http_server(metrics_port)
    kopf.run(
        clusterwide=all_namespaces or not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness or None,
        standalone=True,
        memo=kopf.Memo(request_timeout=request_timeout, defaults=defaults),
    )
