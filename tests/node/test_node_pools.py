"""Pools, per-daemon addresses and scale to zero on the real node.

The real node is amd64: a pool of that architecture builds there for real, an arm64 pool's
daemon is scheduled on the kwok arm64 node (no build can run on it). The operator runs in
the node's network namespace (see conftest.py), so it can ask the daemons whether they
build; clients run there too, by pod or Service IP (the node has no cluster DNS), with the
TLS server name ``buildkit-operator connect`` printed.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from buildkit_e2e import (
    OPERATOR_CLI,
    ClientCerts,
    check_run_output,
    host_rootfs,
    oci_image_files,
    run_build_inputs,
    write_context,
)
from node_helpers import (
    Host,
    NodeBuildctl,
    builder,
    describe,
    ready_builder,
    report,
)
from operator_process import OperatorProcess

from buildkit_operator.api.names import ChildNames
from localcluster.api import Api, wait_for
from localnode.node import LocalNode

REAL_NODE = {"buildkit-operator.dev/real-node": "true"}
LOOPS = 3_000_000


def _connect(node: LocalNode, namespace: str, name: str, into: Path, *extra: str) -> str:
    assert node.cluster is not None
    result = subprocess.run(
        [str(OPERATOR_CLI), "connect", name, "-n", namespace, "--output-dir", str(into),
         "--kubeconfig", str(node.cluster.kubeconfig), *extra],
        capture_output=True, text=True, check=True, timeout=360,
    )  # fmt: skip
    return result.stdout + result.stderr


def _client(
    node: LocalNode, buildctl: Path, line: str, address: str | None = None
) -> tuple[NodeBuildctl, str]:
    """A buildctl from a printed ``buildctl …`` line, at ``address`` (an IP for the printed
    DNS name) with the printed server name; returns it and the printed address."""
    argv = shlex.split(line)

    def flag(option: str) -> str:
        return argv[argv.index(option) + 1]

    certs = ClientCerts(
        ca=Path(flag("--tlscacert")), cert=Path(flag("--tlscert")), key=Path(flag("--tlskey"))
    )
    printed = flag("--addr")
    client = NodeBuildctl(node, buildctl, address or printed, certs, flag("--tlsservername"))
    return client, printed


def _reachable(client: NodeBuildctl) -> NodeBuildctl:
    """Wait until the daemon answers at the client's address: a Service (or a pod) that
    just became ready takes kube-proxy a moment to program."""
    wait_for(
        lambda: client.run("debug", "workers", check=False).returncode == 0,
        f"buildkitd answering at {client.address}",
        60,
        interval=1,
    )
    return client


def _pod_ip(api: Api, namespace: str, daemon: str) -> str:
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    (pod,) = [
        p
        for p in pods
        if p["metadata"]["name"].startswith(daemon + "-")
        and not p["metadata"].get("deletionTimestamp")
        and p["status"].get("podIP")
    ]
    return str(pod["status"]["podIP"])


def _service_ip(api: Api, namespace: str, service: str) -> str:
    return str(api.get(f"/api/v1/namespaces/{namespace}/services/{service}")["spec"]["clusterIP"])


def test_a_pool_builds_natively_and_each_daemon_name_verifies(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    host.require_rootless()
    name = "pools"
    spec = {
        "cache": {"type": "ephemeral", "size": "2Gi"},
        "pools": [
            {"platform": "linux/amd64", "replicas": 2, "nodeSelector": REAL_NODE},
            {"platform": "linux/arm64", "replicas": 1},
        ],
    }
    ready_builder(api, node, node_namespace, name, spec)
    status = builder(api, node_namespace, name)["status"]

    out = _connect(node, node_namespace, name, tmp_path / "pools")
    lines = [x for x in out.splitlines() if x.startswith("buildctl ")]
    assert len(lines) == 2, out
    amd64 = next(p for p in status["pools"] if p["platform"] == "linux/amd64")
    service = amd64["endpoint"].removeprefix("tcp://").split(".")[0]
    client, printed = _client(
        node, buildctl_bin, lines[0], f"tcp://{_service_ip(api, node_namespace, service)}:1234"
    )
    assert printed == amd64["endpoint"]
    _reachable(client)
    workers = json.loads(client.run("debug", "workers", "--format", "{{json .}}").stdout)
    platforms = {(p["os"], p["architecture"]) for w in workers for p in w["platforms"]}
    assert platforms == {("linux", "amd64")}, workers
    inputs = run_build_inputs(tmp_path / "build", f"pool {secrets.token_hex(4)}", loops=LOOPS)
    result = client.build(
        inputs.context,
        f"type=oci,dest={tmp_path / 'amd64.tar'}",
        opts={**inputs.opts, "platform": "linux/amd64"},
        locals_=inputs.locals_,
    )
    check_run_output(oci_image_files(tmp_path / "amd64.tar"), inputs)
    report(
        f"pools: linux/amd64 pool built on the real node in {result.seconds:.1f}s; the "
        "linux/arm64 pool's daemon runs on the kwok arm64 node (no arm64 machine here to build on)"
    )

    # Per-daemon names: the address connect --key prints verifies against the server
    # certificate; another name does not.
    out = _connect(node, node_namespace, name, tmp_path / "key", "--key", "registry.example/app")
    (line, _) = [x for x in out.splitlines() if x.startswith("buildctl ")]
    chosen = next(
        d
        for d in status["daemons"]
        if d["platform"] == "linux/amd64" and f"--addr {d['address']}" in line
    )
    ip = _pod_ip(api, node_namespace, chosen["name"])
    client, _ = _client(node, buildctl_bin, line, f"tcp://{ip}:1234")
    assert client.server_name == chosen["address"].removeprefix("tcp://").rsplit(":", 1)[0]
    assert client.run("debug", "workers").returncode == 0
    wrong, _ = _client(
        node, buildctl_bin, line.replace(client.server_name, "other.example"), f"tcp://{ip}:1234"
    )
    refused = wrong.run("debug", "workers", check=False)
    assert refused.returncode != 0 and "certificate" in refused.stderr, refused


def _daemon_pods(api: Api, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = api.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=app.kubernetes.io/instance={name}"
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_an_idle_builder_sleeps_keeps_its_cache_and_wakes_on_connect(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    host.require_rootless()
    name = "sleepy"
    # Ready first: a daemon that ran no build for idleTimeout since it started may sleep
    # before its first build, which connect would wake again.
    inputs = run_build_inputs(tmp_path / "build", f"idle {secrets.token_hex(4)}", loops=LOOPS)
    ready_builder(api, node, node_namespace, name, {"idleTimeout": "30s"})
    service_ip = _service_ip(api, node_namespace, ChildNames(name).service)

    def build(label: str) -> tuple[float, dict[str, bool]]:
        out = _connect(node, node_namespace, name, tmp_path / label)
        line = next(x for x in out.splitlines() if x.startswith("buildctl "))
        client, _ = _client(node, buildctl_bin, line, f"tcp://{service_ip}:1234")
        _reachable(client)
        dest = tmp_path / f"{label}.tar"
        result = client.build(
            inputs.context, f"type=oci,dest={dest}", opts=inputs.opts, locals_=inputs.locals_
        )
        check_run_output(oci_image_files(dest), inputs)
        return result.seconds, result.steps()

    _, cold_steps = build("cold")
    claim = ChildNames(name).cache_claim(0)
    wait_for(
        lambda: not _daemon_pods(api, node_namespace, name),
        "the idle daemon scaled to zero",
        180,
        interval=1,
        on_timeout=lambda: describe(api, node_namespace, name, node),
    )
    status = builder(api, node_namespace, name)["status"]
    assert [d["idle"] for d in status["daemons"]] == [True], status
    assert api.exists(f"/api/v1/namespaces/{node_namespace}/persistentvolumeclaims/{claim}")

    assert node.cluster is not None
    began = time.monotonic()
    woke = subprocess.run(
        [str(OPERATOR_CLI), "wake", name, "-n", node_namespace,
         "--kubeconfig", str(node.cluster.kubeconfig)],
        capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    took = time.monotonic() - began
    assert woke.returncode == 0, woke.stderr
    _, warm_steps = build("warm")
    run_steps = [s for s in warm_steps if s.startswith("[work") and "RUN" in s]
    assert run_steps and all(warm_steps[s] for s in run_steps), warm_steps
    assert not any(cold_steps.get(s) for s in run_steps), cold_steps
    report(f"scale to zero: woken to Ready in {took:.1f}s; its cache served the next build")


def test_a_daemon_with_a_build_in_flight_is_not_put_to_sleep(
    host: Host,
    node: LocalNode,
    api: Api,
    node_operator: OperatorProcess,
    node_namespace: str,
    buildctl_bin: Path,
    tmp_path: Path,
) -> None:
    host.require_rootless()
    name = "busy"
    context = write_context(
        tmp_path / "context",
        "FROM scratch\nCOPY --from=rootfs / /\nRUN sleep 50 && echo done > /done\n",
        {},
    )
    rootfs = host_rootfs(tmp_path / "rootfs")
    ready_builder(
        api,
        node,
        node_namespace,
        name,
        {"idleTimeout": "20s", "cache": {"type": "ephemeral"}, "nodeSelector": REAL_NODE},
    )
    out = _connect(node, node_namespace, name, tmp_path / "c")
    line = next(x for x in out.splitlines() if x.startswith("buildctl "))
    # The pod itself (the Service's endpoints take kube-proxy a moment, and this daemon may
    # sleep idleTimeout after it started), with the Service's name the certificate covers.
    ip = _pod_ip(api, node_namespace, ChildNames(name).daemon(0))
    client, _ = _client(node, buildctl_bin, line, f"tcp://{ip}:1234")
    _reachable(client)
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(
            client.build(
                context,
                f"type=local,dest={tmp_path / 'out'}",
                opts={"context:rootfs": "local:rootfs"},
                locals_={"rootfs": rootfs},
                check=False,
            )
        )
    )
    thread.start()
    started = time.monotonic()
    while thread.is_alive():
        if time.monotonic() - started > 30:  # well past idleTimeout, the build still runs
            assert len(_daemon_pods(api, node_namespace, name)) == 1
            assert [d["idle"] for d in builder(api, node_namespace, name)["status"]["daemons"]] == [
                False
            ]
        time.sleep(2)
    thread.join()
    (result,) = results
    assert result.returncode == 0, result.output[-3000:]
    assert (tmp_path / "out" / "done").read_text() == "done\n"
    assert time.monotonic() - started > 45
    report("scale to zero: a daemon building for 50s under idleTimeout 20s was kept running")
