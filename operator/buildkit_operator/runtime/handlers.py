"""Kopf handlers: thin. Every trigger asks the runner to reconcile the Builder concerned.

Builders come through ``kopf.on.event``, for which Kopf persists nothing on the object
(no bookkeeping patch per Builder); the children come through the watch-fed cache in
cluster/cache.py, whose changes wake their Builder.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from prometheus_client import Counter, Histogram, start_http_server

from ..api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from ..api.defaults import DEFAULTS, Defaults
from ..api.names import ANNOTATION_WAKE, LABEL_BUILDER, label_value
from ..cluster import REQUEST_TIMEOUT, Kube
from ..cluster.lease import Election, exit_on_lost_leadership
from ..reconcile.loop import Outcome, reconcile
from .liveness import serve_liveness
from .settings import configure

log = logging.getLogger(__name__)

RECONCILES = Counter("buildkit_operator_reconciles", "Reconciles run, by result.", ["result"])
ACTIONS = Counter("buildkit_operator_actions", "Changes made to children, by verb.", ["verb"])
DURATION = Histogram("buildkit_operator_reconcile_seconds", "Time one reconcile takes.")

# Events that arrive together (a rollout updates a Deployment many times) are folded
# into one reconcile after this short pause.
COALESCE = 0.3
MAX_BACKOFF = 300.0
# Reconciles running at once (and connections to the API server).
DEFAULT_CONCURRENCY = 16
# How long a pass waits for the children's cache to fill after startup.
CACHE_SYNC_WAIT = 30.0


def backoff(failures: int) -> float:
    """Seconds before retry ``failures``: doubling from 2 s, capped (and never overflowing,
    however long the API server keeps refusing)."""
    return min(MAX_BACKOFF, 2.0 ** min(failures, 16))


class Runner:
    """Runs reconciles: one at a time per Builder, bursts folded, requeues scheduled."""

    def __init__(self, kube: Kube, defaults: Defaults = DEFAULTS, *, concurrency: int = 0) -> None:
        self.kube = kube
        self.defaults = defaults
        # Reconciles block on the API server: their own pool, sized to run that many at
        # once (asyncio's default executor holds cpu_count + 4 threads, 6 on 2 cores).
        self.executor = ThreadPoolExecutor(
            concurrency or DEFAULT_CONCURRENCY, thread_name_prefix="reconcile"
        )
        # Generation last handed to a reconcile, per Builder: a status write (ours) does
        # not change it, so it wakes nothing.
        self._generations: dict[tuple[str, str], tuple[int | None, str | None]] = {}
        # Builder names by (namespace, label value), to find the owner of a retained cache
        # claim (it carries the label but no owner reference).
        self._by_label: dict[tuple[str, str], set[str]] = {}
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
                outcome = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self._reconcile, namespace, name
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

    def _reconcile(self, namespace: str, name: str) -> Outcome:
        cache = self.kube.cache
        if cache is not None and not cache.fresh():
            # Right after startup (or a dropped watch) the cache may miss children: wait
            # for it a while, then read them from the API server instead.
            cache.wait_synced(CACHE_SYNC_WAIT)
        return reconcile(self.kube, namespace, name, defaults=self.defaults)

    def builder_changed(self, type_: str | None, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            return
        key = (namespace, name)
        label = (namespace, label_value(name))
        if type_ == "DELETED":
            self.kube.forget_builder(namespace, name)
            self._generations.pop(key, None)
            self._by_label.get(label, set()).discard(name)
            return
        self.kube.remember_builder(obj)
        self._by_label.setdefault(label, set()).add(name)
        # A new spec, or a wake request (connect, wake: an annotation, not the spec).
        generation = (meta.get("generation"), (meta.get("annotations") or {}).get(ANNOTATION_WAKE))
        if key in self._generations and self._generations[key] == generation:
            return
        self._generations[key] = generation
        self.request(namespace, name)

    def child_changed(self, obj: Mapping[str, Any]) -> None:
        """A child changed or went away: look at its Builder again, so drift is repaired
        within seconds rather than at the next periodic pass."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        if namespace:
            for name in owner_name(obj, self._by_label):
                # A Builder not seen yet (its watch lists it after the children's at
                # startup) is reconciled when it is: waking it now would read it anew.
                if (namespace, name) in self._generations:
                    self.request(namespace, name)

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


def owner_name(body: Mapping[str, Any], by_label: Mapping[tuple[str, str], set[str]]) -> list[str]:
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("apiVersion") == API_VERSION and ref.get("kind") == KIND:
            return [ref["name"]]
    value = (meta.get("labels") or {}).get(LABEL_BUILDER)
    return sorted(by_label.get((str(meta.get("namespace")), value), ())) if value else []


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    timeout = float(memo.get("request_timeout") or REQUEST_TIMEOUT[1])
    concurrency = int(memo.get("concurrency") or DEFAULT_CONCURRENCY)
    kube = await asyncio.to_thread(
        Kube, timeout=(min(REQUEST_TIMEOUT[0], timeout), timeout), concurrency=concurrency
    )
    runner = Runner(kube, memo.get("defaults", DEFAULTS), concurrency=concurrency)
    memo["runner"] = runner
    loop = asyncio.get_running_loop()

    def on_change(obj: dict[str, Any]) -> None:  # called on a watch's thread
        loop.call_soon_threadsafe(runner.child_changed, obj)

    kube.watch_children(memo.get("namespaces") or [], on_change)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def builder_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every Builder event, including the listing at startup. Kopf keeps no state of its
    own on the Builder for this kind of handler (no annotations to patch): the reconcile
    is level-based, so a new generation, or a Builder not seen before, is all it needs."""
    runner: Runner | None = memo.get("runner")
    obj = event.get("object")
    if runner is None or not isinstance(obj, Mapping):
        return
    runner.builder_changed(event.get("type"), copy.deepcopy(dict(obj)))


def run_operator(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    verbose: bool,
    liveness: str,
    metrics_port: int,
    request_timeout: float = REQUEST_TIMEOUT[1],
    defaults: Defaults = DEFAULTS,
    concurrency: int = 0,
    election: Election | None = None,
) -> None:
    """Run the handlers until stopped; with ``election``, only once this process leads."""
    kopf.configure(verbose=verbose)
    if metrics_port:
        start_http_server(metrics_port)
    elector = None
    if election is not None:
        kube = Kube(timeout=(min(REQUEST_TIMEOUT[0], request_timeout), request_timeout))
        elector = election.elector(kube)
        with serve_liveness(liveness):  # a standby is alive, and says so to the kubelet
            elector.acquire()
        elector.keep_renewing(exit_on_lost_leadership)
    try:
        kopf.run(
            clusterwide=all_namespaces or not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness or None,
            standalone=True,
            memo=kopf.Memo(
                request_timeout=request_timeout,
                defaults=defaults,
                concurrency=concurrency,
                namespaces=[] if all_namespaces else namespaces,
            ),
        )
    finally:
        if elector is not None:
            elector.release()
