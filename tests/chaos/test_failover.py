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


def _leader(a: Replica, b: Replica) -> tuple[Replica, Replica]:
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
    a = replicas("a")
    a.wait_for_log(r"waits for Lease")
    b = replicas("b")
    b.wait_for_log(r"waits for Lease")
    leader, standby = _leader(a, b)
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
    assert audit.writes([a.user, b.user], since, namespace) == []
    renewals = audit.writes([a.user, b.user], since)
    assert renewals and all(f"/namespaces/{operator_ns}/leases/" in w for w in renewals), renewals
