"""Helpers for the tests on the real node: Builders, their pods and containers as the host
sees them, and buildctl run inside the node's network namespace (where Service IPs answer)."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from buildkit_e2e import OPERATOR_CLI, Buildctl, ClientCerts

from buildkit_operator.api.names import ChildNames, daemon_selector_labels
from cgroups import cgroup_mounts
from localcluster.api import Api, ApiError, wait_for
from localnode.node import LocalNode

# The settings kubelet writes at start: the host's must read the same after the node ran.
HOST_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom")

# Measured figures (start times, build times, the cache ratio), printed at the end of the run.
FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
    print(f"\nnode: {line}")


@dataclass(frozen=True)
class Host:
    """What this machine offers the node; a reason string where it cannot."""

    no_node: str | None
    no_rootless: str | None

    def require_rootless(self) -> None:
        """Skip the test where rootless buildkitd cannot run (no user namespaces)."""
        if self.no_rootless:
            pytest.skip(self.no_rootless)


GROUP_PATH = "/apis/buildkit.dev/v1alpha1"
READY_TIMEOUT = 300.0


def read_sysctls(keys: Sequence[str]) -> dict[str, str]:
    return {k: (Path("/proc/sys") / k).read_text().strip() for k in keys}


def create_builder(api: Api, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    api.create(
        f"{GROUP_PATH}/namespaces/{namespace}/builders",
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        },
        exist_ok=False,
    )


def ready_builder(
    api: Api,
    node: LocalNode,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    announce: bool = False,
) -> float:
    """Create Builder ``name`` and wait until it is Ready; returns the seconds that took
    (with ``announce``, reported among the figures)."""
    create_builder(api, namespace, name, spec)
    seconds = wait_builder_ready(api, namespace, name, node)
    if announce:
        report(f"Builder {name} ({spec or 'default spec'}) Ready in {seconds:.0f}s")
    return seconds


def builder(api: Api, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = api.get(f"{GROUP_PATH}/namespaces/{namespace}/builders/{name}")
    return result


def builder_ready(api: Api, namespace: str, name: str) -> bool:
    conditions = (builder(api, namespace, name).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pods_of(api: Api, namespace: str, name: str, index: int = 0) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in daemon_selector_labels(name, index).items())
    items: list[dict[str, Any]] = api.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def describe(api: Api, namespace: str, name: str, node: LocalNode) -> str:
    """What a person would look at when a Builder does not become Ready."""
    lines = [f"Builder status: {builder(api, namespace, name).get('status')}"]
    for pod in pods_of(api, namespace, name):
        lines.append(f"pod {pod['metadata']['name']}: {pod.get('status')}")
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    lines += [f"event {e.get('reason')}: {e.get('message')}" for e in events[-15:]]
    lines.append(node.tail("kubelet", 25))
    for log in sorted((node.dir / "logs" / "pods").glob(f"{namespace}_*/*/*.log")):
        lines.append(f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(lines)


def wait_builder_ready(
    api: Api, namespace: str, name: str, node: LocalNode, timeout: float = READY_TIMEOUT
) -> float:
    started = time.monotonic()
    wait_for(
        lambda: builder_ready(api, namespace, name),
        f"Builder {namespace}/{name} Ready",
        timeout,
        interval=1,
        on_timeout=lambda: describe(api, namespace, name, node),
    )
    return time.monotonic() - started


def running_pod(api: Api, namespace: str, name: str) -> dict[str, Any]:
    pods = [p for p in pods_of(api, namespace, name) if p["status"].get("phase") == "Running"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


@dataclass(frozen=True)
class Proc:
    pid: int
    uid: int
    state: str
    cap_eff: int
    cap_bnd: int
    name: str


def read_proc(pid: int) -> Proc:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return Proc(
        pid=pid,
        uid=int(fields["Uid"].split()[1]),  # effective uid, as the host sees it
        state=fields["State"].split()[0],
        cap_eff=int(fields["CapEff"], 16),
        cap_bnd=int(fields["CapBnd"], 16),
        name=fields["Name"],
    )


def pod_processes(node: LocalNode, pod: Mapping[str, Any]) -> list[Proc]:
    """Every process in the pod's cgroup (pause, the container and whatever it forked)."""
    uid = pod["metadata"]["uid"]
    pids: set[int] = set()
    for mount in cgroup_mounts().values():
        for directory in mount.rglob(f"pod{uid}"):
            for procs in directory.rglob("cgroup.procs"):
                pids.update(int(p) for p in procs.read_text().split())
        if pids:
            break
    out = []
    for pid in sorted(pids):
        try:
            out.append(read_proc(pid))
        except (OSError, KeyError):
            continue  # exited meanwhile
    return out


def container_pid(node: LocalNode, pod: Mapping[str, Any], container: str = "buildkitd") -> int:
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    container_id = status["containerID"].split("://", 1)[1]
    state = node.read_state()
    assert state is not None
    listing = subprocess.run(
        [state.binaries["ctr"], "--address", str(node.containerd_socket), "-n", "k8s.io",
         "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    for line in listing.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == container_id:
            return int(parts[1])
    raise AssertionError(f"no task for container {container_id}:\n{listing}")


def mount_points(pid: int) -> list[str]:
    return [line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]


class NodeBuildctl(Buildctl):
    """buildctl run inside the node's network namespace, where Service IPs answer."""

    def __init__(
        self,
        node: LocalNode,
        binary: Path,
        address: str,
        certs: ClientCerts | None,
        server_name: str | None,
    ) -> None:
        super().__init__(binary, address, certs, server_name)
        self.node = node

    def global_args(self) -> list[str]:
        return [*self.node.exec_prefix, *super().global_args()]


@dataclass(frozen=True)
class Connection:
    """What ``buildkit-operator connect`` printed, pointed at the Service's cluster IP."""

    address: str
    server_name: str
    certs: ClientCerts
    printed: str

    def client(self, node: LocalNode, binary: Path) -> NodeBuildctl:
        """buildctl at this address, with these certificates, in the node's namespace."""
        return NodeBuildctl(node, binary, self.address, self.certs, self.server_name)


def connect(node: LocalNode, api: Api, namespace: str, name: str, into: Path) -> Connection:
    """Run ``buildkit-operator connect`` as a user would (with the admin kubeconfig of the
    node's cluster), and take its buildctl line.

    The printed address names the Service by its DNS name; the node has no cluster DNS, so
    the host part is replaced by the Service's cluster IP (what that name resolves to in a
    cluster), keeping the port and the TLS server name as printed."""
    assert node.cluster is not None
    result = subprocess.run(
        [str(OPERATOR_CLI), "connect", name, "-n", namespace, "--output-dir", str(into),
         "--kubeconfig", str(node.cluster.kubeconfig)],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("buildctl "))
    argv = shlex.split(line)

    def flag(option: str) -> str:
        return argv[argv.index(option) + 1]

    printed = urlsplit(flag("--addr"))
    service = api.get(f"/api/v1/namespaces/{namespace}/services/{ChildNames(name).service}")
    cluster_ip = service["spec"]["clusterIP"]
    return Connection(
        address=f"tcp://{cluster_ip}:{printed.port}",
        server_name=flag("--tlsservername"),
        certs=ClientCerts(
            ca=Path(flag("--tlscacert")), cert=Path(flag("--tlscert")), key=Path(flag("--tlskey"))
        ),
        printed=line,
    )


def delete_pod_and_wait(api: Api, namespace: str, name: str, node: LocalNode) -> dict[str, Any]:
    """Delete the daemon's pod; return its replacement once the Builder is Ready again."""
    old = running_pod(api, namespace, name)
    api.delete(f"/api/v1/namespaces/{namespace}/pods/{old['metadata']['name']}")

    def replaced() -> bool:
        try:
            pods = pods_of(api, namespace, name)
        except ApiError:
            return False
        return any(
            p["metadata"]["uid"] != old["metadata"]["uid"]
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in p["status"].get("conditions") or []
            )
            for p in pods
        )

    wait_for(
        replaced,
        f"a new Ready pod for {namespace}/{name}",
        READY_TIMEOUT,
        interval=1,
        on_timeout=lambda: describe(api, namespace, name, node),
    )
    old_path = f"/api/v1/namespaces/{namespace}/pods/{old['metadata']['name']}"
    wait_for(lambda: not api.exists(old_path), "the old pod to go", 120)
    return running_pod(api, namespace, name)
