"""Fixtures for the tests on a real node (hack/node.py): the Builder's pods run in containers.

- ``node_cluster``: a fresh local control plane for this tier, whose default StorageClass is
  the real node's local volumes (so a Builder with the default cache lands there).
- ``node``: the real node joined to it (containerd, kubelet, kube-proxy in their own
  namespaces); stopped at the end, and what it left on the machine is checked.
- ``node_operator``: the operator as a host process against that cluster.
- ``host``: what this machine can do (root, user namespaces, overlayfs); tests that need what
  it cannot do are skipped with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
for extra in (REPO / "tests" / "e2e", REPO / "tests" / "integration"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from node_helpers import (  # noqa: E402
    FIGURES,
    HOST_SYSCTLS,
    Host,
    read_sysctls,
    ready_builder,
    report,
)
from operator_process import OperatorProcess, operator_binary  # noqa: E402

from localcluster.api import Api, wait_for  # noqa: E402
from localcluster.cluster import LocalCluster  # noqa: E402
from localnode.binaries import NODE_TOOLS  # noqa: E402
from localnode.config import APISERVER_PORT, LOCAL_STORAGE_CLASS  # noqa: E402
from localnode.node import LocalNode  # noqa: E402

HACK = REPO / "hack"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("real node figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _userns_unavailable() -> str | None:
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True
    )
    if result.returncode != 0:
        return f"user namespaces unavailable ({result.stderr.strip()}): no rootless buildkitd"
    return None


def _node_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the real node needs root (network and mount namespaces, cgroups)"
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems:
        return "the kernel has no overlayfs: containerd's snapshotter cannot run"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no cgroup file system at /sys/fs/cgroup"
    return None


@pytest.fixture(scope="session")
def host() -> Host:
    no_node = _node_unavailable()
    if no_node is None:
        print("node: installing runtime packages (hack/install-runtime-deps.sh --node)")
        result = subprocess.run(
            [str(HACK / "install-runtime-deps.sh"), "--node"], stderr=None, check=False
        )
        if result.returncode != 0:
            pytest.fail(
                f"hack/install-runtime-deps.sh --node failed ({result.returncode})", pytrace=False
            )
    return Host(no_node=no_node, no_rootless=no_node or _userns_unavailable())


@pytest.fixture(scope="session")
def host_sysctls() -> dict[str, str]:
    """The host's values of the settings kubelet would write, read before the node starts."""
    return read_sysctls(HOST_SYSCTLS)


@pytest.fixture(scope="session")
def node_cluster(
    host: Host, local_cluster: Callable[..., AbstractContextManager[LocalCluster]]
) -> Iterator[LocalCluster]:
    if host.no_node:
        pytest.skip(host.no_node)
    with local_cluster("node-cluster", storage_classes={"standard": 4}) as local:
        yield local


@pytest.fixture(scope="session")
def node(
    node_cluster: LocalCluster,
    host_sysctls: dict[str, str],
    tools: Callable[..., tuple[Path, ...]],
) -> Iterator[LocalNode]:
    # A short directory: unix socket paths under it must stay below 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="bko-node-"))
    instance = LocalNode(
        directory,
        node_cluster,
        tools(*NODE_TOOLS),
        die_with_parent=True,
    )
    began = time.monotonic()
    try:
        instance.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)  # start() already stopped what it began
        raise
    report(f"node start (images imported into a fresh containerd): {time.monotonic() - began:.1f}s")
    # The node's local volumes become the default class: a Builder with the default cache
    # gets one, and with it the fsGroup a rootless daemon needs.
    api = node_cluster.api
    default = "storageclass.kubernetes.io/is-default-class"
    api.merge_patch(
        "/apis/storage.k8s.io/v1/storageclasses/standard",
        {"metadata": {"annotations": {default: "false"}}},
    )
    api.merge_patch(
        f"/apis/storage.k8s.io/v1/storageclasses/{LOCAL_STORAGE_CLASS}",
        {"metadata": {"annotations": {default: "true"}}},
    )
    try:
        yield instance
    finally:
        instance.stop()
        left = instance.leftovers()
        shutil.rmtree(directory, ignore_errors=True)
        assert not left, f"the node left behind: {left}"
        assert read_sysctls(HOST_SYSCTLS) == host_sysctls, "host kernel settings changed"


@pytest.fixture(scope="session")
def node_crd(node_cluster: LocalCluster) -> None:
    kubectl = node_cluster.kubectl()
    kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "builders.buildkit.dev.yaml"))
    # Polled rather than `kubectl wait`, which fails outright when it reads the CRD before
    # the API server has given it any condition.
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/builders.buildkit.dev"

    def established() -> bool:
        conditions = node_cluster.api.get(path).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, "the Builder CRD Established", 60, interval=0.5)


@pytest.fixture(scope="session")
def node_operator(
    node: LocalNode, node_crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a host process in the node's network namespace, as it would run in a
    pod: it reaches the daemons' pod IPs (to ask whether they build) and the API server
    through the node's forwarder (127.0.0.1:6443)."""
    assert node.cluster is not None
    directory = tmp_path_factory.mktemp("node-operator")
    log = directory / "operator.log"
    kubeconfig = yaml.safe_load(node.cluster.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{APISERVER_PORT}"
    (directory / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    (directory / "kubeconfig").chmod(0o600)
    env = {**os.environ, "KUBECONFIG": str(directory / "kubeconfig")}
    command = [*node.exec_prefix, str(operator_binary()), "run", "--all-namespaces"]
    proc = OperatorProcess(command, env, log).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def node_namespace(node: LocalNode, request: pytest.FixtureRequest) -> Iterator[str]:
    assert node.cluster is not None
    name = f"node-{Path(str(request.node.fspath)).stem.removeprefix('test_')[:30]}-"
    name = name.replace("_", "-") + uuid.uuid4().hex[:6]
    with node.cluster.temporary_namespace(name, delete_timeout=180, wait=True):
        yield name


@pytest.fixture(scope="session")
def buildctl_bin(tools: Callable[..., tuple[Path, ...]]) -> Path:
    return tools("buildkit")[0] / "buildctl"


@pytest.fixture(scope="session")
def api(node: LocalNode) -> Api:
    assert node.cluster is not None
    return node.cluster.api


@pytest.fixture(scope="session")
def builders_namespace(node: LocalNode, api: Api) -> Iterator[str]:
    name = "node-builders"
    api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="session")
def rootless_builder(
    host: Host, node: LocalNode, node_operator: OperatorProcess, api: Api, builders_namespace: str
) -> str:
    """A Builder with the default spec: rootless, persistent cache, TLS auto."""
    host.require_rootless()
    ready_builder(api, node, builders_namespace, "default", {}, announce=True)
    return "default"


@pytest.fixture(scope="session")
def rootful_builder(
    node: LocalNode, node_operator: OperatorProcess, api: Api, builders_namespace: str
) -> str:
    ready_builder(api, node, builders_namespace, "rootful", {"rootless": False}, announce=True)
    return "rootful"
