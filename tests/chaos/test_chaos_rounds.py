"""Rounds of faults while 20 Builders are created, edited and deleted: the operator (both
replicas) SIGKILLed, the API server restarted, etcd restarted, the leader of two SIGKILLed,
each at a random point of a burst of edits. After every fault everything converges and:

- each Builder has exactly one set of children, owned by it;
- no certificate still valid was re-issued (the TLS Secrets' uids and data unchanged);
- no cache claim was lost (every claim ever seen keeps its uid);
- nothing that is not the operator's was touched (foreign objects' resourceVersions);
- at rest the operator writes nothing in the Builders' namespace (audit log);
- Ready is reported only where the daemons run the current spec.

One round (each fault once, in random order) runs by default; BKO_CHAOS_ROUNDS=N runs N,
BKO_CHAOS_LONG=1 runs 10. BKO_CHAOS_SEED replays a run. The figures are printed.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Callable

from chaos_support import (
    Audit,
    Expected,
    Ledger,
    Replica,
    ledger_problems,
    report,
    wait_converged,
)
from harness import builder

from buildkit_operator.api.names import ChildNames
from localcluster.cluster import LocalCluster
from localcluster.kubectl import Kubectl, KubectlError

BUILDERS = 20
FAULTS = ("operator-kill", "apiserver-restart", "etcd-restart", "leader-kill")
CONVERGE_TIMEOUT = 240.0


def _rounds() -> int:
    if os.environ.get("BKO_CHAOS_ROUNDS"):
        return max(1, int(os.environ["BKO_CHAOS_ROUNDS"]))
    return 10 if os.environ.get("BKO_CHAOS_LONG") == "1" else 1


def _retry(action: Callable[[], object], what: str, timeout: float = 90) -> None:
    """Repeat an idempotent kubectl call until the API server takes it (it may be down)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except KubectlError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: the API server kept refusing") from None
            time.sleep(0.5)


class Workload:
    """Creates, edits and deletes the Builders at random; ``want`` is what it last wrote."""

    def __init__(self, k: Kubectl, namespace: str, rng: random.Random) -> None:
        self.k, self.namespace, self.rng = k, namespace, rng
        self.want: dict[str, Expected] = {}
        self.ops = {"create": 0, "edit": 0, "delete": 0}

    def put(self, name: str, spec: Expected) -> None:
        _retry(lambda: self.k.apply(builder(name, self.namespace, **spec.spec())), f"apply {name}")
        self.want[name] = spec

    def step(self) -> None:
        name = f"b-{self.rng.randrange(BUILDERS):02d}"
        current = self.want.get(name)
        if current is None:
            self.ops["create"] += 1
            self.put(name, Expected(self.rng.choice((1, 2)), self.rng.randint(1, 8)))
        elif self.rng.random() < 0.25:
            self.ops["delete"] += 1
            _retry(
                lambda: self.k(
                    "delete",
                    "builder",
                    name,
                    "-n",
                    self.namespace,
                    "--ignore-not-found",
                    "--wait=false",
                ),
                f"delete {name}",
            )
            del self.want[name]
        else:
            self.ops["edit"] += 1
            if self.rng.random() < 0.5:
                edited = Expected(3 - current.replicas, current.parallelism)
            else:
                edited = Expected(current.replicas, current.parallelism % 8 + 1)
            self.put(name, edited)

    def burst(self, steps: int, stop: threading.Event) -> None:
        for _ in range(steps):
            if stop.is_set():
                return
            self.step()
            time.sleep(self.rng.uniform(0.05, 0.4))


class Faults:
    """The faults, each followed by what Kubernetes would do (restart a killed pod)."""

    def __init__(self, cluster: LocalCluster, a: Replica, b: Replica) -> None:
        self.cluster, self.pair = cluster, (a, b)
        self.exits_on_lost_lease = 0
        self.failovers: list[float] = []
        # Set from an outage of the API server or etcd until the Builders converged again:
        # the only time a replica may exit on its own.
        self.outage = False

    def leader(self) -> Replica | None:
        return next((r for r in self.pair if r.leads()), None)

    def supervise(self) -> None:
        """Restart a replica that exited on its own, as Kubernetes would, only where that is
        what the operator is meant to do: a leader that could not renew its Lease through
        an API server or etcd outage exits. Any other exit is a crash, and fails the round."""
        for replica in self.pair:
            if not replica.running:
                tail = replica.log()[-4000:]
                lost = replica.returncode == 1 and "lost the Lease" in tail
                assert lost and self.outage, (
                    f"replica {replica.name} exited ({replica.returncode}) "
                    f"{'outside an outage' if lost else 'without losing its Lease'}:\n{tail}"
                )
                self.exits_on_lost_lease += 1
                replica.stop()
                replica.start()

    def inject(self, kind: str) -> None:
        if kind == "operator-kill":
            for replica in self.pair:
                replica.kill()
            time.sleep(1)
            for replica in self.pair:
                replica.start()
        elif kind == "leader-kill":
            leader = self.leader()
            assert leader is not None, "no leader before the fault"
            other = next(r for r in self.pair if r is not leader)
            killed = time.monotonic()
            leader.kill()
            deadline = killed + 90
            while not other.leads() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert other.running, f"the standby exited:\n{other.log()[-4000:]}"
            assert other.leads(), "the standby did not take over within 90 s of the kill"
            self.failovers.append(time.monotonic() - killed)
            leader.start()
        elif kind == "apiserver-restart":
            self.outage = True
            self.cluster.restart_apiserver(down_for=1)
        elif kind == "etcd-restart":
            self.outage = True
            self.cluster.restart_etcd(down_for=1)
        else:
            raise AssertionError(kind)


def _foreign(k: Kubectl, namespace: str, ledger: Ledger) -> list[str]:
    """Objects the operator must leave alone: one of a Builder's child names, unlabelled
    (that Builder is reported as Conflict), and lookalikes carrying our labels for a Builder
    that does not exist (watched, since the labels match, but not the operator's)."""
    conflicted = ChildNames("conflict")
    objects = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": conflicted.service},
         "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghost-config", "labels": {
            "app.kubernetes.io/managed-by": "buildkit-operator", "buildkit.dev/builder": "ghost"}},
         "data": {"buildkitd.toml": "debug = true\n"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b-00-tls-copy", "labels": {
            "app.kubernetes.io/managed-by": "buildkit-operator", "buildkit.dev/builder": "b-00"}},
         "stringData": {"note": "a copy someone made"}},
    ]  # fmt: skip
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        k.apply(obj)
        live = k.json("get", obj["kind"], obj["metadata"]["name"], "-n", namespace)
        ledger.foreign[f"{obj['kind']}/{obj['metadata']['name']}"] = live["metadata"][
            "resourceVersion"
        ]
    k.apply(builder("conflict", namespace, cache={"size": "1Gi"}))
    return ["conflict"]


def test_rounds_of_faults_lose_nothing(
    chaos_cluster: LocalCluster,
    admin: Kubectl,
    workspace: tuple[str, str],
    replicas: Callable[..., Replica],
) -> None:
    namespace, operator_ns = workspace
    seed = int(os.environ.get("BKO_CHAOS_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    rounds = _rounds()
    print(f"\nchaos: seed {seed} (BKO_CHAOS_SEED={seed} replays it), {rounds} round(s)")
    audit = Audit(chaos_cluster.audit_log)
    a = replicas("a")
    b = replicas("b")
    faults = Faults(chaos_cluster, a, b)
    users = [a.user, b.user]

    ledger = Ledger()
    conflicted = _foreign(admin, namespace, ledger)
    work = Workload(admin, namespace, rng)
    for i in range(BUILDERS):
        work.put(f"b-{i:02d}", Expected(rng.choice((1, 2)), rng.randint(1, 8)))
    first = wait_converged(
        admin, namespace, work.want, conflicted, CONVERGE_TIMEOUT, faults.supervise
    )
    report(f"{BUILDERS} Builders converged from nothing in {first:.1f}s")
    assert ledger_problems(admin, namespace, ledger) == []

    converge: dict[str, list[float]] = {kind: [] for kind in FAULTS}
    injected = 0
    for number in range(1, rounds + 1):
        for kind in rng.sample(FAULTS, len(FAULTS)):
            stop = threading.Event()
            steps = rng.randint(6, 14)
            worker = threading.Thread(target=work.burst, args=(steps, stop))
            worker.start()
            time.sleep(rng.uniform(0.2, 2.5))  # a random point of the burst
            began = time.monotonic()
            faults.inject(kind)
            lasted = time.monotonic() - began
            injected += 1
            worker.join(timeout=180)
            assert not worker.is_alive(), "the workload hung"
            wait_converged(
                admin, namespace, work.want, conflicted, CONVERGE_TIMEOUT, faults.supervise
            )
            faults.outage = False
            took = time.monotonic() - began  # from the fault's start: its outage included
            converge[kind].append(took)
            problems = ledger_problems(admin, namespace, ledger)
            assert problems == [], f"round {number}, after {kind}: {problems}"
            print(
                f"chaos: round {number}: {kind} (the fault itself {lasted:.1f}s) converged "
                f"{took:.1f}s after it began"
            )
        # At rest after the round: no write at all in the Builders' namespace, only the
        # leader's Lease renewals in its own.
        time.sleep(3)
        since = time.time()
        time.sleep(8)
        faults.supervise()
        at_rest = audit.writes(users, since, namespace)
        assert at_rest == [], f"round {number}: writes at rest: {at_rest[:10]}"
        others = [
            w for w in audit.writes(users, since) if f"/namespaces/{operator_ns}/leases/" not in w
        ]
        assert others == [], f"round {number}: writes at rest elsewhere: {others[:10]}"

    refused = [w for w in audit.writes(users, 0) if w.endswith("-> 403")]
    assert refused == [], f"the chart's rights refused the operator: {refused[:10]}"
    report(
        f"{rounds} round(s), {injected} faults, {sum(work.ops.values())} Builder operations "
        f"{work.ops}, {len(ledger.claims)} cache claims and {len(ledger.secrets)} TLS Secrets "
        f"kept, 3 foreign objects untouched; nothing lost (seed {seed})"
    )
    for kind, times in converge.items():
        report(
            f"converged after {kind} (from its start): median "
            f"{statistics.median(times):.1f}s, max {max(times):.1f}s over {len(times)}"
        )
    if faults.failovers:
        report(
            f"leader SIGKILLed: standby led after median "
            f"{statistics.median(faults.failovers):.1f}s, max {max(faults.failovers):.1f}s; "
            f"{faults.exits_on_lost_lease} exits on a lost Lease"
        )
