"""The local control plane behaves like a real cluster where the operator depends on it."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from localcluster.api import wait_for
from localcluster.cluster import LocalCluster
from localcluster.config import KUBERNETES_VERSION
from localcluster.kubectl import Kubectl
from localcluster.manifests import NODES

pytestmark = pytest.mark.integration


@pytest.mark.smoke
def test_version_and_nodes(cluster: LocalCluster, kubectl: Kubectl) -> None:
    assert cluster.api.get("/version")["gitVersion"] == KUBERNETES_VERSION
    versions = kubectl.json("version")
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION

    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    assert sorted(nodes) == sorted(n.name for n in NODES)
    for spec in NODES:
        node = nodes[spec.name]
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/arch"] == spec.arch
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/hostname"] == spec.name
        assert labels["type"] == "kwok"
        assert not node["spec"].get("taints")
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["status"]["conditions"]
        assert node["status"]["allocatable"]["cpu"] == "32"
        assert node["status"]["nodeInfo"]["architecture"] == spec.arch


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: on-arm
spec:
  replicas: 1
  selector:
    matchLabels: {app: on-arm}
  template:
    metadata:
      labels: {app: on-arm}
    spec:
      nodeSelector:
        kubernetes.io/arch: arm64
      containers:
      - name: main
        image: registry.example/app:1
"""


@pytest.mark.smoke
def test_deployment_pod_runs_on_arm64_node(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)

    def running_pod() -> dict[str, Any] | None:
        pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app=on-arm")["items"]
        for pod in pods:
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True":
                return pod
        return None

    pod = wait_for(running_pod, "the Deployment's pod to be Running and Ready", timeout=60)
    assert pod["spec"]["nodeName"] == "kwok-arm64-1"
    # The Deployment controller sees the pod Ready, as it would with a real kubelet.
    wait_for(
        lambda: (
            kubectl.json("get", "deployment", "on-arm", "-n", namespace)["status"].get(
                "readyReplicas"
            )
            == 1
        ),
        "the Deployment to report one ready replica",
        timeout=60,
    )


def _pvc(name: str, storage_class: str | None) -> str:
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    if storage_class is not None:
        claim["spec"]["storageClassName"] = storage_class
    return json.dumps(claim)


def _wait_bound(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def bound() -> dict[str, Any] | None:
        pvc = kubectl.json("get", "pvc", name, "-n", namespace)
        return pvc if pvc["status"].get("phase") == "Bound" else None

    return wait_for(bound, f"PVC {name} to be Bound", timeout=60)


def test_claims_bind_with_named_and_default_class(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_pvc("fast", "fast-ssd"))
    kubectl("apply", "-n", namespace, "-f", "-", input=_pvc("default", None))

    fast = _wait_bound(kubectl, namespace, "fast")
    default = _wait_bound(kubectl, namespace, "default")
    assert default["spec"]["storageClassName"] == "standard"  # the default StorageClass
    for claim, storage_class in ((fast, "fast-ssd"), (default, "standard")):
        volume = kubectl.json("get", "pv", claim["spec"]["volumeName"])
        assert volume["spec"]["storageClassName"] == storage_class
        assert volume["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]


def test_released_volume_is_recycled(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_pvc("once", "fast-ssd"))
    volume_name = _wait_bound(kubectl, namespace, "once")["spec"]["volumeName"]
    # What a daemon left on it (its build cache): the next claim must not find it.
    directory = Path(kubectl.json("get", "pv", volume_name)["spec"]["hostPath"]["path"])
    # hostPath volumes get no fsGroup: the pool's directories are world-writable (as
    # local-path-provisioner makes them), so a non-root daemon can write its cache.
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777
    (directory / "buildkit" / "runc-overlayfs").mkdir(parents=True, exist_ok=True)
    (directory / "buildkit" / "cache.db").write_text("a previous tenant's cache")
    kubectl("delete", "pvc", "once", "-n", namespace, "--wait=true", timeout=60)

    def recycled() -> bool:
        cluster.recycle_volumes()
        volume = kubectl.json("get", "pv", volume_name)
        return volume["status"]["phase"] == "Available" and not volume["spec"].get("claimRef")

    wait_for(recycled, f"volume {volume_name} to be Available again", timeout=60)
    assert directory.is_dir() and list(directory.iterdir()) == []
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777


def test_api_server_may_use_the_kubelet_api(kubectl: Kubectl) -> None:
    """The API server's client towards kubelets (logs: GET nodes/proxy and nodes/log; exec
    and port-forward: CREATE nodes/proxy) passes the kubelets' webhook authorization."""
    for verb, subresource in (("get", "proxy"), ("create", "proxy"), ("get", "log")):
        allowed = kubectl.run(
            "auth", "can-i", verb, "nodes", f"--subresource={subresource}",
            "--as=kube-apiserver-kubelet-client",
        )  # fmt: skip
        assert allowed.stdout.strip() == "yes", (verb, subresource, allowed.stderr)


def test_garbage_collector_deletes_dependants(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = kubectl.json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    dependant = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependant",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dependant))

    kubectl("delete", "configmap", "owner", "-n", namespace)

    def dependant_gone() -> bool:
        result = kubectl.run("get", "configmap", "dependant", "-n", namespace)
        return result.returncode != 0 and "NotFound" in result.stderr

    wait_for(dependant_gone, "the garbage collector to delete the dependant", timeout=60)


def test_rbac_is_enforced(kubectl: Kubectl, namespace: str) -> None:
    service_account = f"system:serviceaccount:{namespace}:default"
    denied = kubectl.run(
        "auth", "can-i", "create", "deployments", "-n", namespace, f"--as={service_account}"
    )
    assert denied.stdout.strip() == "no"
    assert denied.returncode == 1
    assert kubectl("auth", "can-i", "create", "deployments", "-n", namespace).strip() == "yes"


def test_audit_log_records_writes_only(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "configmap", "audited", "-n", namespace)
    kubectl("get", "configmap", "audited", "-n", namespace)

    def events() -> list[dict[str, Any]]:
        lines = cluster.audit_log.read_text().splitlines()
        found = [json.loads(line) for line in lines if namespace in line]
        return [e for e in found if e.get("objectRef", {}).get("name") == "audited"]

    writes = wait_for(events, "the create to reach the audit log", timeout=30)
    assert [(e["verb"], e["level"]) for e in writes] == [("create", "Metadata")]
    assert writes[0]["user"]["username"] == "kubernetes-admin"
    assert "requestObject" not in writes[0]
