"""LocalCluster: a control plane in one directory, its paths, and its lifecycle.

    cluster = LocalCluster(tmp_dir, bin_paths).start()
    cluster.kubeconfig, cluster.audit_log, cluster.api.get("/version"), cluster.recycle_volumes()
    cluster.stop()

Layout of the directory: kubeconfig (admin, system:masters), audit.log (write requests at
Metadata level), state.json (ports and process ids), logs/<component>.log, pki/, etcd/,
config/. All servers listen on free 127.0.0.1 ports, so several clusters can run side by side.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import config
from .api import Api, ClusterError, ComponentExited, http_ok, https_ok, log, wait_for
from .binaries import build_tool_paths, find_binaries, split_paths
from .faults import Faults
from .kubectl import Kubectl
from .manifests import NODES, STORAGE_CLASSES, NodeSpec
from .objects import ClusterObjects
from .pki import CertificateAuthority, write_cluster_pki
from .processes import State, directory_lock, free_ports


class LocalCluster(ClusterObjects, Faults):
    """A local control plane in one directory. start() and stop() are idempotent."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        bin_paths: str | Sequence[str | os.PathLike[str]] | None = None,
        *,
        die_with_parent: bool = False,
        storage_classes: Mapping[str, int] | None = None,
        extra_nodes: int = 0,
        audit_read_users: Sequence[str] = (),
        unthrottled: bool = False,
    ) -> None:
        """``extra_nodes`` adds that many amd64 kwok nodes (NODE_ALLOCATABLE each) for runs
        with more pods than the default three hold; ``audit_read_users`` records those
        users' reads too (a benchmark counts them), leaving everyone else's unrecorded.
        ``unthrottled`` lifts the controller manager's client rate, so that the time for
        many Deployments to become available is bound by the API server (a benchmark's
        floor); the tests keep the default rate, a real cluster's."""
        self.dir = Path(directory).resolve()
        self.nodes: tuple[NodeSpec, ...] = NODES + tuple(
            NodeSpec(f"kwok-extra-{i + 1}", "amd64") for i in range(extra_nodes)
        )
        self.audit_read_users = tuple(audit_read_users)
        self.unthrottled = unthrottled
        self._bin_paths = split_paths(bin_paths)
        self.die_with_parent = die_with_parent
        self.storage_classes = dict(storage_classes or STORAGE_CLASSES)
        self._deleting = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._state: State | None = None

    # Paths (state.json and the logs: ComponentProcesses) --------------------

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = self._read_state()
            if self._state is None:
                raise ClusterError(f"no cluster state in {self.dir}: run `up` first")
        return self._state

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state.ports['apiserver']}"

    @property
    def bin_dirs(self) -> list[Path]:
        """Directories of the binaries the cluster runs (kubectl included)."""
        binaries = self.state.binaries or {}
        dirs: list[Path] = []
        for path in binaries.values():
            parent = Path(path).parent
            if parent not in dirs:
                dirs.append(parent)
        return dirs

    @property
    def kubectl_path(self) -> Path:
        return Path(self.state.binaries["kubectl"])

    def kubectl(self, cache_dir: Path | None = None) -> Kubectl:
        """The cluster's own (pinned) kubectl with the admin kubeconfig."""
        return Kubectl(self.kubectl_path, self.kubeconfig, cache_dir)

    @property
    def api(self) -> Api:
        return Api(
            "127.0.0.1",
            self.state.ports["apiserver"],
            self.pki / "ca.crt",
            self.pki / "admin.crt",
            self.pki / "admin.key",
        )

    def client_kubeconfig(
        self, user: str, groups: Sequence[str] = (), path: Path | None = None
    ) -> Path:
        """Write a kubeconfig for a client-certificate user of this cluster (for RBAC tests)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        target = path or self.dir / "config" / f"user-{safe}.kubeconfig"
        return CertificateAuthority.load(self.pki).client_kubeconfig(
            self.server, user, groups, target
        )

    def env_lines(self, path: Sequence[Path] | None = None) -> list[str]:
        """``export`` lines for a POSIX shell: KUBECONFIG, and ``path`` first on PATH."""
        lines = [f"export KUBECONFIG={shlex.quote(str(self.kubeconfig))}"]
        if path:
            joined = os.pathsep.join(str(p) for p in path)
            lines.append(f'export PATH={shlex.quote(joined)}"{os.pathsep}$PATH"')
        return lines

    # Lifecycle -------------------------------------------------------------

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return directory_lock(self.dir)

    def running_components(self) -> dict[str, bool]:
        state = self._read_state()
        if state is None:
            return {c: False for c in config.COMPONENTS}
        return {c: c in state.pids and self._alive(state.pids[c]) for c in config.COMPONENTS}

    def is_running(self) -> bool:
        """All processes alive and the API server ready."""
        if not all(self.running_components().values()):
            return False
        self._state = self._read_state()
        try:
            return self.api.request("GET", "/readyz", timeout=5) == "ok"
        except (OSError, ClusterError):
            return False

    def start(self, timeout: float = 180) -> LocalCluster:
        """Start the cluster and wait until it is healthy; a no-op if it already runs."""
        with self._locked():
            if self.is_running():
                log(f"already running in {self.dir} ({self.server})")
                self.ensure_volumes()
                return self
            if self._read_state() is not None or self._strays():
                log(f"cleaning up a stopped cluster in {self.dir}")
                self._stop_locked()
            for attempt in range(1, 4):
                self._clean()
                try:
                    self._start_locked(timeout)
                    break
                except ComponentExited as exc:
                    self._stop_locked()
                    # A free port can be taken between choosing it and binding it.
                    if attempt == 3 or "address already in use" not in str(exc):
                        log(f"start failed; logs are in {self.logs_dir}")
                        raise
                    log("a port was taken meanwhile; starting again on other ports")
                except BaseException:
                    log(f"start failed; logs are in {self.logs_dir}")
                    self._stop_locked()
                    raise
        return self

    def stop(self, timeout: float = 15) -> None:
        """Stop every process of this cluster: SIGTERM, then SIGKILL after timeout seconds."""
        with self._locked():
            self._stop_locked(timeout)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _clean(self) -> None:
        """Remove what a previous cluster left here (only the paths this module creates)."""
        for name in ("etcd", "pki", "config", "volumes", "kwok-home", "logs"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        for name in ("kubeconfig", "audit.log", "state.json", config.EGRESS_SOCKET):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

    def _start_locked(self, timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        bin_paths = self._bin_paths or build_tool_paths()
        binaries = find_binaries(bin_paths)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
        state = State(
            ports=dict(zip(names, free_ports(len(names)), strict=True)),
            binaries={k: str(v) for k, v in binaries.items()},
            started=time.time(),
        )
        self._state = state
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        api_port = state.ports["apiserver"]
        write_cluster_pki(
            self.pki, self.dir / "config", self.kubeconfig, f"https://127.0.0.1:{api_port}"
        )
        config.write_config(self.dir, self.audit_read_users, self.audit_log)
        log(
            f"starting {config.KUBERNETES_VERSION} in {self.dir} "
            f"(API server on 127.0.0.1:{api_port})"
        )

        def remaining() -> float:
            return max(1.0, deadline - time.monotonic())

        self._spawn("etcd", self._etcd_args(state), state)
        self._spawn("kube-apiserver", self._apiserver_args(state), state)
        wait_for(
            lambda: self._check_running("etcd") and http_ok(state.ports["etcd"], "/health"),
            "etcd",
            remaining(),
        )
        wait_for(
            lambda: (
                self._check_running("kube-apiserver")
                and self.api.request("GET", "/readyz", timeout=5) == "ok"
            ),
            "kube-apiserver /readyz",
            remaining(),
            on_timeout=lambda: self._tail("kube-apiserver"),
        )
        log(f"API server ready after {time.monotonic() - started:.1f}s")
        self._spawn(
            "kube-controller-manager",
            config.controller_manager_args(self.dir, state.ports, unthrottled=self.unthrottled),
            state,
        )
        self._spawn("kube-scheduler", config.scheduler_args(self.dir, state.ports), state)
        self._spawn(
            "kwok", config.kwok_args(self.dir), state, env={"HOME": str(self.dir / "kwok-home")}
        )
        self._create_cluster_objects()
        ca = self.pki / "ca.crt"
        for component, port in (
            ("kube-controller-manager", state.ports["controller-manager"]),
            ("kube-scheduler", state.ports["scheduler"]),
        ):
            wait_for(
                lambda c=component, p=port: self._check_running(c) and https_ok(p, "/healthz", ca),
                f"{component} /healthz",
                remaining(),
                on_timeout=lambda c=component: self._tail(c),
            )
        wait_for(
            self._nodes_ready,
            "kwok nodes Ready",
            remaining(),
            on_timeout=lambda: self._tail("kwok"),
        )
        wait_for(
            lambda: self.api.exists("/api/v1/namespaces/default/serviceaccounts/default"),
            "the default ServiceAccount",
            remaining(),
            on_timeout=lambda: self._tail("kube-controller-manager"),
        )
        wait_for(self._volumes_available, "PersistentVolumes Available", remaining())
        log(f"healthy after {time.monotonic() - started:.1f}s; KUBECONFIG={self.kubeconfig}")

    # The two components the faults restart, too.

    def _etcd_args(self, state: State) -> list[str]:
        return config.etcd_args(self.dir, state.ports)

    def _apiserver_args(self, state: State) -> list[str]:
        return config.apiserver_args(self.dir, state.ports, self.audit_log)
