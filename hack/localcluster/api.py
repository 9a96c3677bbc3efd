"""Talking to the cluster: its errors, polling (wait_for), progress lines, and Api, a
minimal REST client on the standard library (client certificate authentication)."""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar


def log(message: str) -> None:
    """Progress goes to stderr: stdout is kept for what a caller evaluates."""
    print(f"cluster: {message}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


class ComponentExited(ClusterError):
    """A process of the cluster exited: waiting longer cannot help."""


class ApiError(ClusterError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll check() until it returns a truthy value; raise ClusterError after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except ComponentExited:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


class Api:
    """A minimal Kubernetes REST client on the standard library (client certificate auth)."""

    def __init__(
        self, host: str, port: int, ca_file: Path, cert_file: Path, key_file: Path
    ) -> None:
        self.host = host
        self.port = port
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._context.load_cert_chain(str(cert_file), str(key_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self._context, timeout=timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = content_type
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        if response.status >= 300:
            raise ApiError(method, path, response.status, text)
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, obj: Mapping[str, Any], exist_ok: bool = True) -> Any:
        try:
            return self.request("POST", path, obj)
        except ApiError as exc:
            if exist_ok and exc.status == 409:
                return None
            raise

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def delete(self, path: str, missing_ok: bool = True) -> Any:
        try:
            return self.request("DELETE", path)
        except ApiError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def https_ok(port: int, path: str, ca_file: Path, timeout: float = 2) -> bool:
    """True if https://127.0.0.1:port/path answers 200 with a certificate from ca_file."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def http_ok(port: int, path: str, timeout: float = 2) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()
