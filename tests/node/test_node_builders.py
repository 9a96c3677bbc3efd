"""Builders on a real node: the rendered pods run real buildkitd in containers, and clients
build through the Builder's Service over mutual TLS."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from buildkit_e2e import (
    Buildctl,
    check_run_output,
    oci_image_files,
    run_build_inputs,
)
from node_helpers import (
    HOST_SYSCTLS,
    NodeBuildctl,
    connect,
    container_pid,
    mount_points,
    pod_processes,
    read_sysctls,
    report,
    running_pod,
)

from cgroups import cgroup_parent
from localcluster.api import Api
from localcluster.manifests import node_is_ready
from localnode.config import NODE_IP
from localnode.node import LocalNode

ROOTLESS_UID = 1000


@pytest.fixture(params=["rootless", "rootful"])
def any_builder(request: pytest.FixtureRequest) -> str:
    name: str = request.getfixturevalue(f"{request.param}_builder")
    return name


def test_node_is_a_real_kubelet_and_the_host_keeps_its_settings(
    node: LocalNode, api: Api, host_sysctls: dict[str, str]
) -> None:
    live = api.get(f"/api/v1/nodes/{node.name}")
    info = live["status"]["nodeInfo"]
    assert node_is_ready(live)
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"] == "containerd://2.4.2"
    assert {"type": "InternalIP", "address": NODE_IP} in live["status"]["addresses"]
    kwok = [n for n in api.get("/api/v1/nodes")["items"] if n["metadata"]["name"] != node.name]
    assert kwok, "the fake nodes stay beside the real one"
    # kubelet saw the values it wants; the host kept its own.
    assert read_sysctls(HOST_SYSCTLS) == host_sysctls
    state = node.read_state()
    assert state is not None
    assert state.cgroup.startswith(cgroup_parent().rstrip("/") + "/")


def test_default_builder_runs_rootless_with_its_cache_config_and_certs(
    node: LocalNode, api: Api, builders_namespace: str, rootless_builder: str
) -> None:
    pod = running_pod(api, builders_namespace, rootless_builder)
    assert pod["spec"]["nodeName"] == node.name
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, status
    pid = container_pid(node, pod)
    processes = pod_processes(node, pod)
    entry = next(p for p in processes if p.pid == pid)
    # The container's first process (rootlesskit) runs as uid 1000 with no capabilities;
    # nothing in the pod runs as the host's root.
    assert entry.uid == ROOTLESS_UID and entry.cap_eff == 0, entry
    assert all(p.uid != 0 for p in processes), processes
    # Its bounding set holds only what newuidmap and newgidmap gain at exec (linux/capability.h:
    # CAP_SETGID 6, CAP_SETUID 7).
    assert entry.cap_bnd == 1 << 6 | 1 << 7, f"{entry.cap_bnd:#x}"
    daemon = next(p for p in processes if p.name == "buildkitd")
    # buildkitd runs as root of that user namespace, whose bounding set the kernel filled
    # anew: every capability there, none on the node.
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    full = (1 << (last + 1)) - 1
    assert daemon.cap_eff == full and daemon.cap_bnd == full, daemon
    mounts = mount_points(pid)
    for path in ("/home/user/.local/share/buildkit", "/etc/buildkit", "/certs"):
        assert path in mounts, (path, mounts)
    # The cache is the node's local volume, written by the daemon as uid 1000.
    claim = api.get(
        f"/api/v1/namespaces/{builders_namespace}/persistentvolumeclaims/"
        f"{pod['spec']['volumes'][1]['persistentVolumeClaim']['claimName']}"
    )
    pv = api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    volume = Path(pv["spec"]["local"]["path"])
    assert volume.is_relative_to(node.volumes_dir)
    written = [p for p in volume.rglob("*") if p.stat().st_uid == ROOTLESS_UID]
    assert written, f"nothing in {volume} written by uid {ROOTLESS_UID}"


def test_rootful_builder_runs_privileged(
    node: LocalNode, api: Api, builders_namespace: str, rootful_builder: str
) -> None:
    pod = running_pod(api, builders_namespace, rootful_builder)
    pid = container_pid(node, pod)
    entry = next(p for p in pod_processes(node, pod) if p.pid == pid)
    assert entry.name == "buildkitd" and entry.uid == 0, entry
    assert "/var/lib/buildkit" in mount_points(pid)


def _client(node: LocalNode, api: Api, namespace: str, name: str, tmp: Path, binary: Path) -> Any:
    conn = connect(node, api, namespace, name, tmp / "certs")
    return conn, conn.client(node, binary)


def test_build_through_the_service_over_mutual_tls(
    node: LocalNode,
    api: Api,
    builders_namespace: str,
    any_builder: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    conn, client = _client(node, api, builders_namespace, any_builder, tmp_path, buildctl_bin)
    print(f"\nnode: connect printed: {conn.printed}\nnode: building via {conn.address}")
    inputs = run_build_inputs(
        tmp_path / "build", f"hello from {any_builder} {secrets.token_hex(4)}"
    )
    out = tmp_path / "image.tar"
    result = client.build(
        inputs.context, f"type=oci,dest={out}", opts=inputs.opts, locals_=inputs.locals_
    )
    check_run_output(oci_image_files(out), inputs)
    report(f"build through the Service of {any_builder}: {result.seconds:.1f}s")


def test_foreign_clients_are_refused(
    node: LocalNode,
    api: Api,
    builders_namespace: str,
    rootless_builder: str,
    rootful_builder: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    own, _ = _client(node, api, builders_namespace, rootless_builder, tmp_path / "a", buildctl_bin)
    other, _ = _client(node, api, builders_namespace, rootful_builder, tmp_path / "b", buildctl_bin)
    # No client certificate at all.
    bare = NodeBuildctl(
        node,
        buildctl_bin,
        own.address,
        type(own.certs)(ca=own.certs.ca, cert=None, key=None),
        own.server_name,
    )
    # refusals() fails the test if any call is served; a refused TLS 1.3 client may see only
    # a broken pipe, so the cause is reported rather than required.
    errors = bare.refusals(attempts=10)
    report(f"client without a certificate refused: {Buildctl.telling(errors)[:160]}")
    # The other Builder's client certificate (trusting this one's CA to get that far).
    foreign = NodeBuildctl(
        node,
        buildctl_bin,
        own.address,
        type(own.certs)(ca=own.certs.ca, cert=other.certs.cert, key=other.certs.key),
        own.server_name,
    )
    errors = foreign.refusals(attempts=10)
    report(f"client with another Builder's certificate refused: {Buildctl.telling(errors)[:160]}")
