"""The real node's registry and what runs from it: the distribution registry as a Deployment
and a Service of fixed ClusterIP (REGISTRY, which the node's containerd pulls from over HTTP
and Builders push to as an insecure registry), an application Deployment of an image built
in the cluster, and the inputs of that image (a static HTTP server the test compiles)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildkit_e2e import host_rootfs, write_context
from node_helpers import report

from localcluster.api import Api, wait_for
from localnode.config import NODE_LABEL, REGISTRY, REGISTRY_IP, REGISTRY_PORT
from localnode.node import LocalNode
from node_images import REGISTRY_IMAGE

READY_TIMEOUT = 180.0
ON_NODE = {NODE_LABEL: "true"}


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def deployment(
    name: str, image: str, port: int, probe: str, data_dir: str | None = None
) -> dict[str, Any]:
    """One replica on the real node, Ready when ``probe`` answers over HTTP on ``port``;
    with ``data_dir``, an emptyDir mounted there."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": probe, "port": port}, "periodSeconds": 1},
    }
    spec: dict[str, Any] = {"nodeSelector": ON_NODE, "containers": [container]}
    if data_dir:
        container["volumeMounts"] = [{"name": "data", "mountPath": data_dir}]
        spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _labels(name)},
            "template": {"metadata": {"labels": _labels(name)}, "spec": spec},
        },
    }


def service(name: str, port: int, cluster_ip: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": _labels(name),
        "ports": [{"name": "http", "port": port, "targetPort": "http"}],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": spec,
    }


def available(api: Api, namespace: str, name: str) -> bool:
    status = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}").get("status")
    return bool((status or {}).get("availableReplicas"))


def pods_describe(api: Api, namespace: str, node: LocalNode) -> str:
    """What a person reads when a Deployment does not become available."""
    lines = [
        f"pod {p['metadata']['name']}: {p.get('status')}"
        for p in api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    ]
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    lines += [f"event {e.get('reason')}: {e.get('message')}" for e in events[-15:]]
    lines.append(node.tail("kubelet", 20))
    lines.append(node.tail("containerd", 20))
    return "\n".join(lines)


def run_deployment(
    api: Api, node: LocalNode, namespace: str, objects: list[dict[str, Any]], name: str
) -> float:
    """Create the objects and wait for the Deployment ``name`` to be available; seconds."""
    began = time.monotonic()
    for obj in objects:
        plural = "deployments" if obj["kind"] == "Deployment" else "services"
        group = "/apis/apps/v1" if obj["kind"] == "Deployment" else "/api/v1"
        api.create(f"{group}/namespaces/{namespace}/{plural}", obj, exist_ok=False)
    wait_for(
        lambda: available(api, namespace, name),
        f"Deployment {namespace}/{name} available",
        READY_TIMEOUT,
        interval=1,
        on_timeout=lambda: pods_describe(api, namespace, node),
    )
    return time.monotonic() - began


def start_registry(api: Api, node: LocalNode, namespace: str) -> None:
    """The registry on the real node, its Service at REGISTRY; returns once it serves."""
    seconds = run_deployment(
        api,
        node,
        namespace,
        [
            deployment("registry", REGISTRY_IMAGE, REGISTRY_PORT, "/v2/", "/var/lib/registry"),
            service("registry", REGISTRY_PORT, REGISTRY_IP),
        ],
        "registry",
    )
    report(f"registry {REGISTRY_IMAGE} serving at {REGISTRY} in {seconds:.1f}s")


# --------------------------------------------------------------------------- the application

APP_PORT = 8080
# A static HTTP server of the standard library: what the image runs.
APP_SOURCE = """\
package main

import (
\t"log"
\t"net/http"
)

func main() {
\tlog.Fatal(http.ListenAndServe(":8080", http.FileServer(http.Dir("/www"))))
}
"""
# Two stages: the first (this machine's programs, as a named context) runs a step on the
# files the test provides; the image is FROM scratch with the server and what that step wrote.
APP_DOCKERFILE = """\
FROM scratch AS build
COPY --from=rootfs / /
COPY server greeting.txt /src/
RUN mkdir -p /www && cat /src/greeting.txt > /www/index.html \\
    && sha256sum /src/server > /www/server.sha256

FROM scratch
COPY --from=build /src/server /server
COPY --from=build /www /www
EXPOSE 8080
ENTRYPOINT ["/server"]
"""


@dataclass(frozen=True)
class AppBuild:
    context: Path
    opts: dict[str, str]
    locals_: dict[str, Path]
    greeting: str
    server_sha256: str


def app_build_inputs(directory: Path, greeting: str) -> AppBuild:
    """The application's build context: the server compiled here (static, no cgo), the
    greeting its first stage serves, and the Dockerfile above."""
    source = directory / "src"
    source.mkdir(parents=True)
    (source / "go.mod").write_text("module journeyapp\n\ngo 1.22\n")
    (source / "main.go").write_text(APP_SOURCE)
    go = shutil.which("go")
    assert go, "go is needed to compile the application (it builds the pinned tools too)"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-trimpath"}
    subprocess.run(
        [go, "build", "-ldflags=-s -w", "-o", str(directory / "server"), "."],
        cwd=source,
        env=env,
        check=True,
    )
    server = (directory / "server").read_bytes()
    context = write_context(
        directory / "context", APP_DOCKERFILE, {"server": server, "greeting.txt": greeting}
    )
    (context / "server").chmod(0o755)
    rootfs = host_rootfs(directory / "rootfs")
    return AppBuild(
        context=context,
        opts={"context:rootfs": "local:rootfs"},
        locals_={"rootfs": rootfs},
        greeting=greeting,
        server_sha256=hashlib.sha256(server).hexdigest(),
    )


def image_ref(repository: str, tag: str) -> str:
    return f"{REGISTRY}/{repository}:{tag}"


# --------------------------------------------------------------------------- port forwards


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def forwarding(
    command: list[str], port: int, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run a command that forwards 127.0.0.1:``port`` (``kubectl port-forward``, or
    ``connect --port-forward``) until the block ends; yields once the port accepts."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: accepts(port) or proc.poll() is not None,
            f"{command[0]} forwarding 127.0.0.1:{port}",
            60,
            interval=0.2,
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
