"""A hung API server connection never wedges a Builder.

The operator reaches the API server through a TCP proxy on loopback that can turn into a
black hole: every connection open at that moment, and every one made while it lasts,
stays open and never answers again, as when a network path dies without a reset. Without
request timeouts the operator's reconciles would wait on those connections for ever.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO, builder, wait_until

pytestmark = pytest.mark.integration


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client, self.upstream = client, upstream
        self.hung = upstream is None


class BlackHoleProxy:
    """Forwards 127.0.0.1:<port> to the API server until ``swallow()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.swallowing = threading.Event()
        self.closed = threading.Event()
        self.links: list[_Link] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = None
            if not self.swallowing.is_set():
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            link = _Link(client, upstream)
            with self.lock:
                self.links.append(link)
            if upstream is not None:
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(link, src, dst), daemon=True).start()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not link.hung:
                    dst.sendall(data)

    def swallow(self) -> None:
        """From now on nothing open answers, and new connections are never answered."""
        self.swallowing.set()
        with self.lock:
            for link in self.links:
                link.hung = True

    def restore(self) -> None:
        """New connections work again; the swallowed ones stay hung."""
        self.swallowing.clear()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            for link in self.links:
                for sock in (link.client, link.upstream):
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.close()


@pytest.fixture
def proxy(cluster: Any) -> Iterator[BlackHoleProxy]:
    p = BlackHoleProxy(cluster.state.ports["apiserver"])
    yield p
    p.close()


def _via(cluster: Any, proxy: BlackHoleProxy, path: Path) -> Path:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_black_holed_connection_wedges_no_builder(
    cluster: Any, kubectl: Any, namespace: str, operator: Any, proxy: BlackHoleProxy, tmp_path: Path
) -> None:
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(REPO / "crds" / "builders.buildkit.dev.yaml"),
    )
    kubectl.wait_established("builders.buildkit.dev")
    op = operator(
        "--request-timeout", "3", kubeconfig=_via(cluster, proxy, tmp_path / "kubeconfig")
    )
    ephemeral = {"cache": {"type": "ephemeral", "size": "1Gi"}}

    def phase(name: str) -> str | None:
        obj = kubectl.json("get", "builder", name, "-n", namespace)
        return (obj.get("status") or {}).get("phase")

    kubectl("apply", "-f", "-", input=yaml.safe_dump(builder("warm", namespace, **ephemeral)))
    wait_until("the operator serving through the proxy", lambda: phase("warm") == "Ready", 60)

    names = [f"hang-{i}" for i in range(6)]
    kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all([builder(n, namespace, **ephemeral) for n in names]),
    )
    wait_until(
        "the operator at work",
        lambda: kubectl("get", "configmaps", "-n", namespace, "-o", "name").count("hang-") >= 1,
        30,
        interval=0.05,
    )
    proxy.swallow()
    time.sleep(8)
    proxy.restore()
    for name in names:
        wait_until(f"{name} Ready after the black hole", lambda n=name: phase(n) == "Ready", 120)
    assert op.running, op.log()[-4000:]
    # The requests did time out: the operator's own output says so (the harness's
    # "--- start" line holds the command line, whose --request-timeout always matched).
    said = "\n".join(line for line in op.log().splitlines() if not line.startswith("--- start"))
    assert "timed out" in said or "timeout" in said, said[-4000:]
