#!/usr/bin/env python3
"""A real Kubernetes node joined to the local control plane (hack/cluster.py).

containerd, kubelet and kube-proxy from the pinned Go modules under hack/tools/, runc from
Debian, the CNI bridge plugins, and images made here by hack/node_images.py: the pods the
operator renders run for real, in containers.

What it takes from this machine, and what it leaves it:

- Network: a node IP cannot be loopback, so the node lives in a network namespace of its own
  (``bko-node-<id>``) with a bridge holding the node IP and the pod range, and no uplink:
  nothing leaves the namespaces made here. The API server listens on the host's loopback;
  a forwarder inside the node's namespace (127.0.0.1:6443 and <node IP>:6443) carries the
  kubelet's, kube-proxy's and the pods' connections to it. Clients reach Services from inside
  the namespace (``nsenter --net=/run/netns/<netns>``).
- Kernel settings: none are changed. kubelet writes vm.overcommit_memory, kernel.panic and
  kernel.panic_on_oops (and checks a few more) at start; the node runs in its own mount
  namespace where files holding the values kubelet wants are bind-mounted over those
  /proc/sys entries, and kubelet runs with protectKernelDefaults, so it only reads them.
  Network sysctls are per network namespace and stay in the node's. kube-proxy is told to
  leave the conntrack table sizes alone.
- Files: the same mount namespace has its own /run, /var/lib and /var/log (tmpfs), where
  containerd, its shims, runc and the CNI plugins keep the state whose paths are fixed;
  everything else lives under DIR.
- cgroups: kubelet's cgroup root is ``<the memory cgroup this runs in>/bko-node-<id>``,
  created in every hierarchy; cgroupfs driver (no systemd), cgroup v1 allowed
  (failCgroupV1: false).
- Stop: every process in the node's cgroups is killed, the mount namespace goes with its
  last process, the cgroups and the network namespace are removed, and the Node object is
  deleted.

    python hack/node.py up --dir DIR --cluster-dir CDIR [--bin-path PATHS]
    python hack/node.py down --dir DIR
    python hack/node.py status --dir DIR

Importable: ``LocalNode(dir, cluster).start()``, ``.netns``, ``.exec_prefix``, ``.stop()``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import node_images
from cgroups import cgroup_mounts, cgroup_parent, kill_cgroup, make_cgroup, remove_cgroup
from cluster import (
    VOLUME_LABEL,
    ApiError,
    CertificateAuthority,
    ClusterError,
    ComponentExited,
    LocalCluster,
    _pem_cert,
    _pem_key,
    _proc_cmdline,
    _proc_state,
    _write_private,
    kubeconfig_document,
    node_is_ready,
    split_paths,
    wait_for,
)

HACK_DIR = Path(__file__).resolve().parent
BUILD_TOOLS = HACK_DIR / "build-tools.sh"
NODE_TOOLS = ("containerd", "cni", "kubernetes-node")

NODE_NAME = "bko-node"
NODE_LABEL = "buildkit-operator.dev/real-node"
BRIDGE = "bko0"
NODE_IP = "10.89.0.1"
NODE_PREFIX = 24
POD_SUBNET = "10.89.0.0/24"
APISERVER_PORT = 6443  # the forwarder's port inside the node's network namespace
KUBELET_PORT = 10250
LOCAL_STORAGE_CLASS = "node-local"
LOCAL_VOLUMES = 8

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

DAEMONS = ("containerd", "kube-proxy", "kubelet")

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNET = 0x40000000


def log(message: str) -> None:
    print(f"node: {message}", file=sys.stderr, flush=True)


class NodeError(ClusterError):
    pass


CAP_SYS_RESOURCE = 24


def has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def node_id(directory: Path) -> str:
    return hashlib.sha256(str(directory).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- binaries


def node_tool_paths() -> list[Path]:
    result = subprocess.run(
        [str(BUILD_TOOLS), "--print-path", *NODE_TOOLS],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise NodeError(f"hack/build-tools.sh {' '.join(NODE_TOOLS)} failed")
    return split_paths(result.stdout.strip())


NODE_BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "bridge")
HOST_PROGRAMS = ("runc", "nft", "ip", "nsenter", "unshare", "mount")


def find_node_binaries(bin_paths: Sequence[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in NODE_BINARIES:
        for directory in bin_paths:
            if os.access(directory / name, os.X_OK):
                found[name] = directory / name
                break
    system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for name in HOST_PROGRAMS:
        where = shutil.which(name, path=system_path)
        if where:
            found[name] = Path(where)
    missing = [n for n in (*NODE_BINARIES, *HOST_PROGRAMS) if n not in found]
    if missing:
        raise NodeError(
            f"missing {', '.join(missing)} (hack/build-tools.sh {' '.join(NODE_TOOLS)}; "
            "hack/install-runtime-deps.sh --node)"
        )
    return found


# --------------------------------------------------------------------------- state


@dataclass
class NodeState:
    netns: str
    cgroup: str
    cluster_dir: str
    api_port: int
    supervisor: int = 0
    binaries: dict[str, str] = field(default_factory=dict)
    started: float = 0.0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NodeState:
        return cls(**json.loads(text))


class LocalNode:
    """One real node in one directory, joined to the cluster of cluster_dir."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        cluster: LocalCluster | None = None,
        bin_paths: str | Sequence[str | os.PathLike[str]] | None = None,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.dir = Path(directory).resolve()
        self.cluster = cluster
        self.die_with_parent = die_with_parent
        self._bin_paths = split_paths(bin_paths)
        self.id = node_id(self.dir)
        self.netns = f"bko-node-{self.id}"
        self.name = NODE_NAME
        self.ip = NODE_IP

    # Paths -----------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def volumes_dir(self) -> Path:
        """Where tests put the directories of local PersistentVolumes on this node."""
        return self.dir / "volumes"

    @property
    def exec_prefix(self) -> list[str]:
        """Run a command in the node's network namespace (where Service IPs answer)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def read_state(self) -> NodeState | None:
        try:
            return NodeState.from_json(self.state_file.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _write_state(self, state: NodeState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _supervisor_alive(self, state: NodeState | None) -> bool:
        if state is None or not state.supervisor:
            return False
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(state.supervisor, os.WNOHANG)
        argv = _proc_cmdline(state.supervisor)
        return bool(
            argv
            and _proc_state(state.supervisor) not in (None, "Z", "X")
            and "_supervise" in argv
            and str(self.dir) in argv
        )

    def is_running(self) -> bool:
        """Running, joined to this node's cluster as it runs now, and Ready."""
        state = self.read_state()
        if not self._supervisor_alive(state) or self.cluster is None or state is None:
            return False
        if state.cluster_dir != str(self.cluster.dir):
            return False
        with contextlib.suppress(ClusterError):
            if state.api_port != self.cluster.state.ports["apiserver"]:
                return False
        try:
            node = self.cluster.api.get(f"/api/v1/nodes/{self.name}")
        except (ClusterError, OSError):
            return False
        return node_is_ready(node)

    # Lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 300) -> LocalNode:
        if self.cluster is None or not self.cluster.is_running():
            raise NodeError("the cluster is not running: start it first (make cluster)")
        with self._locked():
            if self.is_running():
                log(f"already running in {self.dir} (netns {self.netns})")
                return self
            if self.read_state() is not None or self._netns_exists():
                log(f"cleaning up a stopped node in {self.dir}")
                self._stop_locked()
            started = time.monotonic()
            try:
                self._start_locked(timeout)
            except BaseException:
                log(f"start failed; logs are in {self.logs_dir}")
                self._stop_locked()
                raise
            log(f"node {self.name} Ready after {time.monotonic() - started:.1f}s")
        return self

    def stop(self) -> None:
        with self._locked():
            self._stop_locked()

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _netns_exists(self) -> bool:
        return Path(f"/run/netns/{self.netns}").exists()

    def _start_locked(self, timeout: float) -> None:
        assert self.cluster is not None
        deadline = time.monotonic() + timeout
        bin_paths = self._bin_paths or node_tool_paths()
        binaries = find_node_binaries(bin_paths)
        log("images (hack/node_images.py; cached by content)")
        images = node_images.build()
        cgroup = f"{cgroup_parent().rstrip('/')}/bko-node-{self.id}"
        state = NodeState(
            netns=self.netns,
            cgroup=cgroup,
            cluster_dir=str(self.cluster.dir),
            api_port=self.cluster.state.ports["apiserver"],
            binaries={k: str(v) for k, v in binaries.items()},
            started=time.time(),
        )
        # Runtime state from an earlier run goes; the containerd content store stays, so
        # a warm start imports nothing.
        for name in ("kubelet", "logs", "config", "pki", "cni", "sysctl"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        shutil.rmtree(self.dir / "containerd" / "state", ignore_errors=True)
        for d in (self.logs_dir, self.config_dir, self.volumes_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_state(state)
        self._make_netns()
        self._write_pki()
        self._write_config(state, binaries)
        self._grant_node_rights()
        # A Node object left by an earlier run would read Ready before this kubelet is.
        self.cluster.api.delete(f"/api/v1/nodes/{self.name}")
        make_cgroup(cgroup)

        host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        host_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        owner = ["--owner-pid", str(os.getpid())] if self.die_with_parent else []
        try:
            with open(self.log_file("supervisor"), "ab") as out:
                child = subprocess.Popen(
                    [
                        str(binaries["nsenter"]),
                        f"--net=/run/netns/{self.netns}",
                        "--",
                        str(binaries["unshare"]),
                        "--mount",
                        "--propagation",
                        "slave",
                        "--",
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "_supervise",
                        "--dir",
                        str(self.dir),
                        "--host-netns-fd",
                        str(host_netns),
                        "--host-mnt-fd",
                        str(host_mnt),
                        *owner,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    start_new_session=True,
                    pass_fds=(host_netns, host_mnt),
                )
        finally:
            os.close(host_netns)
            os.close(host_mnt)
        state.supervisor = child.pid
        self._write_state(state)

        def check() -> None:
            if child.poll() is not None:
                # ComponentExited: wait_for gives up at once instead of polling on.
                raise ComponentExited(
                    f"the node exited ({child.returncode})\n{self.tail('supervisor')}"
                )

        def remaining() -> float:
            return max(1.0, deadline - time.monotonic())

        wait_for(
            lambda: (check(), self._containerd_up(binaries["ctr"]))[1],
            "containerd",
            remaining(),
            on_timeout=lambda: self.tail("containerd"),
        )
        self._import_images(images, binaries["ctr"])
        (self.dir / "run-kubelet").touch()
        wait_for(
            lambda: (check(), self._node_ready())[1],
            f"Node {self.name} Ready",
            remaining(),
            on_timeout=lambda: self.tail("kubelet"),
        )
        self._publish_apiserver_endpoint()
        self.ensure_local_volumes()

    def tail(self, component: str, lines: int = 40) -> str:
        try:
            text = self.log_file(component).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log for {component})"
        return f"--- last lines of {self.log_file(component)}:\n" + "\n".join(text)

    def _containerd_up(self, ctr: Path) -> bool:
        if not self.containerd_socket.exists():
            return False
        version = [str(ctr), "--address", str(self.containerd_socket), "version"]
        return subprocess.run(version, capture_output=True, check=False).returncode == 0

    def _node_ready(self) -> bool:
        assert self.cluster is not None
        try:
            return node_is_ready(self.cluster.api.get(f"/api/v1/nodes/{self.name}"))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def _import_images(self, images: Mapping[str, Path], ctr: Path) -> None:
        """Import each OCI tarball whose index is not already the image of that name."""
        base = [str(ctr), "--address", str(self.containerd_socket), "-n", "k8s.io"]
        listing = subprocess.run(
            [*base, "images", "ls"], capture_output=True, text=True, check=True
        ).stdout
        present = {
            (parts[0], parts[2]) for parts in (line.split() for line in listing.splitlines()[1:])
        }
        for name, tarball in images.items():
            index = json.loads(
                subprocess.run(
                    ["tar", "-xOf", str(tarball), "index.json"],
                    capture_output=True,
                    check=True,
                ).stdout
            )
            digest = index["manifests"][0]["digest"]
            if (name, digest) in present:
                continue
            began = time.monotonic()
            subprocess.run(
                [*base, "images", "import", str(tarball)],
                capture_output=True,
                check=True,
            )
            log(f"imported {name} in {time.monotonic() - began:.1f}s")

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

    def _make_netns(self) -> None:
        def ip(*args: str) -> None:
            subprocess.run(["ip", *args], check=True, capture_output=True)

        ip("netns", "add", self.netns)
        ip("-n", self.netns, "link", "set", "lo", "up")
        ip("-n", self.netns, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.netns, "addr", "add", f"{self.ip}/{NODE_PREFIX}", "dev", BRIDGE)
        ip("-n", self.netns, "link", "set", BRIDGE, "up")
        # Service IPs need a route before kube-proxy's rules can rewrite them; the bridge is
        # the only way out and leads nowhere but the pods.
        ip("-n", self.netns, "route", "add", "default", "dev", BRIDGE)

    def _write_pki(self) -> None:
        assert self.cluster is not None
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        cpki = self.cluster.pki
        ca = CertificateAuthority(
            serialization.load_pem_private_key((cpki / "ca.key").read_bytes(), None),  # type: ignore[arg-type]
            x509.load_pem_x509_certificate((cpki / "ca.crt").read_bytes()),
        )
        ca_pem = _pem_cert(ca.cert)
        (pki / "ca.crt").write_bytes(ca_pem)
        server = f"https://127.0.0.1:{APISERVER_PORT}"
        identities = {
            "kubelet": (f"system:node:{self.name}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
        }
        for name, (user, groups) in identities.items():
            key, cert = ca.issue(user, organizations=groups, client=True)
            document = kubeconfig_document(server, ca_pem, _pem_cert(cert), _pem_key(key), user)
            _write_private(self.config_dir / f"{name}.kubeconfig", document.encode())
        key, cert = ca.issue(
            f"system:node:{self.name}", dns_names=(self.name,), ips=(self.ip,), server=True
        )
        (pki / "kubelet.crt").write_bytes(_pem_cert(cert))
        _write_private(pki / "kubelet.key", _pem_key(key))

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

    def _write_config(self, state: NodeState, binaries: Mapping[str, Path]) -> None:
        config = self.config_dir
        d = self.dir
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
        runc = binaries["runc"]
        restrict_oom = not has_capability(CAP_SYS_RESOURCE)
        (config / "containerd.toml").write_text(
            f"""version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
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
        (config / "resolv.conf").write_text("# the real node has no DNS server\n")
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(d / "pki" / "kubelet.crt"),
            "tlsPrivateKeyFile": str(d / "pki" / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(d / "pki" / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": state.cgroup,
            "failCgroupV1": False,
            "failSwapOn": False,
            "protectKernelDefaults": True,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "resolvConf": str(config / "resolv.conf"),
            "clusterDomain": "cluster.local",
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
            "hostnameOverride": self.name,
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

    def _stop_locked(self) -> None:
        state = self.read_state()
        if state is not None and self._supervisor_alive(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.supervisor, signal.SIGTERM)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and self._supervisor_alive(state):
                time.sleep(0.2)
            if self._supervisor_alive(state):
                log("the node did not stop within 90s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(state.supervisor, signal.SIGKILL)
        cgroup = state.cgroup if state else f"{cgroup_parent().rstrip('/')}/bko-node-{self.id}"
        kill_cgroup(cgroup)
        left = remove_cgroup(cgroup)
        if left:
            raise NodeError(f"cgroups left: {left}")
        if self._netns_exists():
            subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)
        (self.dir / "run-kubelet").unlink(missing_ok=True)
        cluster = self.cluster
        if cluster is None and state is not None:
            cluster = LocalCluster(state.cluster_dir)
        if cluster is not None:
            with contextlib.suppress(ClusterError, OSError):
                if cluster.is_running():
                    cluster.api.delete(f"/api/v1/nodes/{self.name}")
                    self.cluster = cluster
                    self._remove_local_volumes()
        self.state_file.unlink(missing_ok=True)
        if state is not None:
            log(f"stopped the node in {self.dir}")

    # Checks ---------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """What this node left on the machine: processes, mounts, netns, cgroups."""
        found = []
        state = self.read_state()
        cgroup = state.cgroup if state else f"{cgroup_parent().rstrip('/')}/bko-node-{self.id}"
        for mount in cgroup_mounts().values():
            if (mount / cgroup.lstrip("/")).exists():
                found.append(f"cgroup {mount / cgroup.lstrip('/')}")
        if self._netns_exists():
            found.append(f"netns {self.netns}")
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                if str(self.dir) in line.split()[1]:
                    found.append(f"mount {line.split()[1]}")
        ancestors = _ancestors()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in ancestors:
                continue
            argv = _proc_cmdline(int(entry.name))
            if argv and any(str(self.dir) in a for a in argv):
                found.append(f"process {entry.name}: {' '.join(argv)[:120]}")
        return found


def _ancestors() -> set[int]:
    """This process and those that started it (a shell or make naming DIR is not a leftover)."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


# --------------------------------------------------------------------------- supervisor


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _forward(listener: socket.socket, host_netns_fd: int, api_port: int) -> None:
    """Accept in the node's namespace; connect to the API server in the host's."""
    libc = _libc()

    def pump(client: socket.socket) -> None:
        try:
            if libc.setns(host_netns_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            upstream = socket.create_connection(("127.0.0.1", api_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in sel.select():
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            client.close()
            upstream.close()

    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=pump, args=(client,), daemon=True).start()


def supervise(
    directory: Path, host_netns_fd: int, host_mnt_fd: int, owner_pid: int | None = None
) -> int:
    """Runs inside the node's network and mount namespaces; starts and stops the daemons.

    The namespace lives as long as this process: when it exits, the mounts made here go.
    """
    node = LocalNode(directory)
    state = node.read_state()
    if state is None:
        log("no state.json")
        return 1
    libc = _libc()
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    system_cgroup = f"{state.cgroup}/system"
    make_cgroup(system_cgroup)
    for mount in cgroup_mounts().values():
        procs = mount / system_cgroup.lstrip("/") / "cgroup.procs"
        with contextlib.suppress(OSError):
            procs.write_text(str(os.getpid()))

    def sh(*args: str) -> None:
        subprocess.run(args, check=True)

    sysctl_dir = directory / "sysctl"
    sysctl_dir.mkdir(exist_ok=True)
    for key, value in KUBELET_SYSCTLS.items():
        target = Path("/proc/sys") / key
        if not target.exists():
            continue
        source = sysctl_dir / key.replace("/", ".")
        source.write_text(value + "\n")
        sh("mount", "--bind", str(source), str(target))
        sh("mount", "-o", "remount,bind,ro", str(target))
    for private in PRIVATE_DIRS:
        sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", private)
    Path("/var/log/containers").mkdir()
    Path("/run/netns").mkdir()

    listeners = []
    for address in ("127.0.0.1", NODE_IP):
        listener = socket.create_server((address, APISERVER_PORT), backlog=64)
        listeners.append(listener)
        threading.Thread(
            target=_forward, args=(listener, host_netns_fd, state.api_port), daemon=True
        ).start()

    binaries = {k: Path(v) for k, v in state.binaries.items()}
    path_env = ":".join(
        [
            str(binaries["containerd"].parent),
            str(binaries["kubelet"].parent),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    )
    env = {"PATH": path_env, "HOME": str(directory), "LANG": "C.UTF-8"}
    config = directory / "config"
    commands = {
        "containerd": [str(binaries["containerd"]), "--config", str(config / "containerd.toml")],
        "kube-proxy": [str(binaries["kube-proxy"]), f"--config={config / 'kube-proxy.yaml'}"],
        "kubelet": [
            str(binaries["kubelet"]),
            f"--config={config / 'kubelet.yaml'}",
            f"--kubeconfig={config / 'kubelet.kubeconfig'}",
            f"--root-dir={directory / 'kubelet'}",
            f"--cert-dir={directory / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=true",
        ],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def spawn(name: str) -> None:
        with open(directory / "logs" / f"{name}.log", "ab") as out:
            children[name] = subprocess.Popen(
                commands[name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=directory,
            )
        log(f"started {name} (pid {children[name].pid})")

    status = 0
    try:
        spawn("containerd")
        while not stopping.is_set() and not (directory / "run-kubelet").exists():
            if children["containerd"].poll() is not None:
                raise NodeError("containerd exited")
            time.sleep(0.2)
        if not stopping.is_set():
            spawn("kube-proxy")
            spawn("kubelet")
        while not stopping.is_set():
            if owner_pid is not None and not Path(f"/proc/{owner_pid}").exists():
                raise NodeError(f"the process that started the node ({owner_pid}) is gone")
            for name, child in children.items():
                if child.poll() is not None:
                    raise NodeError(f"{name} exited with status {child.returncode}")
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            stopping.wait(0.5)
    except NodeError as exc:
        log(f"error: {exc}")
        status = 1
    finally:
        log("stopping")
        for name in ("kubelet", "kube-proxy"):
            _terminate(children.get(name))
        # The pods: no graceful deletion here; the node and all it ran go together.
        kill_cgroup(f"{state.cgroup}/kubepods")
        _terminate(children.get("containerd"))
        # Shims and anything else left, except this process.
        kill_cgroup(state.cgroup, exclude=(os.getpid(),))
        for listener in listeners:
            listener.close()
        if owner_pid is not None and not Path(f"/proc/{owner_pid}").exists():
            _remove_from_host(state, host_mnt_fd)
        log("stopped")
    return status


def _terminate(child: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM a running child, SIGKILL it if it is still there after ``timeout`` seconds."""
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _remove_from_host(state: NodeState, host_mnt_fd: int) -> None:
    """With nobody left to run `down`: leave the node's cgroups for the parent one and
    remove them, and delete the network namespace through the host's mount namespace
    (its /run/netns is hidden here)."""
    parent = state.cgroup.rsplit("/", 1)[0] or "/"
    for mount in cgroup_mounts().values():
        with contextlib.suppress(OSError):
            (mount / parent.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))
    left = remove_cgroup(state.cgroup)
    subprocess.run(
        ["nsenter", f"--mount=/proc/self/fd/{host_mnt_fd}", "--", "ip", "netns", "del",
         state.netns],
        check=False,
        pass_fds=(host_mnt_fd,),
    )  # fmt: skip
    log(f"removed the node's cgroups{f' (left: {left})' if left else ''} and network namespace")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the node (no-op if it runs) and wait until Ready")
    up.add_argument("--dir", required=True)
    up.add_argument("--cluster-dir", required=True)
    up.add_argument("--bin-path", help="colon-separated directories holding the node binaries")
    up.add_argument("--timeout", type=float, default=600)
    down = sub.add_parser("down", help="stop the node and remove all it made")
    down.add_argument("--dir", required=True)
    status = sub.add_parser("status", help="is the node running and Ready")
    status.add_argument("--dir", required=True)
    sup = sub.add_parser("_supervise")
    sup.add_argument("--dir", required=True)
    sup.add_argument("--host-netns-fd", type=int, required=True)
    sup.add_argument("--host-mnt-fd", type=int, required=True)
    sup.add_argument("--owner-pid", type=int, help="stop, and remove all, when this pid is gone")
    args = parser.parse_args(argv)

    try:
        if args.command == "_supervise":
            return supervise(Path(args.dir), args.host_netns_fd, args.host_mnt_fd, args.owner_pid)
        if args.command == "up":
            began = time.monotonic()
            cluster = LocalCluster(args.cluster_dir)
            LocalNode(args.dir, cluster, args.bin_path).start(timeout=args.timeout)
            log(f"up in {time.monotonic() - began:.1f}s")
            return 0
        node = LocalNode(args.dir)
        state = node.read_state()
        if state is not None:
            node.cluster = LocalCluster(state.cluster_dir)
        if args.command == "down":
            node.stop()
            left = node.leftovers()
            if left:
                log("left behind: " + "; ".join(left))
                return 1
        elif args.command == "status":
            running = node.is_running()
            print(f"{node.name} {'Ready' if running else 'not running'} (netns {node.netns})")
            return 0 if running else 1
    except (ClusterError, subprocess.CalledProcessError, node_images.ImageError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
