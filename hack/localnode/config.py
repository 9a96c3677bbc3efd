"""How the node is configured: its name, addresses and ports, the kernel settings kubelet is
shown, and the files written before it starts: the CNI network, containerd's, kubelet's and
kube-proxy's configuration, and the node's certificates and kubeconfigs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

import node_images
from localcluster.pki import CertificateAuthority, pem_cert, pem_key, write_private

NODE_NAME = "bko-node"
NODE_LABEL = "buildkit-operator.dev/real-node"
BRIDGE = "bko0"
NODE_IP = "10.89.0.1"
NODE_PREFIX = 24
POD_SUBNET = "10.89.0.0/24"
APISERVER_PORT = 6443  # the forwarder's port inside the node's network namespace
KUBELET_PORT = 10250
LOCAL_STORAGE_CLASS = "node-local"
# The cluster's registry (hack/images/registry.Dockerfile): a Service with this fixed
# ClusterIP (in the lower, statically assigned part of the Service range 10.96.0.0/16, as
# kube-dns' 10.96.0.10 is), plain HTTP. The node's containerd pulls from it over HTTP
# (certs.d below); Builders push to it with `buildkitd.insecureRegistries: [REGISTRY]`.
REGISTRY_IP = "10.96.0.20"
REGISTRY_PORT = 5000
REGISTRY = f"{REGISTRY_IP}:{REGISTRY_PORT}"
# Local volumes on the real node. The node tier's modules each hold theirs until their
# namespace goes (an autoscaled Builder keeps the claims of the daemons it removed, a
# replicas: 2 Builder holds two): 8 ran out in a full run once the journey (two daemons)
# came after the autoscaling test (three).
LOCAL_VOLUMES = 16
# The cluster DNS (hack/localnode/dns.py): the Service kube-dns at the ClusterIP kubeadm gives
# it in this Service range, the kubelet's clusterDNS.
CLUSTER_DNS_IP = "10.96.0.10"

# What kubelet would write (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables):
# shown to it, in the node's mount namespace, instead of the host's values.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Directories with fixed paths (containerd's shim sockets, runc's state, CNI's cache,
# kubelet's /var/log/containers links) that get a tmpfs of their own in the node's namespace.
PRIVATE_DIRS = ("/run", "/var/lib", "/var/log")
# A whole proc mount in the node's namespace besides /proc (see supervise): the kernel lets a
# container in a user namespace mount its own /proc only where one is fully visible already.
VISIBLE_PROC = "/run/bko-node-proc"

CAP_SYS_RESOURCE = 24


def has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def write_node_pki(directory: Path, cluster_pki: Path, name: str, ip: str) -> None:
    """Client kubeconfigs of kubelet and kube-proxy (to the forwarder) in ``config/``, and
    kubelet's serving certificate in ``pki/``, all from the cluster's CA."""
    pki = directory / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.load(cluster_pki)
    (pki / "ca.crt").write_bytes(pem_cert(ca.cert))
    server = f"https://127.0.0.1:{APISERVER_PORT}"
    identities = {
        "kubelet": (f"system:node:{name}", ("system:nodes",)),
        "kube-proxy": ("system:kube-proxy", ()),
    }
    for component, (user, groups) in identities.items():
        ca.client_kubeconfig(server, user, groups, directory / "config" / f"{component}.kubeconfig")
    key, cert = ca.issue(f"system:node:{name}", dns_names=(name,), ips=(ip,), server=True)
    (pki / "kubelet.crt").write_bytes(pem_cert(cert))
    write_private(pki / "kubelet.key", pem_key(key))


def write_node_config(
    directory: Path,
    cgroup: str,
    binaries: Mapping[str, Path],
    containerd_socket: Path,
    name: str,
    ip: str,
) -> None:
    """The CNI network, containerd.toml, kubelet.yaml and kube-proxy.yaml of the node."""
    d = directory
    config = d / "config"
    cni_bin = binaries["bridge"].parent
    (d / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (d / "cni" / "net.d" / "10-bko.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "bko-node",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        # No uplink: nothing to masquerade for, and nothing leaves.
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.89.0.10"}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(d / "cni" / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                    {"type": "loopback"},
                ],
            },
            indent=2,
        )
    )
    # containerd reads a registry's hosts.toml at each pull: the cluster's registry speaks
    # plain HTTP (no certificate to distribute), every other host keeps containerd's defaults.
    hosts = config / "certs.d" / REGISTRY
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{REGISTRY}"\n\n'
        f'[host."http://{REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    runc = binaries["runc"]
    restrict_oom = not has_capability(CAP_SYS_RESOURCE)
    (config / "containerd.toml").write_text(
        f"""version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"

[grpc]
  address = "{containerd_socket}"

[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{config}/certs.d"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{node_images.PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # Lowering a process's oom_score_adj (kubelet gives the pause container -998) takes
  # CAP_SYS_RESOURCE, which a root without it (as in a container) lacks: keep containers
  # at or above containerd's own value instead of failing every sandbox.
  restrict_oom_score_adj = {"true" if restrict_oom else "false"}
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{d}/cni/net.d"
"""
    )
    # What pods of dnsPolicy Default (CoreDNS itself) get: no upstream server is reachable.
    (config / "resolv.conf").write_text("# the real node has no upstream DNS server\n")
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(d / "pki" / "kubelet.crt"),
        "tlsPrivateKeyFile": str(d / "pki" / "kubelet.key"),
        # As a real cluster's kubelet: client certificates of the cluster's CA and bearer
        # tokens (TokenReview) authenticate, the API server decides (SubjectAccessReview):
        # the API server's own client (logs, exec, port-forward) holds
        # system:kubelet-api-admin, nobody else anything.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(d / "pki" / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup,
        "failCgroupV1": False,
        "failSwapOn": False,
        "protectKernelDefaults": True,
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "resolvConf": str(config / "resolv.conf"),
        "clusterDomain": "cluster.local",
        "clusterDNS": [CLUSTER_DNS_IP],
        "podLogsDir": str(d / "logs" / "pods"),
        "volumePluginDir": str(d / "kubelet" / "volume-plugins"),
        "hairpinMode": "hairpin-veth",
        "maxPods": 30,
        # A shared machine's disk and memory are not the node's to guard: evict only
        # when nearly nothing is left, and never delete images (none can be pulled).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
    }
    (config / "kubelet.yaml").write_text(yaml.safe_dump(kubelet, sort_keys=False))
    proxy = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(config / "kube-proxy.kubeconfig")},
        "hostnameOverride": name,
        "mode": "nftables",
        "clusterCIDR": POD_SUBNET,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # 0: leave the conntrack limits and timeouts as they are (some are global).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }
    (config / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy, sort_keys=False))
