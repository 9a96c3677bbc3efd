"""Runs last in the tier: by now the default Builder's pod has been probed for a while; after
ten probe periods it must hold no zombie processes (each exec probe is a buildctl process that
has to be reaped)."""

from __future__ import annotations

import calendar
import time

from node_helpers import pod_processes, running_pod

from localcluster.api import Api
from localnode.node import LocalNode

PROBE_PERIODS = 10


def test_no_zombies_after_ten_probe_periods(
    node: LocalNode, api: Api, builders_namespace: str, rootless_builder: str
) -> None:
    pod = running_pod(api, builders_namespace, rootless_builder)
    container = pod["spec"]["containers"][0]
    period = container["readinessProbe"]["periodSeconds"]
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    began = calendar.timegm(time.strptime(started, "%Y-%m-%dT%H:%M:%SZ"))
    wait = began + PROBE_PERIODS * period + 5 - time.time()
    if wait > 0:
        print(f"\nnode: waiting {wait:.0f}s more for {PROBE_PERIODS} probe periods of {period}s")
        time.sleep(wait)
    pod = running_pod(api, builders_namespace, rootless_builder)
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, status
    processes = pod_processes(node, pod)
    zombies = [p for p in processes if p.state == "Z"]
    assert processes and not zombies, zombies
