"""The node's processes as the host sees them: state.json, the supervisor (started in the
node's namespaces, found again by its command line), containerd and its images, and what a
stopped node may have left on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cgroups import cgroup_mounts, cgroup_parent
from localcluster.api import ClusterError
from localcluster.config import egress_socket
from localcluster.processes import proc_cmdline, proc_state

from .netns import netns_exists

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

# The command line, which runs the supervisor too (``node.py _supervise``).
NODE_PY = Path(__file__).resolve().parent.parent / "node.py"


def log(message: str) -> None:
    print(f"node: {message}", file=sys.stderr, flush=True)


class NodeError(ClusterError):
    pass


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


def read_state(state_file: Path) -> NodeState | None:
    try:
        return NodeState.from_json(state_file.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def ancestors() -> set[int]:
    """This process and those that started it (a shell or make naming DIR is not a leftover)."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


class NodeProcesses:
    """LocalNode's processes: the supervisor it starts and finds again, containerd's
    images, its logs and state.json, and the leftovers check."""

    dir: Path
    id: str
    netns: str
    die_with_parent: bool
    cluster: LocalCluster | None

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def tail(self, component: str, lines: int = 40) -> str:
        try:
            text = self.log_file(component).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log for {component})"
        return f"--- last lines of {self.log_file(component)}:\n" + "\n".join(text)

    def read_state(self) -> NodeState | None:
        return read_state(self.state_file)

    def _write_state(self, state: NodeState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    def _default_cgroup(self) -> str:
        return f"{cgroup_parent().rstrip('/')}/bko-node-{self.id}"

    def _spawn_supervisor(self, binaries: Mapping[str, Path]) -> subprocess.Popen[bytes]:
        """``hack/node.py _supervise`` in the node's network namespace and a mount namespace
        of its own, handed the host's namespaces to reach back (the API server, cleanup)."""
        host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        host_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        owner = ["--owner-pid", str(os.getpid())] if self.die_with_parent else []
        try:
            with open(self.log_file("supervisor"), "ab") as out:
                return subprocess.Popen(
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
                        str(NODE_PY),
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

    def _supervisor_alive(self, state: NodeState | None) -> bool:
        if state is None or not state.supervisor:
            return False
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(state.supervisor, os.WNOHANG)
        argv = proc_cmdline(state.supervisor)
        return bool(
            argv
            and proc_state(state.supervisor) not in (None, "Z", "X")
            and "_supervise" in argv
            and str(self.dir) in argv
        )

    def _containerd_up(self, ctr: Path) -> bool:
        if not self.containerd_socket.exists():
            return False
        version = [str(ctr), "--address", str(self.containerd_socket), "version"]
        return subprocess.run(version, capture_output=True, check=False).returncode == 0

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

    def leftovers(self) -> list[str]:
        """What this node left on the machine: processes, mounts, netns, cgroups."""
        found = []
        state = self.read_state()
        cgroup = state.cgroup if state else self._default_cgroup()
        for mount in cgroup_mounts().values():
            if (mount / cgroup.lstrip("/")).exists():
                found.append(f"cgroup {mount / cgroup.lstrip('/')}")
        if netns_exists(self.netns):
            found.append(f"netns {self.netns}")
        cluster_dir = state.cluster_dir if state else self.cluster and self.cluster.dir
        if cluster_dir and egress_socket(Path(cluster_dir)).exists():
            found.append(f"socket {egress_socket(Path(cluster_dir))}")
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                if str(self.dir) in line.split()[1]:
                    found.append(f"mount {line.split()[1]}")
        skip = ancestors()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in skip:
                continue
            argv = proc_cmdline(int(entry.name))
            if argv and any(str(self.dir) in a for a in argv):
                found.append(f"process {entry.name}: {' '.join(argv)[:120]}")
        return found
