"""plan: a change that stops a daemon waits while it builds, and daemons stop one at a time.

The live world is a Builder's children as rendered from its previous spec, with the
Deployments reporting what the Deployment controller reports of a settled rollout; the
activity of each daemon is given as the operator would have gathered it.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from buildkit_operator.api import Builder
from buildkit_operator.api.daemons import UNKNOWN, Activity
from buildkit_operator.pki import ensure_tls
from buildkit_operator.reconcile.plan import plan
from buildkit_operator.reconcile.types import Plan
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
UID = "u-1"
IDLE = Activity(0, NOW - timedelta(minutes=5))
BUILDING = Activity(1, NOW - timedelta(seconds=20))


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": UID},
            "spec": spec,
        }
    )


_BUNDLE = ensure_tls({}, name="team-a", server_sans=server_sans(make()), now=NOW)


def settled(o: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    o = copy.deepcopy(o)
    o["metadata"]["generation"] = generation
    if o["kind"] == "Deployment":
        o["status"] = {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        }
    return o


def world(b: Builder) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): settled(o) for o in render_builder(b, _BUNDLE)}


def decide(
    b: Builder,
    live: dict[tuple[str, str], dict[str, Any]],
    activity: dict[str, Activity] | None = None,
    held_since: dict[str, datetime] | None = None,
) -> Plan:
    return plan(
        b.spec,
        render_builder(b, _BUNDLE),
        live,
        builder="team-a",
        uid=UID,
        label="team-a",
        activity=activity,
        held_since=held_since,
        now=NOW,
    )


def touched(p: Plan) -> set[tuple[str, str]]:
    return {(a.verb, a.name) for a in p.actions if a.kind == "Deployment"}


BEFORE = {"replicas": 2}
AFTER = {"replicas": 2, "buildkitd": {"maxParallelism": 2}}


def test_a_config_change_rolls_one_idle_daemon_at_a_time() -> None:
    live = world(make(**BEFORE))
    p = decide(make(**AFTER), live, {"team-a-0": IDLE, "team-a-1": IDLE})
    assert set(p.disruptive) == {"team-a-0", "team-a-1"}
    assert touched(p) == {("patch", "team-a-0")}
    (held,) = p.held
    assert held.daemon == "team-a-1" and "team-a-0" in held.why
    assert not p.converged
    # The config itself is written at once: only what stops a daemon waits.
    assert any(a.kind == "ConfigMap" for a in p.actions)


def test_a_building_daemon_waits_and_an_idle_one_rolls_first() -> None:
    live = world(make(**BEFORE))
    p = decide(make(**AFTER), live, {"team-a-0": BUILDING, "team-a-1": IDLE})
    assert touched(p) == {("patch", "team-a-1")}
    (held,) = p.held
    assert held.daemon == "team-a-0" and held.why == "1 build(s) in flight"


def test_while_one_daemon_rolls_the_next_waits() -> None:
    live = world(make(**BEFORE))
    after = make(**AFTER)
    # Daemon 0 got the new template; its new pod is not ready yet.
    (want,) = [o for o in render_builder(after, _BUNDLE) if o["metadata"]["name"] == "team-a-0"]
    rolled = settled(want, generation=2)
    assert rolled["metadata"]["name"] == "team-a-0"
    rolled["status"] = {"observedGeneration": 2, "replicas": 1, "unavailableReplicas": 1}
    live[("Deployment", "team-a-0")] = rolled
    p = decide(after, live, {"team-a-1": IDLE})
    assert touched(p) == set()
    (held,) = p.held
    assert held.daemon == "team-a-1" and "team-a-0" in held.why


def test_a_daemon_with_no_ready_pod_is_never_held() -> None:
    """Pods that cannot be scheduled (or crash) serve no client and run no build: their
    change goes through at once, whatever the other daemons do. Before, a hand edit of such
    a daemon's template waited for the other unschedulable daemon "to finish its roll", which
    it never would."""
    live = world(make(**BEFORE))
    for name in ("team-a-0", "team-a-1"):
        live[("Deployment", name)]["status"] = {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "unavailableReplicas": 1,
        }
    p = decide(make(**AFTER), live, {"team-a-0": UNKNOWN, "team-a-1": UNKNOWN})
    assert touched(p) == {("patch", "team-a-0"), ("patch", "team-a-1")}
    assert not p.held
    # One unschedulable daemon beside a serving one: the serving one still rolls alone,
    # and only once the other has nothing left to do.
    live[("Deployment", "team-a-1")] = settled(live[("Deployment", "team-a-1")])
    p = decide(make(**AFTER), live, {"team-a-0": UNKNOWN, "team-a-1": IDLE})
    assert ("patch", "team-a-0") in touched(p)
    assert ("patch", "team-a-1") not in touched(p)


def test_a_hold_ends_after_max_wait() -> None:
    before, after = (
        make(**BEFORE, drain={"maxWaitSeconds": 60}),
        make(**AFTER, drain={"maxWaitSeconds": 60}),
    )
    live = world(before)
    building = {"team-a-0": BUILDING, "team-a-1": BUILDING}
    p = decide(after, live, building, {"team-a-0": NOW - timedelta(seconds=59)})
    assert touched(p) == set() and len(p.held) == 2
    p = decide(after, live, building, {"team-a-0": NOW - timedelta(seconds=60)})
    assert touched(p) == {("patch", "team-a-0")}
    assert [h.daemon for h in p.held] == ["team-a-1"]


def test_max_wait_zero_never_holds() -> None:
    before, after = (
        make(drain={"maxWaitSeconds": 0}),
        make(drain={"maxWaitSeconds": 0}, image="x:1"),
    )
    p = decide(after, world(before), {"team-a-0": BUILDING})
    assert touched(p) == {("patch", "team-a-0")} and not p.held


def test_a_daemon_that_cannot_be_asked_is_not_held() -> None:
    # Its preStop hook still waits for its builds.
    p = decide(make(image="x:1"), world(make()), {"team-a-0": UNKNOWN})
    assert touched(p) == {("patch", "team-a-0")} and not p.held
    p = decide(make(image="x:1"), world(make()), None)
    assert touched(p) == {("patch", "team-a-0")} and not p.held


def test_recreate_and_removal_wait_too_but_other_changes_do_not() -> None:
    live = world(make(replicas=2))
    building = {"team-a-0": BUILDING, "team-a-1": BUILDING}
    p = decide(make(replicas=1), live, building)
    assert touched(p) == set()
    assert [(h.daemon, h.what) for h in p.held] == [("team-a-1", "removal")]
    p = decide(make(rootless=False), world(make()), {"team-a-0": BUILDING})
    assert [(h.daemon, h.what) for h in p.held] == [("team-a-0", "recreate")]
    p = decide(make(service={"type": "NodePort"}), world(make()), {"team-a-0": BUILDING})
    assert {(a.verb, a.kind) for a in p.actions} == {("patch", "Service")}
    assert not p.held and not p.disruptive


def test_at_rest_nothing_is_disruptive() -> None:
    b = make(**BEFORE)
    p = decide(b, world(b))
    assert p.actions == () and p.disruptive == () and p.held == () and p.converged


def test_status_shows_what_waits_and_since_when() -> None:
    from buildkit_operator.reconcile.daemon_state import DaemonState
    from buildkit_operator.reconcile.status import compute_status

    b = make(**AFTER)
    p = decide(b, world(make(**BEFORE)), {"team-a-0": BUILDING, "team-a-1": BUILDING})
    daemons = [DaemonState("team-a-0", True), DaemonState("team-a-1", True)]
    earlier = "2026-11-24T11:59:00Z"
    previous = {"waitingForIdle": [{"daemon": "team-a-0", "since": earlier, "reason": "x"}]}
    s = compute_status(b, p, daemons, certificate_not_after=None, previous=previous, now=NOW)
    progressing = next(c for c in s["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True" and progressing["reason"] == "WaitingForIdle"
    assert "1 build(s) in flight" in progressing["message"]
    assert s["phase"] == "Pending"
    assert s["waitingForIdle"] == [
        {"daemon": "team-a-0", "since": earlier, "reason": "roll held: 1 build(s) in flight"},
        {
            "daemon": "team-a-1",
            "since": "2026-11-24T12:00:00Z",
            "reason": "roll held: 1 build(s) in flight",
        },
    ]
