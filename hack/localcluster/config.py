"""How the control plane is configured: versions, address ranges, the controllers run, the
audit policy, and each component's command line (given the directory and the ports)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

HACK_DIR = Path(__file__).resolve().parent.parent
KWOK_STAGES = HACK_DIR / "tools" / "kwok" / "stages.yaml"

KUBERNETES_VERSION = "v1.36.3"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
CLUSTER_NAME = "bko-local"

# The API server's client identity towards kubelets (logs, exec, port-forward), named as
# kubeadm names it; bound to the built-in ClusterRole system:kubelet-api-admin at start.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
# The socket the API server sends its connections to nodes, pods and Services through (its
# egress selector's "cluster" traffic, an HTTP CONNECT proxy as konnectivity's server is):
# a real node serves it from its network namespace (hack/localnode); with none, such
# connections fail as they would to a node nothing answers on.
EGRESS_SOCKET = "egress.sock"

# Annotation by which kwok recognises the nodes it manages.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"

# Components in start order; stop goes in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

# kube-controller-manager controllers: the workload, garbage collection, namespace, service
# account and volume machinery the operator relies on, and the disruption controller, which
# keeps the PodDisruptionBudgets' counts that evictions (kubectl drain) go by (no node
# lifecycle: kwok nodes stay Ready).
CONTROLLERS = (
    "garbage-collector-controller",
    "disruption-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # Quotas are how a cluster refuses writes with 403: the operator's handling is tested.
    "resourcequota-controller",
    # Type-checks admission policies against the schemas they read (the chart's policy).
    "validatingadmissionpolicy-status-controller",
    # PodDisruptionBudgets' status (the chart's keeps one operator replica through drains).
    "disruption-controller",
)

# Only write requests are recorded, at Metadata level (who, what, when; no bodies).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


def audit_policy(read_users: Sequence[str] = ()) -> dict[str, Any]:
    """AUDIT_POLICY, with every request of ``read_users`` recorded as well (a watch is
    recorded once it starts)."""
    if not read_users:
        return AUDIT_POLICY
    rules = [{"level": "Metadata", "users": list(read_users)}, *AUDIT_POLICY["rules"]]
    return {**AUDIT_POLICY, "rules": rules}


def write_config(directory: Path, audit_read_users: Sequence[str], audit_log: Path) -> None:
    """The files the components read besides their certificates: the audit policy, kwok's
    stages, kwok's home; and an empty audit log."""
    config = directory / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "audit-policy.yaml").write_text(
        yaml.safe_dump(audit_policy(audit_read_users), sort_keys=False)
    )
    (config / "egress-selector.yaml").write_text(
        yaml.safe_dump(egress_selector(directory), sort_keys=False)
    )
    shutil.copyfile(KWOK_STAGES, config / "kwok-stages.yaml")
    (directory / "kwok-home").mkdir(exist_ok=True)
    audit_log.touch()


def egress_socket(directory: Path) -> Path:
    return directory / EGRESS_SOCKET


def egress_selector(directory: Path) -> dict[str, Any]:
    """The API server reaches the cluster (kubelets, pods, Services) only through the
    socket: the nodes' addresses are in their own network namespaces, not the host's."""
    return {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [
            {
                "name": "cluster",
                "connection": {
                    "proxyProtocol": "HTTPConnect",
                    "transport": {"uds": {"udsName": str(egress_socket(directory))}},
                },
            }
        ],
    }


# The components' command lines: ``directory`` is the cluster's, ``ports`` its State's.


def etcd_args(directory: Path, ports: Mapping[str, int]) -> list[str]:
    client = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        "--name=local",
        f"--data-dir={directory}/etcd",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        "--initial-cluster-state=new",
        # Throw-away data: skip fsync, which is slow on a busy shared disk.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(directory: Path, ports: Mapping[str, int], audit_log: Path) -> list[str]:
    pki = directory / "pki"
    return [
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # Endpoints may not be loopback addresses, so the `kubernetes` Service gets none
        # (nothing runs in a pod here; clients use the kubeconfig).
        "--endpoint-reconciler-type=none",
        f"--secure-port={ports['apiserver']}",
        f"--cert-dir={pki}/apiserver-generated",
        f"--tls-cert-file={pki}/apiserver.crt",
        f"--tls-private-key-file={pki}/apiserver.key",
        f"--client-ca-file={pki}/ca.crt",
        f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
        f"--proxy-client-key-file={pki}/front-proxy-client.key",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki}/sa.pub",
        f"--service-account-signing-key-file={pki}/sa.key",
        f"--audit-policy-file={directory}/config/audit-policy.yaml",
        f"--audit-log-path={audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
        "--audit-log-maxsize=0",
        # This plugin taints every new node not-ready until the node lifecycle controller
        # sees it Ready. That controller does not run here (kwok nodes have no liveness to
        # watch), so the taint would stay and keep pods off the nodes.
        "--disable-admission-plugins=TaintNodesByCondition",
        "--profiling=false",
        # Kubelets (logs, exec, port-forward) as a real cluster reaches them: at the node's
        # InternalIP, through the egress socket, each side checking the other's certificate.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-certificate-authority={pki}/ca.crt",
        f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
        f"--egress-selector-config-file={directory}/config/egress-selector.yaml",
    ]


# kube-controller-manager's client rate when unthrottled (``LocalCluster(unthrottled=True)``,
# the benchmark's floor): what kwokctl's --disable-qps-limits passes. kwok itself needs no
# flag: its client has no rate limiter (pkg/utils/client sets an always-allowing one).
UNTHROTTLED_QPS = 5000
UNTHROTTLED_BURST = 10000


def controller_manager_args(
    directory: Path, ports: Mapping[str, int], *, unthrottled: bool = False
) -> list[str]:
    """The controller manager's flags. ``unthrottled`` lifts its client rate (20 requests
    a second by default, bursts of 30), which otherwise bounds how fast Deployments of
    hundreds of objects at once become available, whoever creates them."""
    pki = directory / "pki"
    kubeconfig = f"{directory}/config/kube-controller-manager.kubeconfig"
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['controller-manager']}",
        f"--tls-cert-file={pki}/kube-controller-manager-serving.crt",
        f"--tls-private-key-file={pki}/kube-controller-manager-serving.key",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--root-ca-file={pki}/ca.crt",
        f"--service-account-private-key-file={pki}/sa.key",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--leader-elect=false",
        "--profiling=false",
        *(
            [f"--kube-api-qps={UNTHROTTLED_QPS}", f"--kube-api-burst={UNTHROTTLED_BURST}"]
            if unthrottled
            else []
        ),
    ]


def scheduler_args(directory: Path, ports: Mapping[str, int]) -> list[str]:
    pki = directory / "pki"
    kubeconfig = f"{directory}/config/kube-scheduler.kubeconfig"
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['scheduler']}",
        f"--tls-cert-file={pki}/kube-scheduler-serving.crt",
        f"--tls-private-key-file={pki}/kube-scheduler-serving.key",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_args(directory: Path) -> list[str]:
    return [
        f"--kubeconfig={directory}/config/kwok.kubeconfig",
        f"--config={directory}/config/kwok-stages.yaml",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
        f"--cidr={POD_CIDR}",
        # Where the API server would reach a kubelet (logs, exec): nothing listens there.
        "--node-ip=127.0.0.1",
    ]
