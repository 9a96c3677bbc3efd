"""Autoscaling on a real node: a burst of builds grows an autoscaled Builder from one daemon
to three and, once the burst is over, back to one; no build fails, no daemon restarts, and a
key routed before the burst is routed to the same daemon after it.

The burst is BUILDS builds of a RUN sleep of BUILD_SECONDS, CONCURRENCY at a time, each
started when one ends (as a CI queue submits them), through the Builder's Service: a build
started after a daemon was added may land on it. The daemons build two steps at a time
(maxParallelism 2), so one daemon queues what three run side by side. The same burst on a
Builder with one fixed daemon is the reference; the figures compare the two.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from buildkit_e2e import OPERATOR_CLI, host_rootfs, write_context
from node_helpers import (
    NodeBuildctl,
    builder,
    connect,
    pods_of,
    ready_builder,
    report,
)

from localcluster.api import Api, wait_for
from localnode.node import LocalNode

BUILDS = 16
CONCURRENCY = 4
BUILD_SECONDS = 20
KEY = "registry.example/team/app"
WINDOWS = {"scaleUpAfter": "10s", "scaleDownAfter": "30s"}
DAEMON_SPEC = {"buildkitd": {"maxParallelism": 2}, "cache": {"size": "2Gi"}}
DOCKERFILE = f"""\
FROM scratch AS base
COPY --from=rootfs / /

FROM base AS work
COPY input.txt /input.txt
RUN sleep {BUILD_SECONDS} && sha256sum /input.txt > /done

FROM scratch
COPY --from=work /done /out/
"""


def _build(client: NodeBuildctl, directory: Path, rootfs: Path) -> tuple[int, str]:
    context = write_context(
        directory / "context", DOCKERFILE, {"input.txt": f"input {os.urandom(8).hex()}"}
    )
    command = [
        *client.global_args(), "build", "--progress=plain",
        "--frontend", "dockerfile.v0",
        "--local", f"context={context}", "--local", f"dockerfile={context}",
        "--local", f"rootfs={rootfs}", "--opt", "context:rootfs=local:rootfs",
        "--output", f"type=oci,dest={directory / 'image.tar'}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    return result.returncode, result.stdout + result.stderr


def _burst(client: NodeBuildctl, directory: Path) -> float:
    """Run the burst; every build must succeed. Returns its wall time."""
    rootfs = host_rootfs(directory / "rootfs")
    began = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(
            pool.map(lambda i: _build(client, directory / f"b{i}", rootfs), range(BUILDS))
        )
    failed = [log[-2000:] for code, log in results if code != 0]
    assert not failed, failed[0]
    return time.monotonic() - began


def _routed(node: LocalNode, namespace: str, name: str, into: Path) -> str:
    """The daemon ``connect --key KEY`` picks, as it tells the user."""
    assert node.cluster is not None
    result = subprocess.run(
        [str(OPERATOR_CLI), "connect", name, "-n", namespace, "--key", KEY,
         "--output-dir", str(into), "--kubeconfig", str(node.cluster.kubeconfig)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"builds on daemon (\S+)", result.stderr)
    assert found, result.stderr
    return found.group(1)


class Watch:
    """The Builder's status once a second, in the background: how many daemons it had,
    when each became ready, and each pod's restarts."""

    def __init__(self, api: Api, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.ready_at: dict[str, float] = {}
        self.most = 0
        self.most_in_flight: dict[str, int] = {}
        self.restarts = 0
        self.entries: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            status = builder(self.api, self.namespace, self.name).get("status") or {}
            daemons = status.get("daemons") or []
            self.most = max(self.most, len(daemons))
            for daemon in daemons:
                if daemon.get("ready"):
                    self.ready_at.setdefault(daemon["name"], time.monotonic())
                in_flight = daemon.get("buildsInFlight") or 0
                if in_flight > self.most_in_flight.get(daemon["name"], 0):
                    self.most_in_flight[daemon["name"]] = in_flight
            self.entries = status.get("autoscale") or self.entries
            for index in range(3):
                for pod in pods_of(self.api, self.namespace, self.name, index):
                    for container in pod["status"].get("containerStatuses") or []:
                        self.restarts = max(self.restarts, container.get("restartCount", 0))
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def fixed_burst_seconds(
    host: Any,
    node: LocalNode,
    node_operator: Any,
    api: Api,
    builders_namespace: str,
    buildctl_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> float:
    """The reference: the same burst on one fixed daemon."""
    host.require_rootless()
    ready_builder(api, node, builders_namespace, "fixed", {**DAEMON_SPEC, "replicas": 1})
    into = tmp_path_factory.mktemp("fixed")
    client = connect(node, api, builders_namespace, "fixed", into).client(node, buildctl_bin)
    seconds = _burst(client, into)
    api.delete(f"/apis/buildkit.dev/v1alpha1/namespaces/{builders_namespace}/builders/fixed")
    return seconds


def test_a_burst_grows_the_builder_to_three_daemons_and_back_to_one(
    node: LocalNode,
    api: Api,
    builders_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
    fixed_burst_seconds: float,
) -> None:
    ns, name = builders_namespace, "elastic"
    spec = {**DAEMON_SPEC, "autoscale": {"minReplicas": 1, "maxReplicas": 3, **WINDOWS}}
    ready_builder(api, node, ns, name, spec, announce=True)
    client = connect(node, api, ns, name, tmp_path / "certs").client(node, buildctl_bin)
    before = _routed(node, ns, name, tmp_path / "key-before")

    watch = Watch(api, ns, name)
    try:
        began = time.monotonic()
        burst_seconds = _burst(client, tmp_path)
        during = watch.most
        second_ready = watch.ready_at.get(f"{name}-1")

        def back_to_one() -> bool:
            status = builder(api, ns, name).get("status") or {}
            entries = status.get("autoscale") or [{}]
            return entries[0].get("replicas") == 1 and status.get("ready") == "1/1"

        wait_for(back_to_one, "the Builder back to one daemon", 240, interval=2)
        back = time.monotonic()
    finally:
        watch.stop()

    assert during == 3, f"the Builder grew to {during} daemons: {watch.entries}"
    assert watch.restarts == 0, "a daemon restarted"
    # status.daemons[].buildsInFlight showed the builds, on an added daemon too.
    assert {f"{name}-0", f"{name}-1"} <= set(watch.most_in_flight), watch.most_in_flight
    assert _routed(node, ns, name, tmp_path / "key-after") == before
    claims = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"]
    kept = {c["metadata"]["name"] for c in claims}
    assert {f"{name}-cache-1", f"{name}-cache-2"} <= kept, kept
    assert second_ready is not None
    report(
        f"autoscale burst ({BUILDS} builds of RUN sleep {BUILD_SECONDS}, {CONCURRENCY} at a "
        f"time, maxParallelism 2, {WINDOWS}): second daemon Ready {second_ready - began:.0f}s "
        f"after the first build was queued; burst {burst_seconds:.0f}s on 1→3 daemons against "
        f"{fixed_burst_seconds:.0f}s on one fixed daemon; back to one daemon "
        f"{back - began - burst_seconds:.0f}s after the burst"
    )
