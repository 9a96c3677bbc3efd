"""cgroup v1/v2 helpers for the processes the local tooling starts: make a cgroup in every
hierarchy under the one this process runs in, kill what is in it, remove it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path


class CgroupError(RuntimeError):
    pass


def cgroup_mounts() -> dict[str, Path]:
    """Every cgroup hierarchy: {controllers or name (or "" for v2): mount point}."""
    found: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup":
                controllers = [o for o in options.split(",") if o not in ("rw", "ro", "relatime")]
                found[",".join(controllers)] = Path(fields[4])
            elif fstype == "cgroup2":
                found[""] = Path(fields[4])
    return found


def own_cgroups() -> dict[str, str]:
    """This process's cgroup in each hierarchy ({controllers: path}, "" for v2)."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def cgroup_parent() -> str:
    """The cgroup the node's own goes under: this process's memory cgroup, the one whose
    limits apply to the whole run."""
    for controllers, path in own_cgroups().items():
        if "memory" in controllers.split(","):
            return path
    return "/"


def cgroup_pids(path: str) -> list[int]:
    """Every process in the cgroup path and below, in every hierarchy."""
    pids: set[int] = set()
    for mount in cgroup_mounts().values():
        top = mount / path.lstrip("/")
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def make_cgroup(path: str) -> list[str]:
    """mkdir -p the cgroup path in every hierarchy; returns the directories made."""
    made = []
    for mount in cgroup_mounts().values():
        current = mount
        for part in Path(path.lstrip("/")).parts:
            parent, current = current, current / part
            if current.is_dir():
                continue
            current.mkdir()
            made.append(str(current))
            # A new cpuset takes no task until it has CPUs and memory nodes.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (parent / name).exists():
                    (current / name).write_text((parent / name).read_text())
    return made


def remove_cgroup(path: str) -> list[str]:
    """rmdir the cgroup path and everything below it, deepest first, in every hierarchy.
    Returns the directories that could not be removed (still holding processes)."""
    left = []
    for mount in cgroup_mounts().values():
        top = mount / path.lstrip("/")
        if not top.is_dir():
            continue
        dirs = [top, *[p for p in top.rglob("*") if p.is_dir()]]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(str(d))
    return left


def kill_cgroup(path: str, exclude: Sequence[int] = (), timeout: float = 20) -> None:
    """SIGKILL every process in the cgroup tree until none is left (new ones may fork)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in cgroup_pids(path) if p not in exclude and p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # Reap our own (the supervisor is a subreaper for the whole node).
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        time.sleep(0.1)
    raise CgroupError(f"processes still in cgroup {path}: {cgroup_pids(path)}")
