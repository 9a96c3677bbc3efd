"""The watch-fed cache of the children: a pass reads its Builder's children from memory
instead of listing them, and each change wakes the Builder concerned."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from kubernetes.client.exceptions import ApiException

from ..api.names import LABEL_BUILDER, LABEL_MANAGED_BY, MANAGED_BY
from .kinds import OBSERVED, WATCHED
from .transform import slim, worth_a_pass, worth_a_pass_gone

if TYPE_CHECKING:
    from .client import Kube

log = logging.getLogger(__name__)

# A watch is ended by the API server after this long and opened again, so one that went
# quiet (a dead connection) is noticed: the cache is trusted only while its watches have
# been heard from within WATCH_FRESH seconds.
WATCH_SECONDS = 60
WATCH_FRESH = 90.0


def newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
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
        for kind in WATCHED:
            for namespace in self.namespaces:
                self._synced[(kind, namespace)] = threading.Event()
                threading.Thread(
                    target=self._run, args=(kind, namespace), daemon=True, name=f"watch-{kind}"
                ).start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        """Wait for the children's watches to have listed (not the pods': a pass needs
        them only for a daemon that does not run, and lists them itself meanwhile)."""
        deadline = time.monotonic() + timeout
        return all(
            event.wait(max(0.0, deadline - time.monotonic()))
            for key, event in self._synced.items()
            if key[0] not in OBSERVED
        )

    def fresh(self, *, pods: bool = False) -> bool:
        """Whether the children's watches (or, with ``pods``, the pods') are current: a
        watch of pods refused (an operator upgraded without its chart's RBAC) costs the
        causes in the status, never the cache of the children."""
        now = time.monotonic()
        keys = [key for key in self._synced if (key[0] in OBSERVED) == pods]
        return bool(keys) and all(
            self._synced[key].is_set() and now - self._heard.get(key, 0.0) < WATCH_FRESH
            for key in keys
        )

    def children(self, namespace: str, label: str) -> dict[tuple[str, str], dict[str, Any]]:
        """A Builder's children (its pods are not: a pass never writes or deletes one)."""
        return {
            key: obj for key, obj in self._of(namespace, label).items() if key[0] not in OBSERVED
        }

    def pods(self, namespace: str, label: str) -> list[dict[str, Any]]:
        """The pods carrying a Builder's labels, by name."""
        found = self._of(namespace, label)
        return [found[key] for key in sorted(found) if key[0] == "Pod"]

    def _of(self, namespace: str, label: str) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            keys = list(self._by_builder.get((namespace, label), ()))
            return {
                (kind, name): self._objects[(kind, namespace, name)]
                for kind, name in keys
                if (kind, namespace, name) in self._objects
            }

    def remember(self, obj: Mapping[str, Any]) -> None:
        """Record an object as a write's answer returned it (if it carries our label)."""
        if obj.get("kind") in OBSERVED:
            return
        if (obj.get("metadata") or {}).get("labels", {}).get(LABEL_MANAGED_BY) == MANAGED_BY:
            self._put(dict(obj), notify=False)

    def _key(self, obj: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return (obj["kind"], meta.get("namespace", ""), meta["name"])

    def _put(self, obj: dict[str, Any], notify: bool = True) -> bool:
        slim(obj)
        key = self._key(obj)
        labels = obj["metadata"].get("labels") or {}
        with self._lock:
            old = self._objects.get(key)
            if not newer(obj, old):
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
        # Judged outside the lock (a cached object is never changed, only replaced): every
        # pass reads the cache under it, and waits for as long as a watch thread holds it.
        if notify and worth_a_pass(old, obj):
            self.on_change(obj)
        return True

    def _drop(self, obj: dict[str, Any], listed_at: str | None = None) -> None:
        """Forget ``obj``: deleted (a watch's DELETED event carries the object as it was
        deleted), or absent from a list as of resource version ``listed_at``. What is
        cached is kept when it is newer than that: the same name made anew (another uid),
        or written by a pass after the list was taken. Dropping it would make a pass see
        its own fresh write missing: a spurious create, for the CA Secret a re-issue."""
        key = self._key(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None:
                if listed_at is not None:
                    as_of: Mapping[str, Any] = {"metadata": {"resourceVersion": listed_at}}
                    if newer(old, as_of):
                        return
                elif (old["metadata"].get("uid") != obj["metadata"].get("uid")) or newer(old, obj):
                    return
                del self._objects[key]
                self._unindex(key, old)
        if worth_a_pass_gone(old or obj):
            self.on_change(obj)

    def _unindex(self, key: tuple[str, str, str], old: Mapping[str, Any]) -> None:
        builder = (old["metadata"].get("labels") or {}).get(LABEL_BUILDER)
        members = self._by_builder.get((key[1], builder or ""))
        if members is not None:
            members.discard((key[0], key[2]))
            if not members:
                del self._by_builder[(key[1], builder or "")]

    def _url(self, kind: str, namespace: str, **query: str) -> str:
        prefix, plural = WATCHED[kind]
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
        listed_at = str(body["metadata"]["resourceVersion"])
        with self._lock:
            gone = [
                obj
                for key, obj in self._objects.items()
                if key[0] == kind and (not namespace or key[1] == namespace) and key not in seen
            ]
        for obj in gone:
            self._drop(obj, listed_at)
        self._heard[(kind, namespace)] = time.monotonic()
        self._synced[(kind, namespace)].set()
        return listed_at

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
