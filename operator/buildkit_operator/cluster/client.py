"""Requests to the API server, which the cluster package alone makes.

Blocking calls, as plain JSON over the official client's connection pool (its model
objects cost more CPU than the requests); the reconciler runs them off the event loop.
The children are read from a watch-fed cache (ChildCache, in cache.py), not listed on every
pass. Writes are server-side apply with one field manager, so the operator owns exactly the
fields it renders and leaves everyone else's alone. Every request has a timeout: a hung
connection must fail the pass (and be retried), never hold a Builder for ever.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from ..api.names import FIELD_MANAGER, LABEL_BUILDER, LABEL_MANAGED_BY, MANAGED_BY, label_value
from .cache import ChildCache, newer
from .kinds import CHILD_KINDS, PATHS, WATCHED
from .retries import with_retries

log = logging.getLogger(__name__)

T = TypeVar("T")
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


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config(config_file=kubeconfig)
    return client.ApiClient()


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
        connections = 2 * (concurrency or 8) + len(WATCHED) + 2
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
        self._server_version: str | None = None

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

    def server_version(self) -> str:
        """The API server's Kubernetes version (``/version``), read once: it is named where
        the cluster refuses what the operator needs of it. ``unknown`` while unreadable."""
        if self._server_version is None:
            try:
                info = self.raw("GET", f"{self.host}/version")
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
                return "unknown"
            self._server_version = str(info.get("gitVersion") or "unknown")
        return self._server_version

    def _builder_path(self, namespace: str, name: str) -> str:
        return f"{self.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    def _path(self, kind: str, namespace: str, name: str = "", **query: str) -> str:
        prefix, plural = PATHS[kind]
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
        if newer(obj, self.builders.get(key)):
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
        self,
        namespace: str,
        names: list[tuple[str, str]],
        found: dict[tuple[str, str], Any],
        asked: set[tuple[str, str]] | None = None,
    ) -> None:
        """Look up by name each (kind, name) not in ``found``: an object of a child's name
        without our labels is someone else's, and must be seen to be left alone.

        ``asked``: what this pass has looked up already (and is added to): a name the API
        server just answered 404 for is not asked again in the same pass (the TLS Secrets,
        looked up before rendering, are children rendered too)."""
        wanted = [
            (kind, name)
            for kind, name in names
            if (kind, name) not in found and (asked is None or (kind, name) not in asked)
        ]
        if asked is not None:
            asked.update(wanted)
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

    def daemon_pods(self, namespace: str, builder: str) -> list[dict[str, Any]]:
        """The pods of a Builder's daemons, by the labels its Deployments give them, for why
        a daemon does not run (their status; never their spec): cached, else listed. Only
        the pods it labelled are asked for, and it reads the namespace's Secrets already:
        a pod's spec tells it nothing it could not read there."""
        label = label_value(builder)
        if self.cache is not None and self.cache.fresh(pods=True):
            return self.cache.pods(namespace, label)
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_BUILDER}={label}"
        url = f"{self.host}/api/v1/namespaces/{namespace}/pods?" + urlencode(
            {"labelSelector": selector}
        )
        try:
            items = with_retries(lambda: self.raw("GET", url)).get("items") or []
        except ApiException as err:
            if err.status != 403:
                raise
            log.warning("pods of %s/%s unreadable, no causes: %s", namespace, builder, err.reason)
            return []
        for item in items:
            item.pop("spec", None)
        return sorted(items, key=lambda item: str(item["metadata"]["name"]))

    def daemon_addresses(self, namespace: str, service: str) -> dict[str, str]:
        """Pod name → IP of the pods behind a Builder's Service that serve (not terminating),
        from its EndpointSlices (which say which pods serve): what the operator needs to ask
        a daemon whether it builds."""
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
