"""The autoscaler's decision over recorded activity series: a burst, a lull, a flapping load,
an operator restart mid-way; and what scaling leaves alone (routing of other keys, cache
claims, the running daemons' pods).

A series is replayed as the operator sees it: every POLL seconds each daemon's activity
(builds in flight, last build) as ``buildkit.activity`` reports it, the daemon count and
``busySince`` carried from pass to pass only through the status entry (text), as they are
across passes and restarts. An added daemon is ready ``READY_AFTER`` seconds after it was
decided (an image pull, buildkitd's start).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from buildkit_operator.api import Builder
from buildkit_operator.api.autoscale import AutoscaleSpec
from buildkit_operator.api.daemons import Activity, daemon_names, with_counts
from buildkit_operator.buildkit.routing import pick
from buildkit_operator.reconcile.autoscale import Decision, Seen, current_count, decide
from buildkit_operator.reconcile.idle import format_time, parse_time
from buildkit_operator.reconcile.plan import plan
from buildkit_operator.render import render_builder

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
POLL = 10
READY_AFTER = 20


def spec(**fields: object) -> AutoscaleSpec:
    return AutoscaleSpec.model_validate(
        {"minReplicas": 1, "maxReplicas": 3, "scaleUpAfter": "30s", "scaleDownAfter": "5m"} | fields
    )


@dataclass
class Cluster:
    """The daemons as the operator would observe them, driven by a load of concurrent
    builds shared among the ready daemons."""

    count: int
    created: dict[int, datetime] = field(default_factory=dict)
    last_build: dict[int, datetime] = field(default_factory=dict)
    in_flight: dict[int, int] = field(default_factory=dict)

    def ready(self, index: int, now: datetime) -> bool:
        made = self.created.get(index)
        return made is None or (now - made).total_seconds() >= READY_AFTER

    def step(self, now: datetime, load: int) -> None:
        ready = [i for i in range(self.count) if self.ready(i, now)]
        self.in_flight = {}
        for rank, index in enumerate(ready):
            share = load // len(ready) + (1 if rank < load % len(ready) else 0)
            self.in_flight[index] = share
            if share:
                self.last_build[index] = now

    def seen(self, now: datetime) -> list[Seen]:
        return [
            Seen(
                ready=self.ready(i, now),
                activity=Activity(self.in_flight.get(i, 0), self.last_build.get(i))
                if self.ready(i, now)
                else None,
                started=self.created.get(i, T0) + timedelta(seconds=READY_AFTER),
            )
            for i in range(self.count)
        ]

    def apply(self, replicas: int, now: datetime) -> None:
        for index in range(self.count, replicas):
            self.created[index] = now
        for index in range(replicas, self.count):
            self.created.pop(index, None)
            self.last_build.pop(index, None)
        self.count = replicas


def replay(
    autoscale: AutoscaleSpec,
    loads: list[int],
    *,
    start: int = 1,
    restart_at: int | None = None,
    status_lost: bool = False,
) -> tuple[list[int], list[Decision]]:
    """The daemon count after each pass, and the decisions that scaled. ``restart_at``:
    the pass at which the operator restarts (keeping only the status); ``status_lost``:
    the status is gone too, only the Deployments remain."""
    cluster = Cluster(start)
    status: dict[str, object] = {}
    counts, scaled = [], []
    for step, load in enumerate(loads):
        now = T0 + timedelta(seconds=POLL * step)
        if step == restart_at and status_lost:
            status = {}
        cluster.step(now, load)
        remembered = status.get("replicas")
        current = current_count(remembered if isinstance(remembered, int) else None, cluster.count)
        decision = decide(
            autoscale, current, cluster.seen(now), parse_time(status.get("busySince")), now
        )
        status = {
            "replicas": decision.replicas,
            "busySince": format_time(decision.busy_since) if decision.busy_since else None,
        }
        cluster.apply(decision.replicas, now)
        counts.append(decision.replicas)
        if decision.scaled:
            scaled.append(decision)
    return counts, scaled


def minutes(n: float, load: int) -> list[int]:
    return [load] * math.ceil(n * 60 / POLL)


def test_a_burst_grows_one_daemon_at_a_time_to_max_and_a_lull_shrinks_back_to_min() -> None:
    counts, scaled = replay(spec(), minutes(4, 20) + minutes(20, 0))
    assert max(counts) == 3 and counts[-1] == 1
    # One at a time: every change is one daemon.
    assert all(abs(b - a) <= 1 for a, b in itertools.pairwise(counts))
    assert [d.scaled for d in scaled] == ["ScaledUp", "ScaledUp", "ScaledDown", "ScaledDown"]
    # Not before every daemon was building for scaleUpAfter (30s), the first poll seeing it
    # at 0s: the fourth pass (30s) adds the second daemon.
    assert counts[:4] == [1, 1, 1, 2]
    # The next one only once the added daemon is ready and building for 30s too.
    up2 = counts.index(3)
    assert up2 * POLL >= 30 + READY_AFTER + 30
    # Down only after scaleDownAfter (5m) of no build on the highest daemon.
    burst_end = len(minutes(4, 20))
    first_down = next(i for i in range(burst_end, len(counts)) if counts[i] < 3)
    assert (first_down - burst_end + 1) * POLL >= 5 * 60
    assert "its cache claim is kept" in scaled[2].message
    assert "added daemon 1" in scaled[0].message and "removed daemon 2" in scaled[2].message


def test_a_short_burst_is_served_by_the_daemons_there_are() -> None:
    counts, scaled = replay(spec(), [0, 5, 5, 5, 0, 0] * 10)
    assert set(counts) == {1} and scaled == []


def test_a_flapping_load_never_scales() -> None:
    """Busy and idle in turn, faster than either window: hysteresis keeps the count."""
    counts, scaled = replay(spec(), [4, 4, 0] * 40, start=2)
    assert set(counts) == {2} and scaled == []


def test_a_single_idle_daemon_blocks_scaling_up() -> None:
    """Load the two daemons cannot both take (one build): never every daemon busy."""
    counts, _ = replay(spec(scaleDownAfter="1h"), minutes(10, 1), start=2)
    assert set(counts) == {2}


def test_max_and_min_bound_the_count() -> None:
    counts, _ = replay(spec(maxReplicas=2), minutes(10, 50) + minutes(30, 0), start=1)
    assert max(counts) == 2 and counts[-1] == 1
    counts, scaled = replay(spec(minReplicas=2), minutes(1, 0), start=1)
    assert counts[0] == 2  # brought up to minReplicas at once
    assert scaled[0].scaled == "ScaledUp" and "keep within minReplicas 2" in scaled[0].message
    counts, scaled = replay(spec(maxReplicas=2), minutes(1, 9), start=4)
    assert counts[0] == 2 and scaled[0].scaled == "ScaledDown"


def test_min_zero_keeps_one_daemon_to_sleep() -> None:
    counts, _ = replay(spec(minReplicas=0), minutes(30, 0), start=3)
    assert counts[-1] == 1


def test_an_operator_restart_mid_window_decides_the_same() -> None:
    """Only the status survives a restart; the decisions are the same as without one."""
    loads = minutes(4, 20) + minutes(20, 0)
    reference, _ = replay(spec(), loads)
    for restart in (2, 5, 12, 30, 60):
        assert replay(spec(), loads, restart_at=restart)[0] == reference, restart


def test_a_lost_status_neither_kills_a_daemon_nor_flaps() -> None:
    """With the status gone the count is the Deployments there are, and the busy window
    starts again: scaling up comes later, never a removal of a daemon that builds."""
    loads = minutes(4, 20) + minutes(20, 0)
    reference, _ = replay(spec(), loads)
    counts, scaled = replay(spec(), loads, restart_at=5, status_lost=True)
    assert counts[4] == reference[4] and counts[5] == counts[4]
    assert counts[-1] == 1
    assert all(abs(b - a) <= 1 for a, b in itertools.pairwise(counts))
    assert [d.scaled for d in scaled].count("ScaledUp") == 2


def test_a_building_or_unknown_daemon_is_never_removed() -> None:
    now = T0 + timedelta(hours=2)
    idle = Activity(0, T0)
    building = Activity(1, now)
    unknown = Activity(None, None, "DEADLINE_EXCEEDED")
    for top in (building, unknown, None):
        seen = [Seen(True, activity=idle, started=T0), Seen(True, activity=top, started=T0)]
        decision = decide(spec(), 2, seen, None, now)
        assert decision.replicas == 2, top
    seen = [Seen(True, activity=idle, started=T0), Seen(True, activity=idle, started=T0)]
    assert decide(spec(), 2, seen, None, now).replicas == 1


def test_a_daemon_that_never_built_counts_idle_from_its_start() -> None:
    started = T0
    seen = [
        Seen(True, activity=Activity(0, T0), started=T0),
        Seen(True, activity=Activity(0), started=started),
    ]
    assert decide(spec(), 2, seen, None, started + timedelta(minutes=4)).replicas == 2
    assert decide(spec(), 2, seen, None, started + timedelta(minutes=5)).replicas == 1


def test_the_message_is_stable_while_a_window_runs() -> None:
    """The status is not rewritten on every poll of an unchanged world."""
    busy = [Seen(True, activity=Activity(2, T0), started=T0)]
    first = decide(spec(), 1, busy, T0, T0 + timedelta(seconds=10))
    second = decide(spec(), 1, busy, T0, T0 + timedelta(seconds=20))
    assert first.message == second.message and "a daemon is added at 2026-01-05T09:00:30Z" in (
        first.message
    )
    assert first.again == 20 and second.again == 10


# --- what scaling leaves alone --------------------------------------------------------------


def builder(replicas: int) -> Builder:
    b = Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": "u-1"},
            "spec": {"autoscale": {"maxReplicas": 4}, "tls": {"mode": "disabled"}},
        }
    )
    return with_counts(b, {None: replicas})


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 2), (1, 2), (4, 3)])
def test_routing_moves_keys_only_to_or_from_the_added_or_removed_daemon(
    before: int, after: int
) -> None:
    old, new = daemon_names(builder(before)), daemon_names(builder(after))
    changed = set(old) ^ set(new)
    keys = [f"project-{i}" for i in range(2000)]
    moved = [k for k in keys if pick(k, old) != pick(k, new)]
    assert moved, "no key moved: the test proves nothing"
    for key in moved:
        assert {pick(key, old), pick(key, new)} & changed, key


def test_scaling_down_keeps_the_removed_daemons_cache_claim() -> None:
    three = render_builder(builder(3), None)
    live = {(o["kind"], o["metadata"]["name"]): o for o in three}
    two = render_builder(builder(2), None)
    the_plan = plan(builder(2).spec, two, live, builder="team-a", uid="u-1", label="team-a")
    deleted = {(a.kind, a.name) for a in the_plan.actions if a.verb == "delete"}
    assert ("Deployment", "team-a-2") in deleted
    assert not [k for k in deleted if k[0] == "PersistentVolumeClaim"], deleted


def test_scaling_leaves_the_running_daemons_untouched() -> None:
    """An added or removed daemon changes no other daemon's Deployment (no roll)."""
    two = {o["metadata"]["name"]: o for o in render_builder(builder(2), None)}
    three = {o["metadata"]["name"]: o for o in render_builder(builder(3), None)}
    for name in ("team-a-0", "team-a-1"):
        assert two[name] == three[name], name


# --- the pass's part: status in, decided Builder and status out --------------------------


def _ready_deployment(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "generation": 1, "creationTimestamp": "2026-01-05T08:00:00Z"},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }


def test_the_pass_decides_from_the_status_and_the_daemons_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two busy daemons, every daemon building since the status's busySince 40s ago: the
    pass adds a third, records it in the status entry, and carries the daemons' answers."""
    from buildkit_operator.reconcile import scaling

    asked: list[list[str]] = []

    def answers(kube: object, b: object, live: object, names: list[str]) -> dict[str, Activity]:
        asked.append(list(names))
        return {n: Activity(2, T0) for n in names}

    monkeypatch.setattr(scaling, "daemon_activity", answers)
    now = T0 + timedelta(seconds=40)
    obj = {
        "metadata": {"name": "team-a", "namespace": "ci"},
        "status": {"autoscale": [{"replicas": 2, "busySince": format_time(T0), "message": "x"}]},
    }
    live = {("Deployment", f"team-a-{i}"): _ready_deployment(f"team-a-{i}") for i in range(2)}
    result = scaling.scale(object(), builder(1), obj, live, now)  # type: ignore[arg-type]
    assert asked == [["team-a-0", "team-a-1"]]
    assert daemon_names(result.builder) == ["team-a-0", "team-a-1", "team-a-2"]
    (entry,) = result.entries
    assert entry["replicas"] == 3 and entry["lastScaleTime"] == format_time(now)
    assert "added daemon 2" in entry["lastScale"] and "busySince" not in entry
    assert [d.scaled for d in result.scaled] == ["ScaledUp"]
    status = scaling.with_builds_in_flight({"daemons": [{"name": "team-a-0"}]}, result.activity)
    assert status["daemons"] == [{"name": "team-a-0", "buildsInFlight": 2}]


def test_without_a_status_the_pass_counts_the_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    from buildkit_operator.reconcile import scaling

    monkeypatch.setattr(scaling, "daemon_activity", lambda *a: {})
    obj = {"metadata": {"name": "team-a", "namespace": "ci"}}
    live = {("Deployment", f"team-a-{i}"): _ready_deployment(f"team-a-{i}") for i in range(3)}
    result = scaling.scale(object(), builder(1), obj, live, T0)  # type: ignore[arg-type]
    assert len(daemon_names(result.builder)) == 3 and result.scaled == []
    assert result.entries[0]["replicas"] == 3
    assert "could not be asked" in result.entries[0]["message"]
