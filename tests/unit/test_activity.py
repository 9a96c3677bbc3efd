"""The activity of a daemon as its build history describes it, and what an unreachable
daemon gives (the operator must not wait on it)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

from buildkit_operator.api.daemons import UNKNOWN, Activity
from buildkit_operator.buildkit.activity import Target, _Event, gather, history

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _event(kind: int, created: datetime, completed: datetime | None = None) -> object:
    event = _Event(type=kind)
    event.record.Ref = "ref"
    event.record.CreatedAt.FromDatetime(created)
    if completed is not None:
        event.record.CompletedAt.FromDatetime(completed)
    # Through the wire format, as the daemon sends it.
    return _Event.FromString(event.SerializeToString())


def test_builds_in_flight_and_latest_build() -> None:
    events = [
        _event(0, T0 + timedelta(seconds=30)),
        _event(1, T0, T0 + timedelta(seconds=10)),
        _event(0, T0 + timedelta(seconds=40)),
    ]
    got = history(events)
    assert got.in_flight == 2 and got.building and got.known
    assert got.last_build == T0 + timedelta(seconds=40)
    assert got.idle_for(T0 + timedelta(minutes=5)) is None


def test_idle_since_last_completed_build() -> None:
    got = history([_event(1, T0, T0 + timedelta(seconds=10))])
    assert got.in_flight == 0 and not got.building
    assert got.idle_for(T0 + timedelta(seconds=70)) == 60.0


def test_no_history_is_idle_since_start() -> None:
    got = history([])
    assert got == Activity(0, None)
    assert got.idle_for(T0 + timedelta(seconds=5), started=T0) == 5.0
    assert got.idle_for(T0) is None


def test_unknown_is_neither_idle_nor_building() -> None:
    assert not UNKNOWN.known and not UNKNOWN.building
    assert UNKNOWN.idle_for(T0, started=T0) is None


def test_a_daemon_that_does_not_answer_is_unknown_within_the_timeout() -> None:
    # A listening socket that never accepts: the connection hangs as a wedged daemon's does.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        began = time.monotonic()
        got = gather([Target("a-0", address), Target("a-1", address)], timeout=0.5)
        took = time.monotonic() - began
    assert set(got) == {"a-0", "a-1"}
    assert all(not a.known and a.reason for a in got.values()), got
    assert took < 5, took
