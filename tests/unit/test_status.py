"""status: phase, conditions and stability (equal inputs give equal status: no writes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from buildkit_operator.api import Builder
from buildkit_operator.reconcile.daemon_state import daemon_state
from buildkit_operator.reconcile.status import (
    compute_status,
    failed_status,
    invalid_status,
)
from buildkit_operator.reconcile.types import Plan

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def make(**spec: Any) -> Builder:
    return Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "generation": 3},
            "spec": spec,
        }
    )


def deployment(ready: int, generation: int = 1, observed: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            **status,
        },
    }


def status_for(builder: Builder, plan: Plan, readies: list[int], **kw: Any) -> dict[str, Any]:
    daemons = [daemon_state(f"team-a-{i}", deployment(r)) for i, r in enumerate(readies)]
    return compute_status(
        builder,
        plan,
        daemons,
        certificate_not_after=kw.get("not_after"),
        previous=kw.get("previous", {}),
        now=kw.get("now", NOW),
    )


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_ready() -> None:
    s = status_for(make(replicas=2), Plan(), [1, 1], not_after=NOW + timedelta(days=365))
    assert s["phase"] == "Ready" and s["ready"] == "2/2" and s["readyReplicas"] == 2
    assert s["endpoint"] == "tcp://team-a.ci.svc:1234"
    assert s["clientSecretName"] == "team-a-client-tls"
    assert s["certificateNotAfter"] == "2027-11-24T00:00:00Z"
    assert s["observedGeneration"] == 3
    c = conditions(s)
    assert c["Ready"]["status"] == "True"
    assert c["Drifted"]["status"] == "False" and c["Degraded"]["status"] == "False"


def test_pending_while_rolling_out_then_degraded() -> None:
    s = status_for(make(replicas=2), Plan(), [0, 0])
    assert s["phase"] == "Pending" and conditions(s)["Progressing"]["status"] == "True"
    s = status_for(make(replicas=2), Plan(), [1, 0])
    assert s["phase"] == "Pending" and "team-a-1" in conditions(s)["Progressing"]["message"]
    # Rolled out, then not ready (a crashing pod): no progress, a degraded Builder.
    done = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    crashed = deployment(0, updatedReplicas=1, unavailableReplicas=1, conditions=[done])
    daemons = [daemon_state("team-a-0", deployment(1)), daemon_state("team-a-1", crashed)]
    s = compute_status(
        make(replicas=2), Plan(), daemons, certificate_not_after=None, previous={}, now=NOW
    )
    assert s["phase"] == "Degraded" and "team-a-1" in s["message"]
    assert conditions(s)["Degraded"]["status"] == "True"
    assert conditions(s)["Progressing"]["status"] == "False"


def test_failed_rollout_is_degraded_with_the_reason() -> None:
    failing = deployment(
        0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "x" has timed out progressing.',
            }
        ],
    )
    s = compute_status(
        make(), Plan(), [daemon_state("team-a-0", failing)],
        certificate_not_after=None, previous={}, now=NOW,
    )  # fmt: skip
    assert s["phase"] == "Degraded" and "timed out progressing" in s["message"]


def test_stale_generation_is_not_ready() -> None:
    state = daemon_state("team-a-0", deployment(1, generation=2, observed=1))
    assert not state.ready


def test_missing_and_drifted_say_what_to_do() -> None:
    s = status_for(make(noCreate=True), Plan(missing=("Deployment team-a-0",)), [])
    assert s["phase"] == "Missing" and "noCreate" in s["message"] and "team-a-0" in s["message"]
    drift = Plan(drifted=("Deployment team-a-0: spec.template.spec.containers[buildkitd].image",))
    s = status_for(make(noRecreate=True), drift, [1])
    assert s["phase"] == "Drifted" and s["driftedFields"] == list(drift.drifted)
    assert conditions(s)["Drifted"]["status"] == "True"
    assert "set noRecreate to false" in s["message"]


def test_same_world_same_status_keeps_transition_times() -> None:
    first = status_for(make(), Plan(), [1])
    later = status_for(make(), Plan(), [1], previous=first, now=NOW + timedelta(hours=1))
    assert later == first
    degraded = status_for(make(), Plan(), [0], previous=first, now=NOW + timedelta(hours=2))
    assert conditions(degraded)["Ready"]["lastTransitionTime"] == "2026-11-24T02:00:00Z"


def test_invalid_keeps_what_describes_the_running_builder() -> None:
    running = status_for(make(), Plan(), [1])
    s = invalid_status(
        ["spec.buildkitd.config: not valid TOML"], generation=4, previous=running, now=NOW
    )
    assert s["phase"] == "Invalid" and "spec.buildkitd.config" in s["message"]
    assert s["endpoint"] == running["endpoint"] and s["readyReplicas"] == 1
    assert conditions(s)["Ready"]["reason"] == "InvalidSpec"
    assert (
        invalid_status(["spec.buildkitd.config: not valid TOML"], generation=4, previous=s, now=NOW)
        == s
    )


def test_tls_disabled_has_no_client_secret() -> None:
    assert "clientSecretName" not in status_for(make(tls={"mode": "disabled"}), Plan(), [1])


def test_kstatus_reads_reconciling_and_stalled() -> None:
    """kstatus (Flux health checks) reads Reconciling and Stalled before anything else."""
    rolling = conditions(status_for(make(), Plan(), [0]))
    assert rolling["Reconciling"]["status"] == "True" and rolling["Stalled"]["status"] == "False"
    done = conditions(status_for(make(), Plan(), [1]))
    assert done["Reconciling"]["status"] == "False" and done["Stalled"]["status"] == "False"
    held = conditions(status_for(make(noRecreate=True), Plan(drifted=("Service x: spec",)), [1]))
    assert held["Stalled"]["status"] == "True" and held["Ready"]["status"] == "False"
    invalid = conditions(invalid_status(["spec.x: bad"], generation=2, previous={}, now=NOW))
    assert invalid["Stalled"]["status"] == "True"


def test_a_pass_cut_short_no_longer_claims_ready() -> None:
    """A timeout or a refused read mid-pass: the Builder was Ready, and its status kept
    saying so. Now Ready is False with the cause, and what describes the daemons stays."""
    ready = status_for(make(replicas=2), Plan(), [1, 1], not_after=NOW + timedelta(days=365))
    later = NOW + timedelta(minutes=5)
    s = failed_status("403 secrets is forbidden", generation=4, previous=ready, now=later)
    c = conditions(s)
    assert s["phase"] == "Degraded" and "403 secrets is forbidden" in s["message"]
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ApiError"
    assert c["Degraded"]["status"] == "True" and c["Stalled"]["status"] == "True"
    assert c["Ready"]["lastTransitionTime"] == "2026-11-24T00:05:00Z"
    assert s["ready"] == "2/2" and s["endpoint"] == ready["endpoint"]
    assert s["observedGeneration"] == 4


def test_a_daemon_without_its_user_namespace_is_degraded_even_at_rest() -> None:
    """Scaled to zero for want of hostUsers, it would otherwise read as an idle Builder at
    rest; the report names the field and the Kubernetes version."""
    unsafe = ["Deployment team-a-0: spec.template.spec.hostUsers is not kept (Kubernetes v1.36.3)"]
    daemons = [daemon_state("team-a-0", deployment(0))]
    s = compute_status(
        make(), Plan(), daemons, certificate_not_after=None, previous={}, now=NOW, unsafe=unsafe
    )
    assert s["phase"] == "Degraded"
    degraded = conditions(s)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "UserNamespaceNotKept"
    assert "spec.template.spec.hostUsers" in degraded["message"]
    assert "v1.36.3" in degraded["message"]


def test_putting_a_daemon_to_sleep_is_not_a_rollout() -> None:
    """The pass that scales an idle daemon to zero patches its Deployment; the Builder it
    leaves is at rest, not rolling out (it read Pending for one pass, so every sleep
    flickered Ready, Pending, Ready, with an Event each way)."""
    from buildkit_operator.reconcile.types import Action

    asleep = {"metadata": {"generation": 2}, "spec": {"replicas": 0}, "status": {}}
    patch = Action(
        "patch", "Deployment", "team-a-0", asleep, "spec.replicas differs", ("spec.replicas",)
    )
    daemons = [daemon_state("team-a-0", asleep, idle=True)]
    s = compute_status(
        make(idleTimeout="1h"), Plan(actions=(patch,)), daemons,
        certificate_not_after=None, previous={}, now=NOW,
    )  # fmt: skip
    assert s["phase"] == "Ready", s["message"]
    assert conditions(s)["Progressing"]["status"] == "False"
    assert "1 idle" in s["message"]
    # A daemon that runs and is patched is still rolling out.
    running = [daemon_state("team-a-0", deployment(1, generation=2, observed=1))]
    s = compute_status(
        make(idleTimeout="1h"), Plan(actions=(patch,)), running,
        certificate_not_after=None, previous={}, now=NOW,
    )  # fmt: skip
    assert s["phase"] == "Pending" and conditions(s)["Progressing"]["status"] == "True"
