"""The pinned binaries the cluster runs: found in given directories only (never the PATH,
which may hold other builds), or built and cached by hack/build-tools.sh."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .api import ClusterError
from .config import HACK_DIR

BUILD_TOOLS = HACK_DIR / "build-tools.sh"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)


def split_paths(paths: str | Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, str):
        return [Path(p) for p in paths.split(os.pathsep) if p]
    return [Path(p) for p in paths]


def build_tool_paths(tools: Sequence[str] = ("kubernetes", "etcd", "kwok")) -> list[Path]:
    """Build the pinned tools that are not cached yet and return their bin directories."""
    result = subprocess.run(
        [str(BUILD_TOOLS), "--print-path", *tools],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(
            f"{BUILD_TOOLS.name} {' '.join(tools)} failed (exit {result.returncode}); "
            "its output above says why"
        )
    return split_paths(result.stdout.strip())


def find_binaries(bin_paths: Sequence[Path]) -> dict[str, Path]:
    """Locate our binaries in bin_paths only: never the PATH, which may hold other builds."""
    found: dict[str, Path] = {}
    for name in BINARIES:
        for directory in bin_paths:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate.resolve()
                break
    missing = [n for n in BINARIES if n not in found]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)} in {os.pathsep.join(map(str, bin_paths)) or '(none)'}; "
            f"build them with: {BUILD_TOOLS} --print-path kubernetes etcd kwok"
        )
    return found
