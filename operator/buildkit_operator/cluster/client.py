"""The only module that talks to the API server.

Blocking calls, as plain JSON over the official client's connection pool (its model
objects cost more CPU than the requests); the reconciler runs them off the event loop.
The children are read from a watch-fed cache (ChildCache), not listed on every pass.
Writes are server-side apply with one field manager, so the operator owns exactly the
fields it renders and leaves everyone else's alone. Every request has a timeout: a hung
connection must fail the pass (and be retried), never hold a Builder for ever.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from ..api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from ..api.names import FIELD_MANAGER, LABEL_BUILDER, LABEL_MANAGED_BY, MANAGED_BY, label_value

log = logging.getLogger(__name__)

# Kinds of the children, in the order they are best created.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
)
API_VERSIONS = dict((kind, api) for api, kind in CHILD_KINDS)

T = TypeVar("T")
_RETRYABLE = {409, 429, 500, 502, 503, 504}
# (connect, read) seconds for every request the operator makes.
REQUEST_TIMEOUT = (5.0, 30.0)
# Deleting a workload waits for its pods (foreground), so that a daemon made anew, or
# scaled up again, never runs beside the old one on one cache volume.
_FOREGROUND_KINDS = {"Deployment"}


class Fenced(RuntimeError):
    """A write this process may no longer make: its leadership may have passed on."""


def _default_timeout(api_client: client.ApiClient, timeout: tuple[float, float]) -> None:
    """Give every request of ``api_client`` a timeout unless the call sets its own: the
    client's default is to wait for ever."""
    rest = api_client.rest_client
    request = rest.request

    def with_timeout(*args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = kwargs.get("_request_timeout") or timeout
        return request(*args, **kwargs)

    rest.request = with_timeout  # type: ignore[method-assign]


def _status_of(err: Exception) -> int | None:
    status = getattr(err, "status", None)
    return status if isinstance(status, int) else None


def with_retries(call: Callable[[], T], attempts: int = 4) -> T:
    """Retry conflicts, throttling and server errors with a short backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (ApiException, DynamicApiError) as err:
            if _status_of(err) not in _RETRYABLE or attempt == attempts:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config(config_file=kubeconfig)
    return client.ApiClient()


_PATHS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
}
# A watch is ended by the API server after this long and opened again, so one that went
# quiet (a dead connection) is noticed: the cache is trusted only while its watches have
# been heard from within WATCH_FRESH seconds.
WATCH_SECONDS = 60
WATCH_FRESH = 90.0


def _newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` is a later state of the object than ``current``.

    A write's answer and the watch event of the same write race to the cache; resource
    versions of one object are compared as numbers (which they are, though the API server
    does not promise it): where either is not a number, the later arrival wins. The watch
    event of the operator's own write carries the version its answer did, so it is not
    newer, and wakes nothing."""
    if current is None:
        return True
    new = (candidate.get("metadata") or {}).get("resourceVersion")
    old = (current.get("metadata") or {}).get("resourceVersion")
    try:
        return int(new) > int(old)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def _slim(obj: dict[str, Any]) -> None:
    """Keep of ``managedFields`` only the operator's own entries, the ones drift reads:
    the controllers' entries (a Deployment's status) are most of a cached object's size."""
    meta = obj.get("metadata") or {}
    entries = meta.get("managedFields")
    if entries:
        obj["metadata"] = {
            **meta,
            "managedFields": [e for e in entries if e.get("manager") == FIELD_MANAGER],
        }


class ChildCache:
    """Every object of the children's kinds carrying our managed-by label, as the API
    server last reported it: one list-then-watch per kind (and per namespace, when the
    operator watches only some), with the label selector applied by the server.

    A pass then reads its Builder's children from memory instead of five LISTs, and each
    change is reported through ``on_change`` to wake the Builder concerned. What a pass
    writes is recorded as soon as the server answers, so the next pass does not act on
    the state from before its own write."""

    def __init__(
        self,
        kube: Kube,
        namespaces: Sequence[str],
        on_change: Callable[[dict[str, Any]], None],
    ) -> None:
        self.kube = kube
        self.namespaces = list(namespaces) or [""]
        self.on_change = on_change
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._by_builder: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._heard: dict[tuple[str, str], float] = {}  # (kind, namespace) -> monotonic
        self._synced: dict[tuple[str, str], threading.Event] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        for kind in _PATHS:
            for namespace in self.namespaces:
                self._synced[(kind, namespace)] = threading.Event()
                threading.Thread(
                    target=self._run, args=(kind, namespace), daemon=True, name=f"watch-{kind}"
                ).start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(
            event.wait(max(0.0, deadline - time.monotonic())) for event in self._synced.values()
        )

    def fresh(self) -> bool:
        now = time.monotonic()
        return bool(self._synced) and all(
            event.is_set() and now - self._heard.get(key, 0.0) < WATCH_FRESH
            for key, event in self._synced.items()
        )

    def children(self, namespace: str, label: str) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            keys = list(self._by_builder.get((namespace, label), ()))
            return {
                (kind, name): self._objects[(kind, namespace, name)]
                for kind, name in keys
                if (kind, namespace, name) in self._objects
            }

    def remember(self, obj: Mapping[str, Any]) -> None:
        """Record an object as a write's answer returned it (if it carries our label)."""
        if (obj.get("metadata") or {}).get("labels", {}).get(LABEL_MANAGED_BY) == MANAGED_BY:
            self._put(dict(obj), notify=False)

    def _key(self, obj: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return (obj["kind"], meta.get("namespace", ""), meta["name"])

    def _put(self, obj: dict[str, Any], notify: bool = True) -> bool:
        _slim(obj)
        key = self._key(obj)
        labels = obj["metadata"].get("labels") or {}
        with self._lock:
            old = self._objects.get(key)
            if not _newer(obj, old):
                return False
            if old is not None:
                self._unindex(key, old)
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
                self._objects.pop(key, None)  # our label removed: no longer one of ours
            else:
                self._objects[key] = obj
                builder = labels.get(LABEL_BUILDER)
                if builder:
                    self._by_builder.setdefault((key[1], builder), set()).add((key[0], key[2]))
        if notify:
            self.on_change(obj)
        return True

    def _drop(self, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        with self._lock:
            old = self._objects.pop(key, None)
            if old is not None:
                self._unindex(key, old)
        self.on_change(obj)

    def _unindex(self, key: tuple[str, str, str], old: Mapping[str, Any]) -> None:
        builder = (old["metadata"].get("labels") or {}).get(LABEL_BUILDER)
        members = self._by_builder.get((key[1], builder or ""))
        if members is not None:
            members.discard((key[0], key[2]))
            if not members:
                del self._by_builder[(key[1], builder or "")]

    def _url(self, kind: str, namespace: str, **query: str) -> str:
        prefix, plural = _PATHS[kind]
        where = f"/namespaces/{namespace}" if namespace else ""
        query["labelSelector"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        return f"{self.kube.host}{prefix}{where}/{plural}?{urlencode(query)}"

    def _run(self, kind: str, namespace: str) -> None:
        failures = 0
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list(kind, namespace)
                version = self._watch(kind, namespace, version)
                failures = 0
            except Exception as err:
                failures += 1
                log.warning("watch of %s %s failed, resuming: %s", kind, namespace or "*", err)
                self._stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))

    def _list(self, kind: str, namespace: str) -> str:
        """List afresh, replacing what was known of this kind (objects gone meanwhile are
        reported as changes too). Returns the list's resource version."""
        seen: set[tuple[str, str, str]] = set()
        token = ""
        while True:
            query = {"limit": "500", **({"continue": token} if token else {})}
            body = self.kube.raw("GET", self._url(kind, namespace, **query))
            for item in body.get("items") or []:
                item["kind"] = kind
                seen.add(self._key(item))
                self._put(item)
            token = (body.get("metadata") or {}).get("continue") or ""
            if not token:
                break
        with self._lock:
            gone = [
                obj
                for key, obj in self._objects.items()
                if key[0] == kind and (not namespace or key[1] == namespace) and key not in seen
            ]
        for obj in gone:
            self._drop(obj)
        self._heard[(kind, namespace)] = time.monotonic()
        self._synced[(kind, namespace)].set()
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, kind: str, namespace: str, version: str) -> str:
        """Follow one watch until the server ends it; returns where to resume ("" to list
        again)."""
        url = self._url(
            kind,
            namespace,
            watch="1",
            resourceVersion=version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(WATCH_SECONDS),
        )
        response = self.kube.raw("GET", url, stream=True, read_timeout=WATCH_SECONDS + 15)
        try:
            if response.status == 410:
                return ""
            if response.status >= 300:
                raise ApiException(status=response.status, reason=response.reason)
            self._heard[(kind, namespace)] = time.monotonic()
            buffer = b""
            for chunk in response.stream(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    kind_of = event.get("type")
                    if kind_of == "ERROR":
                        return ""  # expired: list again
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    self._heard[(kind, namespace)] = time.monotonic()
                    if kind_of == "BOOKMARK":
                        continue
                    obj["kind"] = kind
                    if kind_of == "DELETED":
                        self._drop(obj)
                    else:
                        self._put(obj)
                if self._stop.is_set():
                    break
        finally:
            response.release_conn()
        return version


class Kube:
    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        *,
        concurrency: int = 0,
    ) -> None:
        self.api_client = api_client or load_config()
        # As many connections as requests can be in flight (passes, their fan-out, the
        # watches): urllib3 would otherwise open, and discard, a TLS connection for each
        # request over its pool's size.
        connections = 2 * (concurrency or 8) + len(_PATHS) + 2
        self.api_client.configuration.connection_pool_maxsize = connections
        self.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = connections
        self.timeout = timeout
        # Requests of one pass that do not depend on each other go out together.
        self._fanout = ThreadPoolExecutor(concurrency or 8, thread_name_prefix="request")
        _default_timeout(self.api_client, timeout)
        self.cache: ChildCache | None = None
        self.builders: dict[tuple[str, str], dict[str, Any]] = {}
        self.reporting_instance = socket.gethostname()
        # Leadership's fence: writes are sent only while it answers True (see raw).
        self.fence: Callable[[], bool] | None = None

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def raw(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        read_timeout: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """A request decoded as plain JSON (or, with ``stream``, the open response): the
        typed and dynamic clients' model objects cost more CPU than the request itself.
        A refusal raises ApiException with the server's status and body.

        ``timeout`` bounds the whole request (connecting and reading) and turns off
        urllib3's own retries: the Lease's requests must end by its deadline. A write is
        refused here, before it is sent, once ``fence`` says this process may no longer
        lead."""
        if method != "GET" and self.fence is not None and not self.fence():
            raise Fenced(f"{method} {url}: not sent, this process may no longer lead")
        configuration = self.api_client.configuration
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        # Credentials as the client would send them (a bearer token, refreshed by its hook
        # where it expires); client certificates are in the connection pool already.
        for auth in configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[auth["key"]] = auth["value"]
        bounded = timeout is not None
        response = self.api_client.rest_client.pool_manager.request(
            method,
            url,
            headers=headers,
            body=None if body is None else json.dumps(body),
            preload_content=not stream,
            timeout=urllib3.Timeout(total=timeout)
            if bounded
            else urllib3.Timeout(connect=self.timeout[0], read=read_timeout or self.timeout[1]),
            retries=False if bounded else None,
        )
        if stream:
            return response
        if response.status >= 300:
            raise ApiException(http_resp=response)
        return json.loads(response.data)

    def _builder_path(self, namespace: str, name: str) -> str:
        return f"{self.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    def _path(self, kind: str, namespace: str, name: str = "", **query: str) -> str:
        prefix, plural = _PATHS[kind]
        suffix = f"/{name}" if name else ""
        encoded = f"?{urlencode(query)}" if query else ""
        return f"{self.host}{prefix}/namespaces/{namespace}/{plural}{suffix}{encoded}"

    def watch_children(
        self, namespaces: Sequence[str], on_change: Callable[[dict[str, Any]], None]
    ) -> ChildCache:
        """Start keeping the children in memory (see ChildCache)."""
        self.cache = ChildCache(self, namespaces, on_change)
        self.cache.start()
        return self.cache

    def remember_builder(self, obj: dict[str, Any]) -> None:
        """A Builder as a watch or a write's answer reported it, for the next pass."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if _newer(obj, self.builders.get(key)):
            self.builders[key] = obj

    def forget_builder(self, namespace: str, name: str) -> None:
        self.builders.pop((namespace, name), None)

    # --- reads -------------------------------------------------------------------------

    def get_builder(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Builder as the watch last reported it, or read when the watch has not."""
        cached = self.builders.get((namespace, name))
        if cached is not None:
            return cached
        try:
            obj: dict[str, Any] = with_retries(
                lambda: self.raw("GET", self._builder_path(namespace, name))
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = with_retries(
                lambda: self.raw("GET", self._path(kind, namespace, name))
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return obj

    def get_missing(
        self, namespace: str, names: list[tuple[str, str]], found: dict[tuple[str, str], Any]
    ) -> None:
        """Look up by name each (kind, name) not in ``found``: an object of a child's name
        without our labels is someone else's, and must be seen to be left alone."""
        wanted = [(kind, name) for kind, name in names if (kind, name) not in found]
        for (kind, name), obj in zip(
            wanted, self.map(lambda key: self.get(key[0], namespace, key[1]), wanted), strict=True
        ):
            if obj:
                obj.setdefault("kind", kind)
                found[(kind, name)] = obj

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``fn`` over ``items`` concurrently, results in order; the first failure is
        raised once all are done."""
        if len(items) < 2:
            return [fn(item) for item in items]
        return list(self._fanout.map(fn, items))

    def list_children(self, namespace: str, builder: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Every object in the namespace labelled as this Builder's, keyed by (kind, name):
        from the cache while its watches are current, else listed."""
        if self.cache is not None and self.cache.fresh():
            return self.cache.children(namespace, label_value(builder))
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_BUILDER}={label_value(builder)}"
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for _, kind in CHILD_KINDS:
            items = with_retries(
                lambda kind=kind: self.raw(  # type: ignore[misc]
                    "GET", self._path(kind, namespace, labelSelector=selector)
                )
            )
            for item in items.get("items") or []:
                item.setdefault("kind", kind)
                found[(kind, item["metadata"]["name"])] = item
        return found

    def daemon_addresses(self, namespace: str, service: str) -> dict[str, str]:
        """Pod name → IP of the pods behind a Builder's Service that serve (not terminating),
        from its EndpointSlices: what the operator needs to ask a daemon whether it builds,
        without the right to read pods (whose specs may hold other workloads' secrets)."""
        url = (
            f"{self.host}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?"
            + urlencode({"labelSelector": f"kubernetes.io/service-name={service}"})
        )
        found: dict[str, str] = {}
        for item in self.raw("GET", url).get("items") or []:
            for endpoint in item.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                addresses = endpoint.get("addresses") or []
                if ref.get("kind") != "Pod" or not addresses:
                    continue
                if (endpoint.get("conditions") or {}).get("terminating"):
                    continue
                found[ref["name"]] = addresses[0]
        return found

    # --- writes ------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting fields:
        the spec is the source of truth for every field the operator renders."""
        kind, meta = obj["kind"], obj["metadata"]
        url = self._path(
            kind, meta["namespace"], meta["name"], fieldManager=FIELD_MANAGER, force="true"
        )
        applied: dict[str, Any] = with_retries(
            lambda: self.raw(
                "PATCH", url, body=dict(obj), content_type="application/apply-patch+yaml"
            )
        )
        self._remember(applied, kind)
        return applied

    def _remember(self, obj: dict[str, Any], kind: str) -> None:
        if self.cache is not None:
            self.cache.remember({**obj, "kind": kind})

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Any:
        url = self._path(kind, namespace, name, fieldManager=FIELD_MANAGER)
        patched: dict[str, Any] = with_retries(
            lambda: self.raw(
                "PATCH", url, body=dict(patch), content_type="application/merge-patch+json"
            )
        )
        self._remember(patched, kind)
        return patched

    def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Delete, if it is still the object of ``uid``; a workload stays (terminating)
        until its pods are gone, so a replacement never runs beside the old daemon on one
        cache volume."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Foreground" if kind in _FOREGROUND_KINDS else "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            with_retries(lambda: self.raw("DELETE", self._path(kind, namespace, name), body=body))
        except ApiException as err:
            if err.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        url = self._builder_path(namespace, name) + "/status"
        result = with_retries(
            lambda: self.raw(
                "PATCH",
                url,
                body={"status": dict(status)},
                content_type="application/merge-patch+json",
            )
        )
        if isinstance(result, dict) and (namespace, name) in self.builders:
            self.remember_builder(result)

    def event(self, builder: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on the Builder; a failure to record is logged, not fatal."""
        meta = builder["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name'][:200]}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.reporting_instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        url = f"{self.host}/api/v1/namespaces/{meta['namespace']}/events"
        try:
            self.raw("POST", url, body=event)
        except ApiException as err:
            log.warning("could not record event %s on %s: %s", reason, meta["name"], err.reason)


def secret_data(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    """Decoded data of a Secret; undecodable entries are dropped (and so re-issued)."""
    if not secret:
        return {}
    decoded = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value or "", validate=True)
        except ValueError:
            continue
    return decoded
