"""`helm install` of the chart on the real node: the operator runs from its own image (built
from the project's Dockerfile on a local Debian + Python 3.11 base) as a pod, under the
chart's ServiceAccount, RBAC and read-only root filesystem, and does its job from inside the
cluster: a Builder becomes Ready and a deleted child comes back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helm_client import Helm, helm_binary
from node_helpers import (
    Host,
    container_pid,
    pod_processes,
    read_proc,
    ready_builder,
)
from operator_process import OperatorProcess

from buildkit_operator.api.names import ChildNames
from localcluster.api import Api, wait_for
from localnode.config import NODE_LABEL
from localnode.node import LocalNode
from node_images import OPERATOR_IMAGE

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
OPERATOR_UID = 65532


@pytest.fixture
def in_cluster_only(node_operator: OperatorProcess) -> Iterator[None]:
    """The host-process operator steps aside while the chart's runs, so that only the
    in-cluster one acts; it comes back afterwards."""
    node_operator.stop()
    try:
        yield
    finally:
        node_operator.start()


def _pods(api: Api, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    )["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def test_chart_runs_the_operator_image_on_the_real_node(
    host: Host,
    node: LocalNode,
    api: Api,
    in_cluster_only: None,
    tools: Callable[..., tuple[Path, ...]],
    tmp_path: Path,
) -> None:
    host.require_rootless()
    assert node.cluster is not None
    namespace = "node-helm"
    api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    helm = Helm(helm_binary(tools), node.cluster.kubeconfig, tmp_path / "helm")
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    release = "bko"
    try:
        helm(
            "install", release, str(CHART), "--namespace", namespace,
            "--set", f"image.repository={repository}",
            "--set", f"image.tag={tag}",
            # Imported into the node's containerd; there is no registry to pull from.
            "--set", "image.pullPolicy=Never",
            "--set-string", f"nodeSelector.{NODE_LABEL.replace('.', chr(92) + '.')}=true",
            "--set", f"watchNamespaces={{{namespace}}}",
        )  # fmt: skip
        selector = "app.kubernetes.io/name=buildkit-operator"

        # The chart's default: two replicas, one leading through the Lease, one standing by
        # (both on the one node here; the anti-affinity is only preferred).
        def operator_ready() -> bool:
            pods = _pods(api, namespace, selector)
            return len(pods) == 2 and all(_ready(p) for p in pods)

        wait_for(
            operator_ready,
            "the two operator pods Ready",
            180,
            interval=1,
            on_timeout=lambda: str(_pods(api, namespace, selector)) + node.tail("kubelet"),
        )
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        lease_path = f"{leases}/{release}-buildkit-operator"
        holder = wait_for(
            lambda: api.exists(lease_path) and api.get(lease_path)["spec"].get("holderIdentity"),
            "a leader in the chart's Lease",
            120,
            interval=1,
        )
        pod = next(
            p
            for p in _pods(api, namespace, selector)
            if holder.startswith(p["metadata"]["name"] + "_")
        )
        assert pod["spec"]["nodeName"] == node.name
        assert pod["spec"]["serviceAccountName"].startswith(release)
        container = pod["spec"]["containers"][0]
        assert container["image"] == OPERATOR_IMAGE
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "livenessProbe" in container
        pid = container_pid(node, pod, container["name"])
        entry = read_proc(pid)
        assert entry.uid == OPERATOR_UID and entry.cap_eff == 0, entry
        # The read-only root filesystem, as the process sees it.
        root = next(
            line.split()
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if line.split()[4] == "/"
        )
        assert "ro" in root[5].split(","), root
        # The metrics port answers inside the cluster network.
        ip = pod["status"]["podIP"]
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        url = f"http://{ip}:{ports['metrics']}/metrics"
        fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read())"

        def scrape() -> str:
            result = subprocess.run(
                [*node.exec_prefix, sys.executable, "-c", fetch],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if result.returncode != 0:
                raise AssertionError(result.stderr.strip()[-500:])
            return result.stdout

        metrics = wait_for(scrape, f"metrics at {url}", 60, interval=2)
        assert "# TYPE" in metrics

        # The in-cluster operator at work.
        ready_builder(api, node, namespace, "in-cluster", {})
        service = ChildNames("in-cluster").service
        path = f"/api/v1/namespaces/{namespace}/services/{service}"
        old_uid = api.get(path)["metadata"]["uid"]
        api.delete(path)
        wait_for(
            lambda: api.exists(path) and api.get(path)["metadata"]["uid"] != old_uid,
            "the deleted Service to be recreated by the in-cluster operator",
            120,
            interval=1,
        )
        # Neither the leader nor the standby (its own liveness endpoint) was restarted.
        for each in _pods(api, namespace, selector):
            restarted = each["status"]["containerStatuses"][0]
            assert restarted["restartCount"] == 0, restarted
        assert all(p.uid != 0 for p in pod_processes(node, pod)), "nothing runs as root"

        # The leader's pod deleted (as a drain would): it releases the Lease on SIGTERM, the
        # standby takes over and repairs what is deleted next.
        api.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
        new_holder = wait_for(
            lambda: (
                (api.get(lease_path)["spec"].get("holderIdentity") or "") not in ("", holder)
                and api.get(lease_path)["spec"]["holderIdentity"]
            ),
            "the standby to take the Lease",
            120,
            interval=0.5,
        )
        assert not new_holder.startswith(pod["metadata"]["name"] + "_")
        old_uid = api.get(path)["metadata"]["uid"]
        api.delete(path)
        wait_for(
            lambda: api.exists(path) and api.get(path)["metadata"]["uid"] != old_uid,
            "the deleted Service to be recreated by the new leader",
            120,
            interval=1,
        )
    finally:
        helm.run("uninstall", release, "--namespace", namespace, "--wait")
        api.delete(f"/api/v1/namespaces/{namespace}")
        wait_for(
            lambda: not api.exists(f"/api/v1/namespaces/{namespace}"),
            f"namespace {namespace} to be deleted",
            180,
            interval=0.5,
        )
