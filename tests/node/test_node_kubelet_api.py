"""What a user does to a daemon through the API server, which reaches the node's kubelet
(its InternalIP, through the egress socket, mutual TLS, the kubelet asking the API server
whether the caller may): `kubectl logs`, `kubectl exec`, and `buildkit-operator connect
--port-forward` with a real buildctl building through the forwarded port. And a rootless
daemon whose cache is on the cluster's hostPath pool, which the kubelet gives no fsGroup."""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

from buildkit_e2e import (
    OPERATOR_CLI,
    Buildctl,
    ClientCerts,
    check_run_output,
    free_port,
    oci_image_files,
    run_build_inputs,
)
from node_helpers import Host, connect, ready_builder, report, running_pod
from operator_process import OperatorProcess

from localcluster.api import Api, wait_for
from localnode.config import NODE_LABEL
from localnode.node import LocalNode

LOOPS = 200_000  # a RUN step that runs, not one worth caching
# What buildkitd logs once it serves (cmd/buildkitd/main.go: "running server on %s").
SERVING = "running server on"


def test_logs_exec_and_port_forward_reach_the_daemon(
    node: LocalNode,
    api: Api,
    rootless_builder: str,
    builders_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    assert node.cluster is not None
    kubectl = node.cluster.kubectl()
    ns, name = builders_namespace, rootless_builder
    pod = running_pod(api, ns, name)["metadata"]["name"]

    logs = kubectl("logs", "-n", ns, pod, "-c", "buildkitd")
    assert SERVING in logs, logs[-2000:]

    version = kubectl("exec", "-n", ns, pod, "-c", "buildkitd", "--", "buildctl", "--version")
    assert version.startswith("buildctl github.com/moby/buildkit "), version
    cmdline = kubectl("exec", "-n", ns, pod, "-c", "buildkitd", "--", "cat", "/proc/1/cmdline")
    assert "buildkitd" in cmdline, cmdline

    # connect --port-forward as a user runs it: kubectl on PATH, its output read from a pipe.
    port = free_port()
    env = {**os.environ, "PATH": f"{kubectl.binary.parent}:{os.environ['PATH']}"}
    env.pop("PYTHONUNBUFFERED", None)  # a user's shell has none: stdout to a pipe is buffered
    proc = subprocess.Popen(
        [str(OPERATOR_CLI), "connect", name, "-n", ns, "--port-forward",
         "--local-port", str(port), "--output-dir", str(tmp_path / "certs"),
         "--kubeconfig", str(node.cluster.kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        # The lines come while the forward runs, not when it ends (Ctrl-C).
        readable, _, _ = select.select([proc.stdout], [], [], 60)
        assert readable, "connect printed no buildctl line within 60s of forwarding"
        line = proc.stdout.readline()
        assert line.startswith("buildctl "), line
        assert f"tcp://127.0.0.1:{port}" in line, line
        began = time.monotonic()
        wait_for(
            lambda: _accepts(port) or proc.poll() is not None,
            f"kubectl port-forward on 127.0.0.1:{port}",
            60,
            interval=0.2,
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        certs = tmp_path / "certs"
        client = Buildctl(
            buildctl_bin,
            f"tcp://127.0.0.1:{port}",
            ClientCerts(ca=certs / "ca.pem", cert=certs / "cert.pem", key=certs / "key.pem"),
            "localhost",
        )
        inputs = run_build_inputs(tmp_path / "build", f"forwarded {secrets.token_hex(4)}", LOOPS)
        out = tmp_path / "image.tar"
        result = client.build(
            inputs.context, f"type=oci,dest={out}", opts=inputs.opts, locals_=inputs.locals_
        )
        check_run_output(oci_image_files(out), inputs)
        report(
            f"build through `connect --port-forward` (API server → kubelet → pod): "
            f"{result.seconds:.1f}s, {time.monotonic() - began:.1f}s from forward to image"
        )
        # Mutual TLS through the tunnel: a client without the certificate is refused.
        anonymous = Buildctl(buildctl_bin, f"tcp://127.0.0.1:{port}", ClientCerts(
            ca=certs / "ca.pem", cert=None, key=None), "localhost")  # fmt: skip
        assert anonymous.refusals(), "served a client without a certificate"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_rootless_cache_on_the_hostpath_pool(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    """The pool's StorageClass ``standard`` is hostPath volumes, as hostPath provisioners
    make them: the kubelet applies no fsGroup, so uid 1000 can write only because the
    directory is world-writable (a root-owned 0755 one crash-loops buildkitd on its lock)."""
    host.require_rootless()
    name = "hostpath"
    spec = {"cache": {"storageClassName": "standard"}, "nodeSelector": {NODE_LABEL: "true"}}
    ready_builder(api, node, node_namespace, name, spec, announce=True)
    claim = api.get(f"/api/v1/namespaces/{node_namespace}/persistentvolumeclaims")["items"]
    (volume,) = [c["spec"]["volumeName"] for c in claim]
    pv = api.get(f"/api/v1/persistentvolumes/{volume}")
    assert "hostPath" in pv["spec"], pv["spec"]
    pod = running_pod(api, node_namespace, name)
    assert pod["spec"]["nodeName"] == node.name
    restarts = [s["restartCount"] for s in pod["status"]["containerStatuses"]]
    assert restarts == [0], pod["status"]["containerStatuses"]

    conn = connect(node, api, node_namespace, name, tmp_path / "certs")
    inputs = run_build_inputs(tmp_path / "build", f"hostpath {secrets.token_hex(4)}", LOOPS)
    out = tmp_path / "image.tar"
    conn.client(node, buildctl_bin).build(
        inputs.context, f"type=oci,dest={out}", opts=inputs.opts, locals_=inputs.locals_
    )
    check_run_output(oci_image_files(out), inputs)
    # The cache is on the volume: buildkitd's files, written by the rootless user.
    owners = {p.stat().st_uid for p in Path(pv["spec"]["hostPath"]["path"]).iterdir()}
    assert owners == {1000}, owners
