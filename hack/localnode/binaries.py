"""The node's binaries: containerd, runc, kubelet, kube-proxy and the CNI plugins built by
hack/build-tools.sh, and the host's programs (nft, ip, nsenter, unshare, mount).

runc is the pinned one, not the host's: Debian bookworm's runc 1.1.5 has no idmapped mounts,
so user-namespaced pods (``hostUsers: false``) could not run on the node."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from localcluster.binaries import BUILD_TOOLS, split_paths

from .processes import NodeError

NODE_TOOLS = ("containerd", "runc", "cni", "kubernetes-node")
NODE_BINARIES = (
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "kubelet",
    "kube-proxy",
    "bridge",
)
HOST_PROGRAMS = ("nft", "ip", "nsenter", "unshare", "mount")


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
