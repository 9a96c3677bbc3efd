"""No build is killed by a stop: a daemon building when its Builder changes, when its pod is
deleted or when its node is drained finishes the build first; a wedged daemon is restarted;
buildkitd's own metrics count builds.

One Builder (rootless, metrics on) serves every test of the module, in order: each test
leaves it Ready on a pod of its own. The builds run a RUN step of about BUILD_SECONDS.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from buildkit_e2e import host_rootfs, oci_image_files, write_context
from node_helpers import (
    NodeBuildctl,
    builder,
    connect,
    pod_processes,
    pods_of,
    ready_builder,
    report,
    running_pod,
    wait_builder_ready,
)

from buildkit_operator.api.names import ChildNames, selector_labels
from localcluster.api import Api, wait_for
from localnode.node import LocalNode

NAME = "drain"
BUILD_SECONDS = 30
SPEC = {"metrics": {"enabled": True}, "buildkitd": {"maxParallelism": 4}}
# The build's slow step, as `--progress=plain` prints it when the step starts.
SLOW_STEP = "RUN sleep"
DOCKERFILE = f"""\
FROM scratch AS base
COPY --from=rootfs / /

FROM base AS work
COPY input.txt /input.txt
RUN sleep {BUILD_SECONDS} && sha256sum /input.txt > /input.sha256 && echo done > /done

FROM scratch
COPY --from=work /input.sha256 /done /out/
"""


@pytest.fixture(scope="module")
def drain_builder(
    host: Any, node: LocalNode, node_operator: Any, api: Api, builders_namespace: str
) -> str:
    host.require_rootless()
    ready_builder(api, node, builders_namespace, NAME, SPEC, announce=True)
    return NAME


@pytest.fixture(scope="module")
def client(
    node: LocalNode,
    api: Api,
    builders_namespace: str,
    drain_builder: str,
    buildctl_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> NodeBuildctl:
    into = tmp_path_factory.mktemp("drain-certs")
    return connect(node, api, builders_namespace, drain_builder, into).client(node, buildctl_bin)


class SlowBuild:
    """A build of about BUILD_SECONDS started in the background, its log in a file."""

    def __init__(self, client: NodeBuildctl, directory: Path) -> None:
        self.text = f"input {os.urandom(4).hex()}"
        context = write_context(directory / "context", DOCKERFILE, {"input.txt": self.text})
        rootfs = host_rootfs(directory / "rootfs")
        self.out = directory / "image.tar"
        self.log = directory / "build.log"
        command = [
            *client.global_args(), "build", "--progress=plain",
            "--frontend", "dockerfile.v0",
            "--local", f"context={context}", "--local", f"dockerfile={context}",
            "--local", f"rootfs={rootfs}", "--opt", "context:rootfs=local:rootfs",
            "--output", f"type=oci,dest={self.out}",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        # When the client saw the build end, taken as it happens (not when a test looks).
        self.ended: float | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()

    def wait_in_flight(self) -> None:
        """Until the slow step runs on the daemon."""
        wait_for(
            lambda: SLOW_STEP in self.log.read_text(errors="replace") or self.done,
            "the slow step to start",
            120,
            interval=0.5,
        )
        assert not self.done, self.log.read_text(errors="replace")[-3000:]

    @property
    def done(self) -> bool:
        return self.process.poll() is not None

    def wait(self) -> float:
        """Wait for the end; the build must have succeeded with all its output."""
        self.process.wait(timeout=600)
        wait_for(lambda: self.ended is not None, "the build's end to be noted", 10)
        assert self.ended is not None
        ended = self.ended
        log = self.log.read_text(errors="replace")
        assert self.process.returncode == 0, log[-4000:]
        files = oci_image_files(self.out)
        assert files["/out/done"] == b"done\n", files
        assert files["/out/input.sha256"].endswith(b"  /input.txt\n"), files
        return ended

    def stop(self) -> None:
        if not self.done:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def slow_build(client: NodeBuildctl, tmp_path: Path) -> Iterator[SlowBuild]:
    build = SlowBuild(client, tmp_path)
    try:
        yield build
    finally:
        build.stop()


def _deployment(api: Api, namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = api.get(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{ChildNames(NAME).daemon(0)}"
    )
    return result


def _progressing(api: Api, namespace: str) -> dict[str, Any]:
    conditions = (builder(api, namespace, NAME).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Progressing"), {})


def _scrape(node: LocalNode, pod: dict[str, Any]) -> str:
    """GET /metrics on the pod's port named metrics, from the node's network namespace."""
    port = next(
        p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics"
    )
    url = f"http://{pod['status']['podIP']}:{port}/metrics"
    code = (
        "import sys, urllib.request as u; "
        "print(u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=10).read().decode())"
    )
    return subprocess.run(
        [*node.exec_prefix, sys.executable, "-c", code, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _builds_counted(metrics: str) -> int:
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(
            r'^buildkit_builds_total\{[^}]*status="success"[^}]*\} (\S+)$', metrics, re.M
        )
    )


def test_metrics_of_a_daemon_count_a_build(
    node: LocalNode, api: Api, builders_namespace: str, slow_build: SlowBuild
) -> None:
    pod = running_pod(api, builders_namespace, NAME)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert _builds_counted(_scrape(node, pod)) == 0
    slow_build.wait()
    counted = _builds_counted(_scrape(node, pod))
    assert counted == 1, counted
    report(
        f"/metrics of {NAME}-0 after one build: buildkit_builds_total{{status=success}} {counted}"
    )


def test_a_config_change_waits_for_the_build_then_rolls(
    api: Api, builders_namespace: str, node: LocalNode, slow_build: SlowBuild
) -> None:
    ns = builders_namespace
    pod = running_pod(api, ns, NAME)
    generation = _deployment(api, ns)["metadata"]["generation"]
    slow_build.wait_in_flight()
    changed = time.monotonic()
    api.merge_patch(
        f"/apis/buildkit.dev/v1alpha1/namespaces/{ns}/builders/{NAME}",
        {"spec": {"buildkitd": {"maxParallelism": 2}}},
    )
    reasons: set[str] = set()
    waiting: list[Any] = []
    while not slow_build.done:
        progressing = _progressing(api, ns)
        if progressing.get("status") == "True":
            reasons.add(progressing["reason"])
        waiting = waiting or (builder(api, ns, NAME).get("status") or {}).get("waitingForIdle", [])
        # The pod is not touched while it builds.
        assert _deployment(api, ns)["metadata"]["generation"] == generation
        assert [p["metadata"]["uid"] for p in pods_of(api, ns, NAME)] == [pod["metadata"]["uid"]]
        time.sleep(1)
    ended = slow_build.wait()
    assert "WaitingForIdle" in reasons, reasons
    assert waiting and waiting[0]["daemon"] == f"{NAME}-0", waiting
    assert "build(s) in flight" in waiting[0]["reason"], waiting

    def rolled() -> bool:
        pods = pods_of(api, ns, NAME)
        return bool(pods) and all(p["metadata"]["uid"] != pod["metadata"]["uid"] for p in pods)

    wait_for(rolled, "the pod to roll after the build", 120, interval=0.5)
    rolled_at = time.monotonic()
    wait_builder_ready(api, ns, NAME, node)
    assert _deployment(api, ns)["metadata"]["generation"] > generation
    report(
        f"config change held {ended - changed:.0f}s while a build ran; the pod rolled "
        f"{rolled_at - ended:.1f}s after the build ended"
    )


def _pod_gone(api: Api, namespace: str, pod: dict[str, Any]) -> bool:
    return not api.exists(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")


def test_a_deleted_pod_finishes_its_build_first(
    api: Api, builders_namespace: str, node: LocalNode, slow_build: SlowBuild
) -> None:
    ns = builders_namespace
    pod = running_pod(api, ns, NAME)
    slow_build.wait_in_flight()
    deleted = time.monotonic()
    api.delete(f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")

    def gone_at() -> float | None:
        return time.monotonic() if _pod_gone(api, ns, pod) else None

    # When the pod was first seen gone, looked for while the build still runs (looked for
    # only after the build's end, "gone" came after "ended" whatever happened).
    gone = wait_for(gone_at, "the deleted pod to go", 120 + BUILD_SECONDS, interval=0.2)
    ended = slow_build.wait()
    assert gone >= ended - 1, "the pod went before its build ended"
    wait_builder_ready(api, ns, NAME, node)
    report(
        f"deleted pod drained: stopped {gone - deleted:.0f}s after the delete, "
        f"{gone - ended:.1f}s after its build ended"
    )


def test_a_node_drain_waits_for_the_build(
    api: Api, builders_namespace: str, node: LocalNode, slow_build: SlowBuild
) -> None:
    assert node.cluster is not None
    ns = builders_namespace
    kubectl = node.cluster.kubectl()
    # One daemon: no PodDisruptionBudget (over one daemon it would let the eviction through
    # anyway); what holds the drain is the pod's preStop hook.
    assert not api.exists(
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{ChildNames(NAME).disruption_budget}"
    )
    pod = running_pod(api, ns, NAME)
    slow_build.wait_in_flight()
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(NAME).items())
    began = time.monotonic()
    try:
        # Evictions (which the PodDisruptionBudget governs) of this Builder's pods only: the
        # other Builders on the node stay as they are.
        kubectl(
            "drain", node.name, f"--pod-selector={selector}", "--ignore-daemonsets",
            "--delete-emptydir-data", "--timeout=300s", timeout=330,
        )  # fmt: skip
        drained = time.monotonic()
        # The drain returns once the pod is gone, which its preStop hook held until the
        # build ended.
        assert slow_build.done, "the drain finished while the build was still running"
        ended = slow_build.wait()
    finally:
        kubectl("uncordon", node.name)
    assert _pod_gone(api, ns, pod)
    wait_builder_ready(api, ns, NAME, node)
    report(
        f"kubectl drain took {drained - began:.0f}s, ending {drained - ended:.1f}s after the build"
    )


def test_a_wedged_daemon_turns_not_ready_and_is_restarted_without_zombies(
    api: Api, builders_namespace: str, node: LocalNode
) -> None:
    ns = builders_namespace
    pod = running_pod(api, ns, NAME)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    daemon = next(p for p in pod_processes(node, pod) if p.name == "buildkitd")
    stopped = time.monotonic()
    os.kill(daemon.pid, signal.SIGSTOP)

    def status() -> dict[str, Any]:
        live = api.get(f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")
        result: dict[str, Any] = live["status"]["containerStatuses"][0]
        return result

    try:
        wait_for(lambda: not status()["ready"], "the wedged daemon to turn NotReady", 120, 1)
        not_ready = time.monotonic()
        wait_for(lambda: status()["restartCount"] > restarts, "the wedged daemon restarted", 240, 1)
        restarted = time.monotonic()
    finally:
        if any(p.pid == daemon.pid for p in pod_processes(node, pod)):
            os.kill(daemon.pid, signal.SIGCONT)
    wait_builder_ready(api, ns, NAME, node)
    live = running_pod(api, ns, NAME)
    assert live["metadata"]["uid"] == pod["metadata"]["uid"]  # restarted in place
    processes = pod_processes(node, live)
    zombies = [p for p in processes if p.state == "Z"]
    assert processes and not zombies, zombies
    report(
        f"wedged daemon (SIGSTOP): NotReady after {not_ready - stopped:.0f}s, restarted after "
        f"{restarted - stopped:.0f}s, no zombie processes"
    )
