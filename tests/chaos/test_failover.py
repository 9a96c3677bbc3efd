"""Two operator replicas, one leader: the standby writes nothing, and takes over when the
leader is SIGKILLed (after the Lease expires) or stopped (at once: the Lease is released).
The failover times are measured and printed, not asserted."""

from __future__ import annotations

import time
from collections.abc import Callable

from chaos_support import Audit, Expected, Replica, lease_holder, report, wait_converged
from harness import builder, patch_spec, wait_until

from localcluster.cluster import LocalCluster
from localcluster.kubectl import Kubectl

LEASE_DURATION = 15.0  # the chart's default, which `run --leader-elect` takes as well


def _pair(replicas: Callable[..., Replica]) -> tuple[Replica, Replica]:
    """Two replicas, each its own user, both waiting for the Lease: (leader, standby)."""
    a = replicas("a")
    a.wait_for_log(r"waits for Lease")
    b = replicas("b")
    b.wait_for_log(r"waits for Lease")
    wait_until("one replica to lead", lambda: a.leads() or b.leads(), timeout=60)
    return (a, b) if a.leads() else (b, a)


def test_one_leader_reconciles_and_the_standby_takes_over(
    chaos_cluster: LocalCluster,
    admin: Kubectl,
    workspace: tuple[str, str],
    replicas: Callable[..., Replica],
) -> None:
    namespace, operator_ns = workspace
    audit = Audit(chaos_cluster.audit_log)
    leader, standby = _pair(replicas)
    assert lease_holder(admin, operator_ns) == leader.identity()
    started = time.time()

    want = {f"ha-{i}": Expected() for i in range(3)}
    for name, spec in want.items():
        admin.apply(builder(name, namespace, **spec.spec()))
    wait_converged(admin, namespace, want, [], timeout=120)
    # Only the leader reconciled: the standby made no write at all, not even to the Lease.
    assert audit.writes([standby.user], started) == []
    assert audit.writes([leader.user], started, namespace)
    assert not standby.leads()

    # SIGKILL: no release; the standby waits for the Lease to expire on its own clock.
    killed = time.monotonic()
    leader.kill()
    want["ha-0"] = Expected(replicas=2)
    patch_spec(admin, "ha-0", namespace, want["ha-0"].spec())
    wait_until("the standby to lead", standby.leads, timeout=3 * LEASE_DURATION, interval=0.1)
    took_over = time.monotonic() - killed
    repaired = wait_converged(admin, namespace, want, [], timeout=120) + took_over
    assert lease_holder(admin, operator_ns) == standby.identity()
    report(
        f"failover after SIGKILL of the leader (lease {LEASE_DURATION:.0f}s): new leader "
        f"after {took_over:.1f}s, an edit made meanwhile reconciled after {repaired:.1f}s"
    )

    # The killed one comes back (its pod restarted) as the standby; the leader is then
    # stopped in the ordinary way and hands the Lease over at once.
    leader.start()
    leader.wait_for_log(r"waits for Lease")
    stopped = time.monotonic()
    assert standby.stop() == 0
    wait_until(
        "the restarted replica to lead", leader.leads, timeout=3 * LEASE_DURATION, interval=0.1
    )
    handed = time.monotonic() - stopped
    want["ha-1"] = Expected(parallelism=5)
    patch_spec(admin, "ha-1", namespace, want["ha-1"].spec())
    wait_converged(admin, namespace, want, [], timeout=120)
    report(f"failover after SIGTERM of the leader (Lease released): new leader after {handed:.1f}s")

    # At rest: the leader writes nothing in the Builders' namespace; its only writes are the
    # Lease renewals in its own.
    time.sleep(3)
    since = time.time()
    time.sleep(6)
    assert audit.writes([leader.user, standby.user], since, namespace) == []
    renewals = audit.writes([leader.user, standby.user], since)
    assert renewals and all(f"/namespaces/{operator_ns}/leases/" in w for w in renewals), renewals


def test_a_partitioned_leader_writes_nothing_after_its_successor(
    chaos_cluster: LocalCluster,
    admin: Kubectl,
    workspace: tuple[str, str],
    replicas: Callable[..., Replica],
) -> None:
    """The leader stopped (SIGSTOP: a hung process, or one cut off from the API server)
    past its Lease while the standby takes over and writes, then resumed: from the audit
    log, the old leader makes no write at all after its successor's first one. Each replica
    is its own user, so the log tells them apart."""
    namespace, _ = workspace
    audit = Audit(chaos_cluster.audit_log)
    leader, standby = _pair(replicas)
    want = {"part-0": Expected()}
    admin.apply(builder("part-0", namespace, **want["part-0"].spec()))
    wait_converged(admin, namespace, want, [], timeout=120)

    leader.pause()
    paused = time.time()
    # Work the old leader would do the moment it runs again: a spec change, and a
    # deleted child to repair.
    want["part-0"] = Expected(replicas=2)
    patch_spec(admin, "part-0", namespace, want["part-0"].spec())
    wait_until("the standby to lead", standby.leads, timeout=3 * LEASE_DURATION, interval=0.1)
    wait_converged(admin, namespace, want, [], timeout=120)
    audit.update()
    first = min(
        e["_when"]
        for e in audit.entries
        if e["_when"] >= paused
        and e.get("user", {}).get("username") == standby.user
        and f"/namespaces/{namespace}/" in e.get("requestURI", "")
    )
    admin("delete", "configmap", "part-0-config", "-n", namespace, "--wait=false")
    leader.resume()
    time.sleep(2 * LEASE_DURATION / 3)  # time for it to act, had it anything to write with
    wait_converged(admin, namespace, want, [], timeout=120)
    late = audit.writes([leader.user], first)
    assert late == [], f"the old leader wrote after its successor: {late}"
    # Resumed past its deadline, it knows it may have lost the Lease: it leaves, and
    # Kubernetes would restart it as a standby.
    assert not leader.running, "the old leader went on running after its Lease had passed on"
    assert "lost the Lease" in leader.log()
    report(
        f"partitioned leader (SIGSTOP {time.time() - paused:.0f}s): no write after its "
        "successor's first; it exited on resuming"
    )
