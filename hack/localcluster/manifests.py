"""The objects the cluster is made with: kwok's fake nodes, the StorageClasses, and the pool
of pre-made PersistentVolumes (no provisioner runs here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import KUBERNETES_VERSION, KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE


@dataclass(frozen=True)
class NodeSpec:
    name: str
    arch: str


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("kwok-amd64-1", "amd64"),
    NodeSpec("kwok-amd64-2", "amd64"),
    NodeSpec("kwok-arm64-1", "arm64"),
)
NODE_ALLOCATABLE = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}

# StorageClass name -> number of pre-made 100Gi PersistentVolumes. The first is the default.
STORAGE_CLASSES: dict[str, int] = {"standard": 80, "fast-ssd": 40}
VOLUME_SIZE = "100Gi"
VOLUME_LABEL = "buildkit-operator.dev/local-cluster-volume"


def node_is_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_manifest(node: NodeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": node.arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": node.name,
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": dict(NODE_ALLOCATABLE),
            "capacity": dict(NODE_ALLOCATABLE),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {
                "architecture": node.arch,
                "operatingSystem": "linux",
                "kubeletVersion": KUBERNETES_VERSION,
                "bootID": "",
                "containerRuntimeVersion": "",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "osImage": "",
                "systemUUID": "",
            },
        },
    }


def storage_class_manifest(name: str, default: bool) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": "kubernetes.io/no-provisioner",
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": False,
    }


def volume_manifest(storage_class: str, index: int, root: Path) -> dict[str, Any]:
    name = f"pv-{storage_class}-{index:03d}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {VOLUME_LABEL: storage_class}},
        "spec": {
            "capacity": {"storage": VOLUME_SIZE},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "volumeMode": "Filesystem",
            "hostPath": {"path": str(root / name), "type": "DirectoryOrCreate"},
        },
    }
