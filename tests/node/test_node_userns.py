"""``securityProfile: userns`` on the real node: the daemon runs in the pod's own user
namespace (``hostUsers: false``), uid 0 there and an unprivileged uid on the host, and builds.

What it takes (Kubernetes' user namespaces page): a runtime whose runc mounts the pod's
volumes idmapped (runc ≥ 1.2; the node's is built from hack/tools/runc) and a kernel and
file system that accept idmapped mounts. Where either is missing the test skips, saying
which and the kernel's own answer.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from buildkit_e2e import check_run_output, oci_image_files, run_build_inputs
from node_helpers import (
    Host,
    connect,
    container_pid,
    read_proc,
    ready_builder,
    report,
    running_pod,
)
from operator_process import OperatorProcess

from localcluster.api import Api
from localnode.node import LocalNode

REAL_NODE = {"buildkit-operator.dev/real-node": "true"}
# linux/mount.h and the x86_64 syscall table: open_tree(2) and mount_setattr(2).
SYS_OPEN_TREE, SYS_MOUNT_SETATTR = 428, 442
OPEN_TREE_CLONE, AT_EMPTY_PATH, MOUNT_ATTR_IDMAP = 1, 0x1000, 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _idmap_refused(directory: Path) -> str | None:
    """Ask the kernel for an idmapped mount of ``directory`` (a detached copy, gone when
    its descriptor closes), as the runtime will for the pod's volumes; its refusal, if any."""
    libc = ctypes.CDLL(None, use_errno=True)
    holder = subprocess.Popen(["unshare", "--user", "sleep", "30"])
    tree = -1
    try:
        for _ in range(100):  # until unshare has entered its namespace
            if os.readlink(f"/proc/{holder.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.05)
        Path(f"/proc/{holder.pid}/uid_map").write_text("0 1000000 65536\n")
        Path(f"/proc/{holder.pid}/gid_map").write_text("0 1000000 65536\n")
        userns = os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY)
        try:
            tree = libc.syscall(SYS_OPEN_TREE, -100, str(directory).encode(), OPEN_TREE_CLONE)
            if tree < 0:
                return f"open_tree({directory}): {os.strerror(ctypes.get_errno())}"
            attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns)
            size = ctypes.sizeof(attr)
            if libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), size):
                return f"idmapped mount of {directory}: {os.strerror(ctypes.get_errno())}"
        finally:
            os.close(userns)
    finally:
        if tree >= 0:
            os.close(tree)
        holder.kill()
        holder.wait()
    return None


def _unsearchable_parent(directory: Path) -> Path | None:
    """The runtime sets a user-namespaced container up as its unprivileged host uid, which
    must walk down to the rootfs under the node's directory."""
    for parent in [directory, *directory.parents]:
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def _userns_unsupported(node: LocalNode) -> str | None:
    """Why this node cannot run user-namespaced pods, if it cannot."""
    state = node.read_state()
    assert state is not None
    runc = state.binaries["runc"]
    result = subprocess.run([runc, "features"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        version = subprocess.run([runc, "--version"], capture_output=True, text=True).stdout
        return f"{runc} ({version.splitlines()[0] if version else '?'}) has no `runc features`"
    features = json.loads(result.stdout)
    if not features.get("linux", {}).get("mountExtensions", {}).get("idmap", {}).get("enabled"):
        return f"{runc} reports no idmapped mounts: {result.stdout.strip()}"
    closed = _unsearchable_parent(node.dir)
    if closed is not None:
        return f"{closed} is not searchable by others, so a pod's host uid cannot reach its rootfs"
    return _idmap_refused(node.dir)


def _uid_map(pid: int) -> list[tuple[int, int, int]]:
    """/proc/<pid>/uid_map as the host reads it: (inside, outside, count) rows."""
    rows = Path(f"/proc/{pid}/uid_map").read_text().splitlines()
    return [(int(a), int(b), int(c)) for a, b, c in (r.split() for r in rows if r.strip())]


def test_userns_profile_builds_on_the_node(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    why = _userns_unsupported(node)
    if why:
        pytest.skip(f"securityProfile userns on the real node: {why}")
    name = "userns"
    ready_builder(
        api,
        node,
        node_namespace,
        name,
        {"securityProfile": "userns", "cache": {"type": "ephemeral"}, "nodeSelector": REAL_NODE},
    )
    pod = running_pod(api, node_namespace, name)
    assert pod["spec"].get("hostUsers") is False, pod["spec"]
    # The daemon as the host sees it: its user namespace maps uid 0 to an unprivileged host
    # uid (kubelet's ranges start past the host's 0-65535, 65536 ids a pod), and the host
    # reads that uid as the daemon's.
    pid = container_pid(node, pod)
    daemon = read_proc(pid)
    uid_map = _uid_map(pid)
    assert uid_map != [(0, 0, 4294967295)], "the daemon runs in the host's user namespace"
    ((inside, outside, count),) = uid_map
    assert inside == 0 and outside >= 65536 and count == 65536, uid_map
    assert daemon.name == "buildkitd" and daemon.uid == outside, (daemon, uid_map)
    # uid 0 inside: the same status file read from within the daemon's user namespace
    # (nsenter -U becomes that namespace's root), where the kernel translates its uids.
    inside_view = subprocess.run(
        ["nsenter", "-t", str(pid), "-U", "--", "cat", f"/proc/{pid}/status"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    inside_uids = next(x for x in inside_view.splitlines() if x.startswith("Uid:")).split()[1:]
    assert inside_uids == ["0", "0", "0", "0"], inside_view
    report(
        f"userns: buildkitd pid {pid}: uid_map '{inside} {outside} {count}', the host reads "
        f"Uid {daemon.uid}, its own namespace reads Uid {' '.join(inside_uids)}"
    )
    inputs = run_build_inputs(tmp_path / "build", f"userns {secrets.token_hex(4)}", loops=1000)
    client = connect(node, api, node_namespace, name, tmp_path / "c").client(node, buildctl_bin)
    started = time.monotonic()
    client.build(
        inputs.context,
        f"type=oci,dest={tmp_path / 'u.tar'}",
        opts=inputs.opts,
        locals_=inputs.locals_,
    )
    check_run_output(oci_image_files(tmp_path / "u.tar"), inputs)
    report(f"userns: a build with a RUN step succeeded in {time.monotonic() - started:.1f}s")
