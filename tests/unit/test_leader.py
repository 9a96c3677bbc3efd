"""Leader election's pure parts: who may take the Lease, the timing's order, the flags."""

from __future__ import annotations

import pytest

from buildkit_operator.cli.main import UsageError, build_parser, election_from
from buildkit_operator.cluster.lease import Timing, may_take


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
