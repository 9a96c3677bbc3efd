"""The runner's concurrency: one pass per Builder at a time, whatever the order of events.

The runner's own scheduling is under test; the pass itself is replaced by a function that
records how many passes of a Builder overlap (the reconciler's behaviour is proven against
the real API server in tests/integration)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from buildkit_operator.reconcile.types import Outcome
from buildkit_operator.runtime.runner import Runner


class _NoCache:
    cache = None


class Recording(Runner):
    """Passes that take ``seconds`` and return the phases given, in order."""

    def __init__(self, phases: list[str | None], seconds: float = 0.2) -> None:
        super().__init__(_NoCache(), concurrency=4)  # type: ignore[arg-type]
        self.phases, self.seconds = phases, seconds
        self.running = 0
        self.most = 0
        self.calls = 0
        self._mutex = threading.Lock()

    def _reconcile(self, namespace: str, name: str) -> Outcome:
        with self._mutex:
            self.running += 1
            self.most = max(self.most, self.running)
            phase = self.phases[min(self.calls, len(self.phases) - 1)]
            self.calls += 1
        time.sleep(self.seconds)
        with self._mutex:
            self.running -= 1
        return Outcome(phase=phase)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_passes_of_one_builder_never_overlap_when_it_is_found_gone() -> None:
    """A pass that finds the Builder gone while another waits for the lock, then a third
    request: before, the lock was dropped under the waiting task and the third ran beside it."""
    runner = Recording([None, "Ready", "Ready"])

    async def scenario() -> None:
        first = asyncio.create_task(runner.run("ns", "b"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(runner.run("ns", "b"))  # waits for the first
        await first
        await asyncio.sleep(0.05)  # the second now runs
        third = asyncio.create_task(runner.run("ns", "b"))
        await asyncio.gather(second, third)

    _run(scenario())
    assert runner.calls == 3
    assert runner.most == 1
    runner.executor.shutdown()


def test_a_gone_builders_lock_is_dropped_once_unused() -> None:
    runner = Recording([None], seconds=0.01)
    _run(runner.run("ns", "b"))
    assert ("ns", "b") not in runner._locks
    runner.executor.shutdown()


def test_different_builders_run_side_by_side() -> None:
    runner = Recording(["Ready"], seconds=0.3)

    async def scenario() -> None:
        await asyncio.gather(runner.run("ns", "a"), runner.run("ns", "b"))

    _run(scenario())
    assert runner.most == 2
    runner.executor.shutdown()
