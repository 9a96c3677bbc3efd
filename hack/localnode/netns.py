"""The node's network: a namespace of its own with a bridge holding the node IP and the pod
range, and no uplink; and the forwarder that carries connections made in it to the API
server on the host's loopback; and the API server's egress proxy, which carries its
connections to the kubelet (logs, exec, port-forward) into the namespace."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import selectors
import socket
import subprocess
import threading
from collections.abc import Callable
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


def _enter(host_netns_fd: int) -> None:
    """Move the calling thread (only) into the host's network namespace."""
    if libc().setns(host_netns_fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _pump(client: socket.socket, upstream: socket.socket) -> None:
    """Copy both ways until either side closes; then close both."""
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


def _accept_each(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(client,), daemon=True).start()


def forward(listener: socket.socket, host_netns_fd: int, api_port: int) -> None:
    """Accept in the node's namespace; connect to the API server in the host's."""

    def handle(client: socket.socket) -> None:
        try:
            _enter(host_netns_fd)
            upstream = socket.create_connection(("127.0.0.1", api_port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        _pump(client, upstream)

    _accept_each(listener, handle)


def serve_egress(listener: socket.socket, host_netns_fd: int) -> None:
    """The API server's egress proxy (HTTP CONNECT on a unix socket, as konnectivity's
    server speaks it): each tunnel is dialled from the node's network namespace, where the
    kubelet, the pods and the Service IPs answer; a loopback destination (the kwok nodes'
    address, a webhook on the host) from the host's, as it would be dialled without one."""

    def handle(client: socket.socket) -> None:
        try:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk or len(head) > 16384:
                    raise OSError("no CONNECT request")
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            if method != "CONNECT" or not port.isdigit():
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                raise OSError(f"not a CONNECT: {method} {target}")
            if ipaddress.ip_address(host).is_loopback:
                _enter(host_netns_fd)
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                client.sendall(f"HTTP/1.1 502 Bad Gateway\r\n\r\n{exc}".encode())
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _pump(client, upstream)

    _accept_each(listener, handle)
