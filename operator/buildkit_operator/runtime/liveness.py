"""The liveness endpoint of a standby: it waits for the Lease, and is alive while it does.

Kopf serves ``--liveness`` once this process leads; until then this small server answers
on the same address, so the kubelet does not restart a healthy standby.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Handler(BaseHTTPRequestHandler):
    path_served = "/healthz"

    def do_GET(self) -> None:  # the http.server API names it
        ok = urlsplit(self.path).path == self.path_served
        body = b'{"standby": true}' if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json" if ok else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes are not news
        return


@contextlib.contextmanager
def serve_liveness(url: str) -> Iterator[None]:
    """Answer GET on ``url`` (e.g. http://0.0.0.0:8080/healthz) until the block ends, and
    free the port for Kopf's own endpoint afterwards. No URL: nothing to serve."""
    if not url:
        yield
        return
    parts = urlsplit(url)
    handler = type("Handler", (_Handler,), {"path_served": parts.path or "/"})
    host = (parts.hostname or "0.0.0.0").strip("[]")
    server_class = type(
        "Server", (ThreadingHTTPServer,), {"address_family": _family(host), "daemon_threads": True}
    )
    server = server_class((host, parts.port or 80), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="standby-liveness")
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _family(host: str) -> int:
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET
