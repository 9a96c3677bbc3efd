"""Failover benchmark: two operator processes, the active one SIGKILLed (and SIGTERMed),
measured for the two ways Kopf operators elect one active replica, side by side on one
local control plane:

- ``lease``: ``buildkit-operator run --leader-elect`` (a coordination.k8s.io Lease; only
  the holder runs Kopf), the way the chart runs it;
- ``peering``: Kopf's own priority-based peering (a KopfPeering object; every replica
  runs Kopf and the lower priority pauses its handlers), with a minimal Kopf operator on
  Builder events, its peering lifetime set to the Lease's duration.

Printed: seconds from the kill until the other process is active, per round; and whether
equal peering priorities leave any process active at all.

Usage: ``python bench/failover.py [--rounds 3] [--lease-duration 15]``. JSON lands in
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from localcluster.binaries import build_tool_paths  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402

OPERATOR = REPO / ".venv" / "bin" / "buildkit-operator"

PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"plural": "kopfpeerings", "singular": "kopfpeering", "kind": "KopfPeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}

# A minimal Kopf operator: logs each Builder event it handles, so a paused one is visible.
PEER_SCRIPT = """
import logging, os
import kopf

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.peering.lifetime = int(os.environ["PEERING_LIFETIME"])
    settings.posting.enabled = False
    settings.scanning.disabled = True

@kopf.on.event("buildkit.dev", "v1alpha1", "builders")
def event(event, **_):
    logging.info("HANDLED %s", event["object"]["metadata"]["name"])
"""


class Proc:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "ab") as out:
            self.p = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            return
        self.p.wait(timeout=30)


def wait(check: Any, timeout: float, interval: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError


def lease_round(
    cluster: LocalCluster, ns: str, tmp: Path, n: int, duration: int
) -> dict[str, float]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    args = [
        str(OPERATOR), "run", "-A", "--leader-elect", f"--leader-election-namespace={ns}",
        f"--leader-election-id=bench-{n}", f"--lease-duration={duration}",
        f"--renew-deadline={max(2, duration * 2 // 3)}",
    ]  # fmt: skip
    procs = [Proc(args, env, tmp / f"lease-{n}-{i}.log") for i in range(2)]
    result: dict[str, float] = {}
    try:

        def leads(p: Proc) -> bool:
            return bool(re.search(r"leader election: \S+ leads", p.log()))

        wait(lambda: any(leads(p) for p in procs), 60)
        leader, standby = (procs[0], procs[1]) if leads(procs[0]) else (procs[1], procs[0])
        time.sleep(3)
        killed = time.monotonic()
        leader.signal(signal.SIGKILL)
        wait(lambda: leads(standby), 4 * duration)
        result["sigkill"] = time.monotonic() - killed
        restarted = Proc(args, env, tmp / f"lease-{n}-restarted.log")
        procs.append(restarted)
        wait(lambda: "waits for Lease" in restarted.log(), 30)
        time.sleep(3)
        stopped = time.monotonic()
        standby.signal(signal.SIGTERM)
        wait(lambda: leads(restarted), 4 * duration)
        result["sigterm"] = time.monotonic() - stopped
    finally:
        for p in procs:
            p.signal(signal.SIGKILL)
    return result


def peering_round(
    cluster: LocalCluster, ns: str, tmp: Path, n: int, lifetime: int, script: Path
) -> dict[str, float]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PEERING_LIFETIME": str(lifetime)}
    name = f"bench-{n}"
    cluster.api.create(
        f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name}},
    )

    def start(priority: int, tag: str) -> Proc:
        command = [
            sys.executable, "-m", "kopf", "run", "--namespace", ns, "--peering", name,
            "--priority", str(priority), "--verbose", str(script),
        ]  # fmt: skip
        return Proc(command, env, tmp / f"peering-{n}-{tag}.log")

    high = start(200, "high")
    procs = [high]
    try:
        wait(lambda: "HANDLED" in high.log() or "Keep-alive" in high.log(), 60)
        low = start(100, "low")
        procs.append(low)
        # It starts paused, and stays so while the higher priority keeps alive.
        wait(lambda: "Keep-alive in" in low.log(), 60)
        time.sleep(3)
        if "Resuming operations" in low.log():
            raise AssertionError("the lower priority resumed beside the higher one")
        killed = time.monotonic()
        high.signal(signal.SIGKILL)
        wait(lambda: "Resuming operations" in low.log(), 6 * lifetime, interval=0.1)
        return {"sigkill": time.monotonic() - killed}
    finally:
        for p in procs:
            p.signal(signal.SIGKILL)


def equal_priorities(cluster: LocalCluster, ns: str, tmp: Path, lifetime: int, script: Path) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PEERING_LIFETIME": str(lifetime)}
    cluster.api.create(
        f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "equal"}},
    )
    command = [
        sys.executable, "-m", "kopf", "run", "--namespace", ns, "--peering", "equal",
        "--priority", "100", "--verbose", str(script),
    ]  # fmt: skip
    procs = [Proc(command, env, tmp / f"equal-{i}.log") for i in range(2)]
    try:
        time.sleep(2 * lifetime)
        # Each starts paused; a second one of equal priority pauses the first again.
        active = [
            p.log().rfind("Resuming operations") > p.log().rfind("Pausing all operators")
            for p in procs
        ]
        return f"{sum(active)} of 2 active with equal priorities (100)"
    finally:
        for p in procs:
            p.signal(signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease-duration", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bko-failover-") as tmpdir:
        tmp = Path(tmpdir)
        cluster = LocalCluster(tmp / "cluster", build_tool_paths(), die_with_parent=True)
        cluster.start()
        try:
            ns = "failover"
            cluster.api.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
            cluster.kubectl()(
                "apply", "--server-side", "-f", str(REPO / "crds"), "-f", "-",
                input=json.dumps(PEERING_CRD),
            )  # fmt: skip
            time.sleep(2)
            script = tmp / "peer.py"
            script.write_text(PEER_SCRIPT)
            lease = [
                lease_round(cluster, ns, tmp, n, args.lease_duration) for n in range(args.rounds)
            ]
            peering = [
                peering_round(cluster, ns, tmp, n, args.lease_duration, script)
                for n in range(args.rounds)
            ]
            equal = equal_priorities(cluster, ns, tmp, args.lease_duration, script)
        finally:
            cluster.stop()
    figures = {
        "lease_duration_or_lifetime": args.lease_duration,
        "lease_sigkill": [round(r["sigkill"], 2) for r in lease],
        "lease_sigterm": [round(r["sigterm"], 2) for r in lease],
        "peering_sigkill": [round(r["sigkill"], 2) for r in peering],
        "peering_equal_priorities": equal,
    }
    print(
        f"failover, {args.rounds} rounds, lease duration / peering lifetime {args.lease_duration}s"
    )
    for key in ("lease_sigkill", "lease_sigterm", "peering_sigkill"):
        values = figures[key]
        print(f"  {key:18} median {statistics.median(values):5.1f}s  all {values}")
    print(f"  peering, equal priorities: {equal}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = REPO / "bench" / "results" / f"failover-{stamp}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
