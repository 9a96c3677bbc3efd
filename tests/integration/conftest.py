"""Fixtures for tests against the real local control plane (hack/cluster.py).

- ``cluster``: a fresh LocalCluster for the session, in a temporary directory; or, when
  BKO_TEST_KUBECONFIG names the kubeconfig of a running hack/cluster.py cluster (such as
  .local-cluster/kubeconfig from ``make cluster``), that one, left running afterwards.
- ``namespace``: a fresh namespace per test, deleted afterwards (waited for at the session's
  end, or at once when it claimed volumes, which are then recycled).
- ``kubectl``: runs the pinned kubectl against the cluster (``kubectl.json(...)`` parses -o json);
  ``kubectl_admin`` (module scope) and ``k`` (with the operator under test) are the same helper.
- ``operator``: starts ``buildkit-operator run --all-namespaces`` as a subprocess; stopped at
  teardown.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from harness import OPERATOR_BIN, OPERATOR_USER, operator_cluster_role
from helm_client import Helm, helm_binary
from operator_process import OperatorProcess, operator_binary
from policy_support import CHART, CRD

from localcluster.cluster import LocalCluster
from localcluster.kubectl import Kubectl

REPO = Path(__file__).resolve().parents[2]
NAMESPACE_DELETE_TIMEOUT = 120


@pytest.fixture(scope="session")
def cluster(
    local_cluster: Callable[..., AbstractContextManager[LocalCluster]],
) -> Iterator[LocalCluster]:
    reuse = os.environ.get("BKO_TEST_KUBECONFIG")
    if reuse:
        kubeconfig = Path(reuse).resolve()
        existing = LocalCluster(kubeconfig.parent)
        if existing.kubeconfig != kubeconfig or not existing.is_running():
            pytest.fail(
                f"BKO_TEST_KUBECONFIG={reuse} is not the kubeconfig of a running local cluster "
                "(start one with `make cluster` or `python hack/cluster.py up --dir DIR`, and "
                "point at DIR/kubeconfig)",
                pytrace=False,
            )
        existing.ensure_volumes()
        yield existing
        existing.wait_namespaces_deleted()
        return
    with local_cluster("cluster") as local:
        yield local


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return cluster.kubectl(cache_dir=tmp_path_factory.mktemp("kubectl-cache"))


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    return f"{base[:40].rstrip('-')}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (its default ServiceAccount present), deleted after the test."""
    with cluster.temporary_namespace(
        _namespace_name(request), delete_timeout=NAMESPACE_DELETE_TIMEOUT
    ) as name:
        yield name


@pytest.fixture
def operator(cluster: LocalCluster, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``operator(*extra_args, env=None, kubeconfig=None)`` starts the operator.

    Each call starts one more process (log in the test's tmp_path); all are stopped at teardown.
    The returned OperatorProcess can be stopped and restarted.
    """
    started: list[OperatorProcess] = []

    def start(
        *extra_args: str,
        env: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
    ) -> OperatorProcess:
        command = [str(operator_binary()), "run", "--all-namespaces", *extra_args]
        environment = {**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig)}
        environment.update(env or {})
        proc = OperatorProcess(command, environment, tmp_path / f"operator-{len(started)}.log")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def helm(
    cluster: LocalCluster,
    tools: Callable[..., tuple[Path, ...]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Helm:
    return Helm(helm_binary(tools), cluster.kubeconfig, tmp_path_factory.mktemp("helm-home"))


# --- the operator under test, as a user holding only the chart's ClusterRole -----------


@pytest.fixture(scope="module")
def kubectl_admin(cluster: LocalCluster) -> Kubectl:
    return cluster.kubectl()


@pytest.fixture(scope="module")
def operator_under_test(
    cluster: Any, kubectl_admin: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator, as a user holding only the chart's ClusterRole."""
    kubectl_admin(
        "apply", "--server-side", "--force-conflicts", "-f",
        str(REPO / "crds" / "builders.buildkit.dev.yaml"),
    )  # fmt: skip
    kubectl_admin.wait_established("builders.buildkit.dev")
    role = operator_cluster_role()
    role["metadata"] = {"name": "buildkit-operator-under-test"}
    kubectl_admin.apply(role)
    kubectl_admin.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "buildkit-operator-under-test"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "buildkit-operator-under-test",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        }
    )
    kubeconfig = cluster.client_kubeconfig(OPERATOR_USER)
    op = OperatorProcess(
        [str(OPERATOR_BIN), "run", "--all-namespaces", "--verbose"],
        {**os.environ, "KUBECONFIG": str(kubeconfig)},
        tmp_path_factory.mktemp("operator") / "operator.log",
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def k(
    kubectl_admin: Kubectl, operator_under_test: OperatorProcess, namespace: str
) -> Iterator[Kubectl]:
    """kubectl with the operator running; on failure the operator's log is shown."""
    yield kubectl_admin
    op = operator_under_test
    if op.process is not None and not op.running:
        pytest.fail(f"the operator exited ({op.returncode}):\n{op.log()[-8000:]}")


# --- the chart's admission policies --------------------------------------------------------


@pytest.fixture
def install(helm: Helm, kubectl: Kubectl, namespace: str) -> Iterator[Callable[..., str]]:
    """``install(*helm_args) -> release``: the chart, released in the test's namespace and
    uninstalled afterwards, so its cluster-scoped policies never outlive the test."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl.wait_established("builders.buildkit.dev")
    releases: list[str] = []

    def run(*args: str) -> str:
        release = f"bko-{uuid.uuid4().hex[:6]}"
        releases.append(release)
        helm("install", release, str(CHART), "--namespace", namespace, *args)
        return release

    yield run
    for release in releases:
        helm.run("uninstall", release, "--namespace", namespace, "--wait", "--ignore-not-found")


@pytest.fixture
def new_namespace(kubectl: Kubectl) -> Iterator[Callable[..., str]]:
    """``new_namespace(*labels) -> name``: more fresh namespaces, deleted afterwards."""
    made: list[str] = []

    def new(*labels: str) -> str:
        name = f"policy-{uuid.uuid4().hex[:8]}"
        kubectl("create", "namespace", name)
        if labels:
            kubectl("label", "namespace", name, *labels)
        made.append(name)
        return name

    yield new
    if made:
        kubectl.run("delete", "namespace", *made, "--wait=true", "--timeout=120s", timeout=150)
