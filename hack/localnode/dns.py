"""The cluster DNS the node's kubelet points pods at (``clusterDNS``): CoreDNS
(hack/images/coredns.Dockerfile) in ``kube-system`` as kubeadm's add-on is, a Deployment on
the real node behind the Service ``kube-dns`` of the conventional ClusterIP, with the RBAC its
``kubernetes`` plugin needs to read Services, EndpointSlices, pods and namespaces."""

from __future__ import annotations

from typing import Any

from node_images import COREDNS_IMAGE

from .config import CLUSTER_DNS_IP, NODE_LABEL

NAMESPACE = "kube-system"
NAME = "coredns"
LABELS = {"k8s-app": "kube-dns"}
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def cluster_dns_objects() -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) of everything the add-on is, in creation order."""
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": LABELS}
    role_name = "system:coredns"
    container = {
        "name": NAME,
        "image": COREDNS_IMAGE,
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        # The `ready` plugin answers once the kubernetes plugin has synced its caches.
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
    }
    return [
        (
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        ),
        (
            f"{RBAC}/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role_name},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
        ),
        (
            f"{RBAC}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role_name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role_name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
            },
        ),
        (
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": LABELS},
                    "template": {
                        "metadata": {"labels": LABELS},
                        "spec": {
                            "serviceAccountName": NAME,
                            # The DNS server itself resolves as the node does, not through itself.
                            "dnsPolicy": "Default",
                            "nodeSelector": {NODE_LABEL: "true"},
                            "priorityClassName": "system-cluster-critical",
                            "containers": [container],
                        },
                    },
                },
            },
        ),
        (
            f"/api/v1/namespaces/{NAMESPACE}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": LABELS},
                "spec": {
                    "selector": LABELS,
                    "clusterIP": CLUSTER_DNS_IP,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
        ),
    ]
