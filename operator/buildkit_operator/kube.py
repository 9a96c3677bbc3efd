"""The only module that talks to the API server.

Blocking calls on the official client; the reconciler runs them off the event loop.
Writes are server-side apply with one field manager, so the operator owns exactly the
fields it renders and leaves everyone else's alone. Every request has a timeout: a hung
connection must fail the pass (and be retried), never hold a Builder for ever.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

from .model import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .names import FIELD_MANAGER, LABEL_BUILDER, LABEL_MANAGED_BY, MANAGED_BY, label_value

log = logging.getLogger(__name__)

# Kinds of the children, in the order they are best created.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
)
API_VERSIONS = dict((kind, api) for api, kind in CHILD_KINDS)

T = TypeVar("T")
_RETRYABLE = {409, 429, 500, 502, 503, 504}
# (connect, read) seconds for every request the operator makes.
REQUEST_TIMEOUT = (5.0, 30.0)
# Deleting a workload waits for its pods (foreground), so that a daemon made anew, or
# scaled up again, never runs beside the old one on one cache volume.
_FOREGROUND_KINDS = {"Deployment"}


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


class Kube:
    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.api_client = api_client or load_config()
        _default_timeout(self.api_client, timeout)
        self.dynamic = DynamicClient(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self._resources: dict[str, Any] = {}
        self.reporting_instance = socket.gethostname()

    def _resource(self, kind: str) -> Any:
        if kind not in self._resources:
            self._resources[kind] = self.dynamic.resources.get(
                api_version=API_VERSIONS[kind], kind=kind
            )
        return self._resources[kind]

    # --- reads -------------------------------------------------------------------------

    def get_builder(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = cast(
                dict[str, Any],
                with_retries(
                    lambda: self.custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name
                    )
                ),
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = with_retries(lambda: self._resource(kind).get(name=name, namespace=namespace))
        except NotFoundError:
            return None
        result: dict[str, Any] = obj.to_dict()
        return result

    def get_missing(
        self, namespace: str, names: list[tuple[str, str]], found: dict[tuple[str, str], Any]
    ) -> None:
        """Look up by name each (kind, name) not in ``found``: an object of a child's name
        without our labels is someone else's, and must be seen to be left alone."""
        for kind, name in names:
            if (kind, name) not in found and (obj := self.get(kind, namespace, name)):
                obj.setdefault("kind", kind)
                found[(kind, name)] = obj

    def list_children(self, namespace: str, builder: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Every object in the namespace labelled as this Builder's, keyed by (kind, name)."""
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_BUILDER}={label_value(builder)}"
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for _, kind in CHILD_KINDS:
            items = with_retries(
                lambda kind=kind: self._resource(kind).get(  # type: ignore[misc]
                    namespace=namespace, label_selector=selector
                )
            )
            for item in items.to_dict().get("items") or []:
                item.setdefault("kind", kind)
                found[(kind, item["metadata"]["name"])] = item
        return found

    # --- writes ------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting fields:
        the spec is the source of truth for every field the operator renders."""
        kind = obj["kind"]
        result = with_retries(
            lambda: self.dynamic.server_side_apply(
                self._resource(kind),
                body=dict(obj),
                namespace=obj["metadata"]["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        )
        applied: dict[str, Any] = result.to_dict()
        return applied

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> Any:
        result = with_retries(
            lambda: self._resource(kind).patch(
                name=name,
                namespace=namespace,
                body=dict(patch),
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            )
        )
        patched: dict[str, Any] = result.to_dict()
        return patched

    def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Delete, if it is still the object of ``uid``; a workload stays (terminating)
        until its pods are gone, so a replacement never runs beside the old daemon on one
        cache volume."""
        body = client.V1DeleteOptions(
            propagation_policy="Foreground" if kind in _FOREGROUND_KINDS else "Background",
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
        )
        with contextlib.suppress(NotFoundError):
            with_retries(
                lambda: self._resource(kind).delete(name=name, namespace=namespace, body=body)
            )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        with_retries(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
            )
        )

    def event(self, builder: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on the Builder; a failure to record is logged, not fatal."""
        meta = builder["metadata"]
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta['name'][:200]}.{uuid.uuid4().hex[:16]}",
                namespace=meta["namespace"],
            ),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION,
                kind=KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            source=client.V1EventSource(component=FIELD_MANAGER),
            reporting_component=FIELD_MANAGER,
            reporting_instance=self.reporting_instance[:128],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
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
