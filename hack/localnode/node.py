"""LocalNode: one real node in one directory, joined to a LocalCluster; its paths and its
lifecycle. ``LocalNode(dir, cluster).start()``, ``.netns``, ``.exec_prefix``, ``.stop()``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import node_images
from cgroups import kill_cgroup, make_cgroup, remove_cgroup
from localcluster.api import ClusterError, ComponentExited, wait_for
from localcluster.binaries import split_paths
from localcluster.cluster import LocalCluster
from localcluster.config import egress_socket
from localcluster.manifests import node_is_ready
from localcluster.processes import directory_lock

from .binaries import find_node_binaries, node_tool_paths
from .config import NODE_IP, NODE_NAME, write_node_config, write_node_pki
from .netns import delete_netns, make_netns, netns_exists
from .objects import NodeObjects
from .processes import NodeError, NodeProcesses, NodeState, log


def node_id(directory: Path) -> str:
    return hashlib.sha256(str(directory).encode()).hexdigest()[:8]


class LocalNode(NodeObjects, NodeProcesses):
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

    # Paths (logs, state.json, containerd's socket: NodeProcesses) -----------

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    @property
    def exec_prefix(self) -> list[str]:
        """Run a command in the node's network namespace (where Service IPs answer)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return directory_lock(self.dir)

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
            if self.read_state() is not None or netns_exists(self.netns):
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

    def _start_locked(self, timeout: float) -> None:
        assert self.cluster is not None
        deadline = time.monotonic() + timeout
        bin_paths = self._bin_paths or node_tool_paths()
        binaries = find_node_binaries(bin_paths)
        log("images (hack/node_images.py; cached by content)")
        images = node_images.build()
        cgroup = self._default_cgroup()
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
        # A container in a user namespace (hostUsers: false) is set up by runc already inside
        # it, as an unprivileged host uid that must reach its rootfs under containerd's state:
        # every directory above it searchable (not listable) by all, as /run/containerd on a
        # real node. containerd makes its own that way; these two are the node's.
        for d in (self.dir, self.dir / "containerd"):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o711)
        self._write_state(state)
        make_netns(self.netns, self.ip)
        write_node_pki(self.dir, self.cluster.pki, self.name, self.ip)
        write_node_config(
            self.dir, state.cgroup, binaries, self.containerd_socket, self.name, self.ip
        )
        self._grant_node_rights()
        # A Node object left by an earlier run would read Ready before this kubelet is.
        self.cluster.api.delete(f"/api/v1/nodes/{self.name}")
        make_cgroup(cgroup)

        child = self._spawn_supervisor(binaries)
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
        self._start_cluster_dns()
        self.ensure_local_volumes()

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
        cgroup = state.cgroup if state else self._default_cgroup()
        kill_cgroup(cgroup)
        left = remove_cgroup(cgroup)
        if left:
            raise NodeError(f"cgroups left: {left}")
        delete_netns(self.netns)
        (self.dir / "run-kubelet").unlink(missing_ok=True)
        cluster = self.cluster
        if cluster is None and state is not None:
            cluster = LocalCluster(state.cluster_dir)
        if cluster is not None:
            # The supervisor removes the egress socket as it stops; not when it was killed.
            egress_socket(cluster.dir).unlink(missing_ok=True)
            with contextlib.suppress(ClusterError, OSError):
                if cluster.is_running():
                    cluster.api.delete(f"/api/v1/nodes/{self.name}")
                    self.cluster = cluster
                    self._remove_local_volumes()
        self.state_file.unlink(missing_ok=True)
        if state is not None:
            log(f"stopped the node in {self.dir}")
