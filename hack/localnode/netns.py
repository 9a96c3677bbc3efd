"""The node's network: a namespace of its own with a bridge holding the node IP and the pod
range, and no uplink; and the forwarder that carries connections made in it to the API
server on the host's loopback."""

from __future__ import annotations

import ctypes
import selectors
import socket
import subprocess
import threading
from pathlib import Path

from .config import BRIDGE, NODE_PREFIX

CLONE_NEWNET = 0x40000000


def netns_exists(netns: str) -> bool:
    return Path(f"/run/netns/{netns}").exists()


def make_netns(netns: str, node_ip: str) -> None:
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "link", "add", BRIDGE, "type", "bridge")
    ip("-n", netns, "addr", "add", f"{node_ip}/{NODE_PREFIX}", "dev", BRIDGE)
    ip("-n", netns, "link", "set", BRIDGE, "up")
    # Service IPs need a route before kube-proxy's rules can rewrite them; the bridge is
    # the only way out and leads nowhere but the pods.
    ip("-n", netns, "route", "add", "default", "dev", BRIDGE)


def delete_netns(netns: str) -> None:
    if netns_exists(netns):
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def forward(listener: socket.socket, host_netns_fd: int, api_port: int) -> None:
    """Accept in the node's namespace; connect to the API server in the host's."""
    lib = libc()

    def pump(client: socket.socket) -> None:
        try:
            if lib.setns(host_netns_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            upstream = socket.create_connection(("127.0.0.1", api_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in sel.select():
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            client.close()
            upstream.close()

    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=pump, args=(client,), daemon=True).start()
