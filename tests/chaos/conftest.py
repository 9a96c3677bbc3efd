"""Fixtures of the chaos tier: a local control plane of its own (its API server and etcd
are restarted on purpose, which no other tier should see), and operator replicas run as
host processes so that they can be SIGKILLed.

Each replica authenticates as a user of its own holding the chart's rights (its
ClusterRole, and its leader-election Role in the operator's namespace), so the audit log
tells which replica wrote what. Measured figures are printed at the end of the run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INTEGRATION = REPO / "tests" / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from chaos_support import FIGURES, LEASE, Replica  # noqa: E402
from harness import operator_cluster_role  # noqa: E402

from localcluster.cluster import LocalCluster  # noqa: E402
from localcluster.kubectl import Kubectl  # noqa: E402


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("chaos and failover figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def chaos_cluster(
    local_cluster: Callable[..., AbstractContextManager[LocalCluster]],
) -> Iterator[LocalCluster]:
    """A fresh cluster for this tier alone: its faults must not reach other tiers' tests."""
    with local_cluster("chaos-cluster") as local:
        yield local


@pytest.fixture(scope="session")
def admin(chaos_cluster: LocalCluster) -> Kubectl:
    k = chaos_cluster.kubectl()
    k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    k.wait_established("builders.buildkit.dev")
    return k


def _chart_documents(kind: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "manifests").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    return docs


@pytest.fixture
def workspace(chaos_cluster: LocalCluster, admin: Kubectl) -> Iterator[tuple[str, str]]:
    """(namespace of the Builders, namespace of the operator's Lease), both fresh."""
    suffix = uuid.uuid4().hex[:6]
    with (
        chaos_cluster.temporary_namespace(f"chaos-{suffix}", delete_timeout=180) as builders,
        chaos_cluster.temporary_namespace(f"chaos-op-{suffix}") as operator_ns,
    ):
        yield builders, operator_ns


@pytest.fixture
def replicas(
    chaos_cluster: LocalCluster,
    admin: Kubectl,
    workspace: tuple[str, str],
    tmp_path: Path,
) -> Iterator[Callable[..., Replica]]:
    """``replicas(name, *extra_args)``: an operator process with leader election, as user
    ``bko-replica-<name>`` holding the chart's rights; all stopped at teardown."""
    _, operator_ns = workspace
    role = operator_cluster_role()
    role["metadata"] = {"name": "bko-chaos-replica"}
    admin.apply(role)
    (election,) = [
        r for r in _chart_documents("Role") if r["metadata"]["name"].endswith("leader-election")
    ]
    election = {**election, "metadata": {"name": "leader-election", "namespace": operator_ns}}
    admin.apply(election)
    started: list[Replica] = []

    def start(name: str, *extra: str) -> Replica:
        user = f"bko-replica-{name}"
        for kind, ref in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
            meta: dict[str, Any] = {"name": f"{user}-{ref.lower()}"}
            if kind == "RoleBinding":
                meta["namespace"] = operator_ns
            admin.apply(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": kind,
                    "metadata": meta,
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": ref,
                        "name": "bko-chaos-replica" if ref == "ClusterRole" else "leader-election",
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                    ],
                }
            )
        kubeconfig = chaos_cluster.client_kubeconfig(user)
        replica = Replica(
            name,
            user,
            [
                "--all-namespaces",
                "--leader-elect",
                f"--leader-election-namespace={operator_ns}",
                f"--leader-election-id={LEASE}",
                *extra,
            ],
            {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
            tmp_path / f"replica-{name}.log",
        )
        started.append(replica)
        return replica.start()

    yield start
    for replica in started:
        replica.stop()
