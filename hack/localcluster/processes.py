"""The cluster's processes: free ports, /proc lookups, signals and reaping, the state.json
that finds a running cluster again, and ComponentProcesses (LocalCluster's spawning,
stopping and stray-finding)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .api import ComponentExited, log, wait_for
from .config import COMPONENTS


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1, all distinct (the sockets are held together)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by pid (each component runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def parent_death_signal() -> Callable[[], None]:
    """A preexec_fn: the child is killed when the process that started it dies.

    SIGKILL, not SIGTERM: all components get it at once, and a kube-apiserver whose etcd
    went away at the same moment hangs in its graceful shutdown. The data is thrown away.
    libc is loaded here, in the parent: the child must not import anything between fork
    and exec.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return preexec


@dataclass
class State:
    """What a running cluster needs to be found again: ports, pids and the binaries used."""

    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    binaries: dict[str, str] = field(default_factory=dict)
    started: float = 0.0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        return cls(
            ports={k: int(v) for k, v in data["ports"].items()},
            pids={k: int(v) for k, v in data.get("pids", {}).items()},
            binaries=dict(data.get("binaries", {})),
            started=float(data.get("started", 0.0)),
        )


class ComponentProcesses:
    """LocalCluster's processes: each component in a session of its own, logging to
    ``logs/<component>.log``, its pid in ``state.json``; ours are told apart from others'
    by this directory on their command line."""

    dir: Path
    die_with_parent: bool
    _children: dict[str, subprocess.Popen[bytes]]
    _state: State | None

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def _read_state(self) -> State | None:
        try:
            return State.from_json(self.state_file.read_text())
        except (OSError, ValueError, KeyError):
            return None

    def _alive(self, pid: int) -> bool:
        """Is pid one of our processes (its command line names this directory) and running?"""
        reap(pid)
        argv = proc_cmdline(pid)
        if not argv or proc_state(pid) in (None, "Z", "X"):
            return False
        return self._owns(argv)

    def _owns(self, argv: Sequence[str]) -> bool:
        if Path(argv[0]).name not in COMPONENTS:
            return False
        marker = f"{self.dir}/"
        return any(marker in arg for arg in argv[1:])

    def _check_running(self, component: str) -> bool:
        child = self._children.get(component)
        if child is not None and child.poll() is not None:
            raise ComponentExited(
                f"{component} exited with status {child.returncode}\n{self._tail(component)}"
            )
        return True

    def _tail(self, component: str, lines: int = 30) -> str:
        try:
            text = self.log_file(component).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log for {component})"
        return f"--- last lines of {self.log_file(component)}:\n" + "\n".join(text)

    def _spawn(
        self, component: str, args: list[str], state: State, env: Mapping[str, str] | None = None
    ) -> None:
        binary = state.binaries[component]
        environment = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        environment.update(env or {})
        with open(self.log_file(component), "ab") as out:
            child = subprocess.Popen(
                [binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=environment,
                start_new_session=True,
                preexec_fn=parent_death_signal() if self.die_with_parent else None,
            )
        self._children[component] = child
        state.pids[component] = child.pid
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    def _strays(self) -> list[int]:
        """Processes of this cluster not (or no longer) in state.json."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            argv = proc_cmdline(int(entry.name))
            if argv and self._owns(argv) and proc_state(int(entry.name)) not in ("Z", "X"):
                found.append(int(entry.name))
        return found

    def _stop_locked(self, timeout: float = 15) -> None:
        """Stop in reverse start order: clients first, then the API server, etcd last.

        The API server drains its requests on SIGTERM, which takes long if etcd went first.
        """
        state = self._read_state()
        tracked: dict[str, int] = {}
        if state is not None:
            tracked = {c: p for c, p in state.pids.items() if c in COMPONENTS and self._alive(p)}
        strays = [p for p in self._strays() if p not in tracked.values()]
        waves: list[list[tuple[str, int]]] = [
            [
                (c, tracked[c])
                for c in ("kwok", "kube-scheduler", "kube-controller-manager")
                if c in tracked
            ]
            + [("stray", p) for p in strays],
            [(c, tracked[c]) for c in ("kube-apiserver",) if c in tracked],
            [(c, tracked[c]) for c in ("etcd",) if c in tracked],
        ]
        stopped = 0
        for index, wave in enumerate(waves):
            if wave:
                # Without etcd the API server cannot drain: do not wait long for it.
                patience = timeout if index != 1 or "etcd" in tracked else min(timeout, 2)
                self._terminate(wave, patience)
                stopped += len(wave)
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._children.clear()
        if stopped:
            log(f"stopped {stopped} processes of {self.dir}")
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self._state = None

    def _terminate(self, processes: Sequence[tuple[str, int]], timeout: float) -> None:
        """SIGTERM each process group, SIGKILL what is still alive after timeout seconds."""
        for _, pid in processes:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._alive(p) for _, p in processes):
            time.sleep(0.05)
        for name, pid in processes:
            if self._alive(pid):
                log(f"{name} (pid {pid}) still running {timeout:.0f}s after SIGTERM: SIGKILL")
                signal_group(pid, signal.SIGKILL)
        wait_for(
            lambda: not any(self._alive(p) for _, p in processes),
            "processes to exit after SIGKILL",
            10,
        )


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` exclusively: one `up` or `down` of a cluster or node at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
