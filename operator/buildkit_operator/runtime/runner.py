"""The runner: reconciles run one at a time per Builder, bursts of events folded into one
pass, requeues and retries scheduled with a capped backoff. The same loop serves every
trigger (Kopf's Builder events, the children's watch, timers), so a pass never depends on
what woke it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter, Histogram

from ..api import API_VERSION, KIND
from ..api.defaults import DEFAULTS, Defaults
from ..api.names import ANNOTATION_WAKE, LABEL_BUILDER, label_value
from ..cluster import Kube
from ..reconcile.loop import Outcome, reconcile

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
        self._users: dict[tuple[str, str], int] = {}  # tasks holding or awaiting the lock
        self._gone: set[tuple[str, str]] = set()  # Builders found gone: drop their lock
        self._queued: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._closed = False

    async def run(self, namespace: str, name: str) -> Outcome:
        key = (namespace, name)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        # The lock is dropped with the last user of it, never while another task waits on
        # it: a new lock beside a held one would let two passes of one Builder run at once.
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            return await self._run_locked(key, lock)
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                if key in self._gone:
                    self._gone.discard(key)
                    self._locks.pop(key, None)

    async def _run_locked(self, key: tuple[str, str], lock: asyncio.Lock) -> Outcome:
        namespace, name = key
        async with lock:
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
        if outcome.phase is None:
            self._gone.add(key)
        else:
            self._gone.discard(key)
        if outcome.errors:
            # Refused changes are retried, backing off while the refusal lasts.
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            self._schedule(key, backoff(failures))
            return outcome
        self._failures.pop(key, None)
        for action in outcome.actions:
            ACTIONS.labels(action.split(" ", 1)[0]).inc()
        if outcome.phase is not None and outcome.requeue_after is not None:
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

    def close(self) -> None:
        """Start no pass any more, and wait for the running ones to end (blocking)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def request(self, namespace: str, name: str) -> None:
        """Ask for a reconcile soon; requests made while one is queued are folded into it."""
        key = (namespace, name)
        if key in self._queued or self._closed:
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
