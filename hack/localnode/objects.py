"""What the node adds to the cluster: the RBAC its kubelet needs, the `kubernetes` Service's
endpoint (the forwarder on the node IP), and the local PersistentVolumes of StorageClass
``node-local``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from localcluster.api import ApiError
from localcluster.manifests import VOLUME_LABEL, node_is_ready

from .config import APISERVER_PORT, LOCAL_STORAGE_CLASS, LOCAL_VOLUMES
from .dns import cluster_dns_objects

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster


class NodeObjects:
    """LocalNode's objects in its cluster (``cluster`` must be set)."""

    cluster: LocalCluster | None
    dir: Path
    id: str
    name: str
    ip: str

    @property
    def volumes_dir(self) -> Path:
        """Where tests put the directories of local PersistentVolumes on this node."""
        return self.dir / "volumes"

    def _node_ready(self) -> bool:
        assert self.cluster is not None
        try:
            return node_is_ready(self.cluster.api.get(f"/api/v1/nodes/{self.name}"))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def ensure_local_volumes(self, count: int = LOCAL_VOLUMES) -> None:
        """StorageClass ``node-local``: local PersistentVolumes on this node, in directories
        under DIR/volumes. Unlike hostPath volumes, local ones get the pod's fsGroup, so a
        rootless buildkitd (uid 1000) can write its cache there. Labelled like the cluster's
        pool, so LocalCluster.recycle_volumes() makes them Available again."""
        assert self.cluster is not None
        api = self.cluster.api
        api.create(
            "/apis/storage.k8s.io/v1/storageclasses",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": LOCAL_STORAGE_CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "reclaimPolicy": "Retain",
                "volumeBindingMode": "WaitForFirstConsumer",
            },
        )
        for index in range(1, count + 1):
            name = f"pv-{LOCAL_STORAGE_CLASS}-{self.id}-{index:03d}"
            path = self.volumes_dir / name
            path.mkdir(parents=True, exist_ok=True)
            api.create(
                "/api/v1/persistentvolumes",
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name, "labels": {VOLUME_LABEL: LOCAL_STORAGE_CLASS}},
                    "spec": {
                        "capacity": {"storage": "100Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": LOCAL_STORAGE_CLASS,
                        "volumeMode": "Filesystem",
                        "local": {"path": str(path)},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "In",
                                                "values": [self.name],
                                            }
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                },
            )

    def _remove_local_volumes(self) -> None:
        assert self.cluster is not None
        api = self.cluster.api
        pvs = api.get(
            f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}={LOCAL_STORAGE_CLASS}"
        )
        for pv in pvs["items"]:
            if pv["metadata"]["name"].startswith(f"pv-{LOCAL_STORAGE_CLASS}-{self.id}-"):
                api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

    def _publish_apiserver_endpoint(self) -> None:
        """Pods reach the API server through the `kubernetes` Service: point it at the
        forwarder on the node IP (the control plane runs with no endpoint reconciler)."""
        assert self.cluster is not None
        api = self.cluster.api
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "buildkit-operator-local-node",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": APISERVER_PORT, "protocol": "TCP"}],
        }
        path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        api.delete(f"{path}/kubernetes")
        api.create(path, slice_)

    def _start_cluster_dns(self) -> None:
        """CoreDNS, as a cluster's DNS add-on: created, not waited for (its pod starts
        beside the first test's; tests that resolve names wait for it)."""
        assert self.cluster is not None
        for path, obj in cluster_dns_objects():
            self.cluster.api.create(path, obj)

    def _grant_node_rights(self) -> None:
        """The control plane authorizes with RBAC alone (no Node authorizer): bind the
        kubelet's group to the built-in system:node role."""
        assert self.cluster is not None
        self.cluster.api.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "buildkit-operator.dev:local-nodes"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Group",
                        "name": "system:nodes",
                    }
                ],
            },
        )
