"""Retries after refusals back off to a cap, however long the refusals last."""

from __future__ import annotations

from buildkit_operator.runtime.runner import MAX_BACKOFF, backoff


def test_backoff_doubles_then_caps_without_overflow() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(9) == MAX_BACKOFF
    assert backoff(10_000) == MAX_BACKOFF  # 2.0**10_000 would overflow
