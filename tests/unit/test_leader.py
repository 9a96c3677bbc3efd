"""Leader election: who may take the Lease, the timing's order, the flags, and the fence
(a leader that may have lost the Lease writes nothing), against an in-memory Lease."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from buildkit_operator.cli.main import UsageError, build_parser, election_from
from buildkit_operator.cluster.client import Fenced, Kube
from buildkit_operator.cluster.lease import LeaderElector, Timing, may_take


def lease(holder: str | None) -> dict[str, object]:
    return {"spec": {"holderIdentity": holder, "renewTime": "2026-01-01T00:00:00.000000Z"}}


def test_a_free_or_own_lease_may_be_taken_at_once() -> None:
    assert may_take(lease(None), "me", observed_at=100.0, now=100.0, duration=15)
    assert may_take(lease(""), "me", observed_at=100.0, now=100.0, duration=15)
    assert may_take(lease("me"), "me", observed_at=100.0, now=100.0, duration=15)


def test_another_holder_is_waited_for_a_whole_duration_of_our_clock() -> None:
    # Judged from when this process last saw the Lease change, not from the holder's
    # renewTime: the two clocks need not agree.
    assert not may_take(lease("other"), "me", observed_at=100.0, now=114.9, duration=15)
    assert may_take(lease("other"), "me", observed_at=100.0, now=115.0, duration=15)


@pytest.mark.parametrize(
    "timing",
    [Timing(15, 15, 2), Timing(15, 10, 10), Timing(10, 15, 2), Timing(15, 10, 0)],
)
def test_timing_must_be_retry_below_deadline_below_duration(timing: Timing) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        timing.check()


def test_run_flags() -> None:
    alone = build_parser().parse_args(["run", "-A"])
    assert election_from(alone) is None, "without --leader-elect the operator runs alone"
    args = build_parser().parse_args(
        ["run", "-A", "--leader-elect", "--leader-election-namespace=ops",
         "--leader-election-id=bko", "--lease-duration=20", "--renew-deadline=12",
         "--retry-period=3"]
    )  # fmt: skip
    election = election_from(args)
    assert (election.namespace, election.name) == ("ops", "bko")
    assert election.timing == Timing(20, 12, 3)
    bad = build_parser().parse_args(["run", "--leader-elect", "--renew-deadline=30"])
    with pytest.raises(UsageError, match="renew deadline"):
        election_from(bad)


def test_the_holders_own_lease_duration_is_honoured() -> None:
    """A released Lease says 1 s; one written by a holder with --lease-duration=40 says 40."""
    released = {"spec": {"holderIdentity": "old", "leaseDurationSeconds": 1}}
    assert may_take(released, "me", observed_at=100.0, now=101.0, duration=15)
    long = {"spec": {"holderIdentity": "old", "leaseDurationSeconds": 40}}
    assert not may_take(long, "me", observed_at=100.0, now=130.0, duration=15)
    assert may_take(long, "me", observed_at=100.0, now=140.0, duration=15)


class FakeLeaseServer:
    """An in-memory Lease endpoint with the API server's optimistic concurrency, whose
    answers can be held back (a black-holed connection)."""

    def __init__(self) -> None:
        self.host = "https://lease.test"
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.hang = threading.Event()  # set: requests block until released
        self.release = threading.Event()
        self.timeouts: list[float | None] = []

    def raw(self, method: str, url: str, *, body: Any = None, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        if self.hang.is_set():
            self.release.wait(timeout)
            raise TimeoutError(f"{method} {url}: no answer in {timeout} s")
        if method == "GET":
            if self.lease is None:
                raise ApiException(status=404)
            return copy.deepcopy(self.lease)
        if method == "POST" and self.lease is not None:
            raise ApiException(status=409)
        if method == "PUT" and str(body["metadata"].get("resourceVersion")) != str(self.version):
            raise ApiException(status=409)
        self.version += 1
        self.lease = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": str(self.version)},
        }
        return copy.deepcopy(self.lease)


FAST = Timing(lease_duration=1.5, renew_deadline=1.0, retry_period=0.2)


def test_a_hung_renewal_ends_leadership_at_the_deadline() -> None:
    """Before, a renewal waited on the 30 s read timeout and urllib3's retries, and the
    deadline was judged only after it returned: a leader on a hung connection went on for
    about two minutes while its successor took over after 15 s."""
    server = FakeLeaseServer()
    elector = LeaderElector(server, "ops", identity="me", timing=FAST)  # type: ignore[arg-type]
    elector.acquire()
    assert elector.valid()
    lost = threading.Event()
    lost_at: list[float] = []
    elector.keep_renewing(lambda: (lost_at.append(time.monotonic()), lost.set()))
    time.sleep(0.5)
    server.hang.set()
    hung_at = time.monotonic()
    assert lost.wait(5), "the watchdog never ended leadership"
    # Ended by the deadline after the last renewal, not by the request's own timeout.
    assert lost_at[0] - hung_at <= FAST.renew_deadline + 0.5
    assert not elector.valid()
    # Every Lease request was bounded by the time left, never the 30 s default.
    assert all(t is not None and t <= FAST.renew_deadline for t in server.timeouts)
    server.release.set()
    elector.release()


def test_a_renewal_answered_after_the_deadline_does_not_count() -> None:
    server = FakeLeaseServer()
    now = [0.0]
    elector = LeaderElector(
        server,
        "ops",
        identity="me",
        timing=FAST,
        clock=lambda: now[0],  # type: ignore[arg-type]
    )
    assert elector.try_acquire_or_renew() and elector.valid()
    now[0] = 5.0  # the process was stopped (SIGSTOP) past its Lease
    assert not elector.valid()
    assert not elector.try_acquire_or_renew()
    assert not elector.valid()


def test_a_write_past_the_fence_is_never_sent() -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:9"  # nothing listens: a sent request would fail
    kube = Kube(client.ApiClient(configuration))
    kube.fence = lambda: False
    with pytest.raises(Fenced, match="may no longer lead"):
        kube.raw("PUT", f"{kube.host}/api/v1/namespaces/x/configmaps/y", body={})
    with pytest.raises(Fenced):
        kube.apply({"kind": "ConfigMap", "metadata": {"name": "y", "namespace": "x"}})
