"""The developer's journey on the real node, each step as a user takes it from their machine:

1. ``buildkit-operator connect NAME --port-forward`` (outside the cluster's network);
2. ``buildctl build`` of a two-stage Dockerfile, ``--output type=image,...,push=true`` to the
   cluster's registry (the distribution registry, a Deployment on the node), exporting its
   cache to that registry;
3. a Deployment runs the pushed image, pulled by the node's containerd, and answers;
4. the same build again: every step CACHED, with buildctl and with ``docker buildx build``
   through the remote driver ``connect`` printed;
5. the other daemon of the ``replicas: 2`` Builder, its own cache empty, given
   ``--import-cache`` of what the first exported: every step CACHED too.

Each step's time is printed among the figures. And the cluster DNS: inside the cluster, the
names `connect` prints resolve."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from buildkit_e2e import (
    OPERATOR_CLI,
    Buildctl,
    BuildResult,
    ClientCerts,
    free_port,
    parse_workers_verbose,
)
from node_helpers import pods_of, ready_builder, report
from node_registry import (
    APP_PORT,
    AppBuild,
    app_build_inputs,
    available,
    deployment,
    forwarding,
    image_ref,
    pods_describe,
    run_deployment,
    start_registry,
)
from operator_process import OperatorProcess

from buildkit_operator.api.names import ChildNames
from localcluster.api import Api, wait_for
from localnode.config import NODE_LABEL, REGISTRY
from localnode.node import LocalNode

# BuildKit's worker label naming the daemon's host (the pod's hostname).
HOSTNAME_LABEL = "org.mobyproject.buildkit.worker.hostname"
BUILDER = "journey"


@pytest.fixture(scope="module")
def registry(node: LocalNode, api: Api, node_namespace: str) -> Iterator[str]:
    start_registry(api, node, node_namespace)
    yield REGISTRY


@pytest.fixture(scope="module")
def journey_builder(
    node: LocalNode, api: Api, node_operator: OperatorProcess, node_namespace: str, registry: str
) -> str:
    """Two daemons on the real node that may push to the cluster's (plain HTTP) registry."""
    spec = {
        "replicas": 2,
        "nodeSelector": {NODE_LABEL: "true"},
        "buildkitd": {"insecureRegistries": [registry]},
    }
    seconds = ready_builder(api, node, node_namespace, BUILDER, spec)
    report(f"journey: Builder {BUILDER} (replicas 2, insecureRegistries [{registry}]) "
           f"Ready in {seconds:.0f}s")  # fmt: skip
    return BUILDER


def _build(
    client: Buildctl, inputs: AppBuild, image: str, tmp: Path, *cache: str
) -> tuple[BuildResult, str]:
    """The build a user types, pushing ``image``; its result and the pushed digest (from
    buildctl's ``--metadata-file``)."""
    metadata = tmp / f"metadata-{secrets.token_hex(3)}.json"
    result = client.build(
        inputs.context,
        f"type=image,name={image},push=true",
        opts=inputs.opts,
        locals_=inputs.locals_,
        extra=["--metadata-file", str(metadata), *cache],
    )
    digest: str = json.loads(metadata.read_text())["containerimage.digest"]
    return result, digest


def _buildx(binary: Path, env: dict[str, str], inputs: AppBuild, image: str) -> BuildResult:
    """``docker buildx build --builder journey --push`` as a user types it (buildx run
    standalone: no Docker daemon), the named context given as ``--build-context``."""
    began = time.monotonic()
    command = [str(binary), "build", "--builder", BUILDER, "--progress=plain",
               *[f"--build-context={name}={path}" for name, path in inputs.locals_.items()],
               "--output", f"type=image,name={image},push=true", str(inputs.context)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    result = BuildResult(done.returncode, done.stdout + done.stderr, time.monotonic() - began)
    assert done.returncode == 0, result.output[-4000:]
    return result


def _cached(result: BuildResult) -> dict[str, bool]:
    steps = result.steps()
    assert steps, result.output[-3000:]
    return steps


@pytest.fixture(scope="module")
def buildx_bin(tools: Callable[..., tuple[Path, ...]]) -> Path:
    return tools("buildx")[0] / "buildx"


def test_build_push_run_and_cache(
    node: LocalNode,
    api: Api,
    node_namespace: str,
    journey_builder: str,
    buildctl_bin: Path,
    buildx_bin: Path,
    tmp_path: Path,
) -> None:
    assert node.cluster is not None
    kubectl = node.cluster.kubectl()
    ns = node_namespace
    inputs = app_build_inputs(tmp_path / "app", f"hello from the journey {secrets.token_hex(4)}")
    image = image_ref("app", "1")
    cache = image_ref("app", "buildcache")
    certs = tmp_path / "certs"

    # 1. connect --port-forward, as a user runs it (kubectl on PATH).
    port = free_port()
    env = {**os.environ, "PATH": f"{kubectl.binary.parent}:{os.environ['PATH']}"}
    connect = [str(OPERATOR_CLI), "connect", BUILDER, "-n", ns, "--port-forward",
               "--local-port", str(port), "--output-dir", str(certs),
               "--kubeconfig", str(node.cluster.kubeconfig)]  # fmt: skip
    began = time.monotonic()
    with forwarding(connect, port, env) as proc:
        forwarded = time.monotonic() - began
        assert proc.stdout is not None
        printed = proc.stdout.readline().strip()
        assert printed.startswith("buildctl ") and f"tcp://127.0.0.1:{port}" in printed, printed
        report(f"journey 1: `connect {BUILDER} --port-forward` forwarding in {forwarded:.1f}s; "
               f"it printed: {printed}")  # fmt: skip
        buildx_create = shlex.split(proc.stdout.readline())
        assert buildx_create[:3] == ["docker", "buildx", "create"], buildx_create
        tls = ClientCerts(ca=certs / "ca.pem", cert=certs / "cert.pem", key=certs / "key.pem")
        client = Buildctl(buildctl_bin, f"tcp://127.0.0.1:{port}", tls, "localhost")
        workers = parse_workers_verbose(client.run("debug", "workers", "-v").stdout)
        first = workers[0].labels[HOSTNAME_LABEL]

        # 2. The cold build, pushed to the registry, its cache exported there too.
        export = f"--export-cache=type=registry,ref={cache},mode=max"
        cold, digest = _build(client, inputs, image, tmp_path, export)
        assert not any(_cached(cold).values()), cold.steps()
        report(f"journey 2: cold build pushed {image}@{digest[:19]}… in {cold.seconds:.1f}s")

        # 3. The image runs on the node: containerd pulls it from the registry.
        seconds = run_deployment(
            api, node, ns, [deployment("app", image, APP_PORT, "/index.html")], "app"
        )
        selector = "labelSelector=app.kubernetes.io/name=app"
        (pod,) = api.get(f"/api/v1/namespaces/{ns}/pods?{selector}")["items"]
        (status,) = pod["status"]["containerStatuses"]
        assert status["imageID"] == f"{REGISTRY}/app@{digest}", status
        assert pod["spec"]["nodeName"] == node.name
        # What it serves, read as a user can from outside: the API server's pod proxy.
        proxy = f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}:{APP_PORT}/proxy"
        assert kubectl("get", "--raw", f"{proxy}/index.html") == inputs.greeting
        served = kubectl("get", "--raw", f"{proxy}/server.sha256")
        assert served.split()[0] == inputs.server_sha256, served
        report(f"journey 3: Deployment of {image} pulled and answering in {seconds:.1f}s")

        # 4. The same build again through the same forward: every step from the cache.
        warm, _ = _build(client, inputs, image, tmp_path)
        assert all(_cached(warm).values()), warm.steps()
        report(f"journey 4: the same build again, all {len(warm.steps())} steps CACHED, "
               f"in {warm.seconds:.1f}s")  # fmt: skip

        # 4b. The same build with buildx's remote driver, created by the line connect printed.
        config = {**os.environ, "BUILDX_CONFIG": str(tmp_path / "buildx")}
        subprocess.run([str(buildx_bin), *buildx_create[2:]], env=config, check=True)
        buildx = _buildx(buildx_bin, config, inputs, image_ref("app", "2"))
        assert all(_cached(buildx).values()), buildx.steps()
        # What the registry holds now, as its API lists it (through the pod proxy).
        (registry_pod,) = api.get(
            f"/api/v1/namespaces/{ns}/pods?labelSelector=app.kubernetes.io/name=registry"
        )["items"]
        listing = f"/api/v1/namespaces/{ns}/pods/{registry_pod['metadata']['name']}:5000"
        tags = json.loads(kubectl("get", "--raw", f"{listing}/proxy/v2/app/tags/list"))
        assert {"1", "2", "buildcache"} <= set(tags["tags"]), tags
        report(f"journey 4b: `docker buildx build` (remote driver) of the same context, all "
               f"{len(buildx.steps())} steps CACHED, pushed in {buildx.seconds:.1f}s")  # fmt: skip

    # 5. The other daemon: nothing in its cache, then everything from the registry's.
    # The daemon's host name is its daemon name (``<builder>-<index>``, the pods' hostname).
    daemons = [ChildNames(BUILDER).daemon(index) for index in (0, 1)]
    assert first in daemons, (first, daemons)
    index = 1 - daemons.index(first)
    other = daemons[index]
    (other_pod,) = [p["metadata"]["name"] for p in pods_of(api, ns, BUILDER, index)]
    port = free_port()
    forward = [str(kubectl.binary), "--kubeconfig", str(node.cluster.kubeconfig),
               "port-forward", "-n", ns, f"pod/{other_pod}", f"{port}:1234"]  # fmt: skip
    with forwarding(forward, port):
        client = Buildctl(buildctl_bin, f"tcp://127.0.0.1:{port}", tls, "localhost")
        workers = parse_workers_verbose(client.run("debug", "workers", "-v").stdout)
        assert workers[0].labels[HOSTNAME_LABEL] == other
        records = client.run("du", "--format", "{{json .}}").stdout
        assert not json.loads(records), records
        imported, _ = _build(
            client, inputs, image, tmp_path, f"--import-cache=type=registry,ref={cache}"
        )
    assert all(_cached(imported).values()), imported.steps()
    report(f"journey 5: the other daemon with --import-cache, all {len(imported.steps())} "
           f"steps CACHED, in {imported.seconds:.1f}s")  # fmt: skip


def test_cluster_dns_resolves_the_names_connect_prints(
    node: LocalNode, api: Api, node_namespace: str, journey_builder: str, tmp_path: Path
) -> None:
    """Inside the cluster the address `connect` prints, and each daemon's own name, resolve
    (CoreDNS behind the kubelet's clusterDNS) to the Service and the pods, as on a real
    cluster; and the kubelet no longer falls back to the node's resolv.conf."""
    assert node.cluster is not None
    kubectl = node.cluster.kubectl()
    ns, names = node_namespace, ChildNames(journey_builder)
    began = time.monotonic()
    wait_for(
        lambda: available(api, "kube-system", "coredns"),
        "Deployment kube-system/coredns available",
        180,
        interval=1,
        on_timeout=lambda: pods_describe(api, "kube-system", node),
    )
    report(f"cluster DNS: CoreDNS available {time.monotonic() - began:.1f}s into this test")
    printed = subprocess.run(
        [str(OPERATOR_CLI), "connect", journey_builder, "-n", ns,
         "--output-dir", str(tmp_path / "certs"), "--kubeconfig", str(node.cluster.kubeconfig)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    line = shlex.split(next(x for x in printed.splitlines() if x.startswith("buildctl ")))
    host = urlsplit(line[line.index("--addr") + 1]).hostname
    assert host == f"{names.service}.{ns}.svc", line
    service_ip = api.get(f"/api/v1/namespaces/{ns}/services/{names.service}")["spec"]["clusterIP"]
    pods = {index: pods_of(api, ns, journey_builder, index)[0] for index in (0, 1)}
    inside = pods[0]["metadata"]["name"]

    def resolve(name: str) -> str:
        out = kubectl("exec", "-n", ns, inside, "-c", "buildkitd", "--", "getent", "hosts", name)
        return out.split()[0]

    assert resolve(host) == service_ip
    for index, pod in pods.items():
        assert resolve(names.daemon_host(index, ns)) == pod["status"]["podIP"]
    fallbacks = api.get(f"/api/v1/namespaces/{ns}/events?fieldSelector=reason=MissingClusterDNS")
    assert not fallbacks["items"], [e["message"] for e in fallbacks["items"]]
