"""Leader election through a coordination.k8s.io Lease: of several operator processes, one
reconciles; the others wait to take over.

Only the leader starts Kopf at all (handlers, watches, the children's cache): a standby
makes no request but its Lease reads. A leader that cannot renew within the renew deadline
exits at once, as controller-runtime's managers do, rather than reconcile beside a new
leader. A leader stopped in the ordinary way (SIGTERM) releases the Lease, so its
successor takes over without waiting for it to expire.

Expiry is judged as client-go judges it: by the local clock, from the moment this process
last saw the Lease change (its holder, renew time or transitions), never by comparing the
holder's clock with ours.

Kopf's own peering was measured against this (bench/failover.py) and not chosen: its
peers of equal priority all pause (two replicas of one Deployment must be given different
priorities), a pause stops Kopf's watchers but not the operator's own children's watches
and timers, and it needs a peering CRD with rights on it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .client import Kube

log = logging.getLogger(__name__)

LEASE_NAME = "buildkit-operator"
# controller-runtime's defaults: a SIGKILLed leader is replaced within about
# LEASE_DURATION + RETRY_PERIOD seconds; a live one renews every RETRY_PERIOD.
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_identity() -> str:
    """The pod's name (its hostname) and a random part: a restarted process in the same
    pod is a new candidate, not the old holder."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """The pod's own namespace when running in one, else ``default``."""
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class Timing:
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD

    def check(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, "
                f"got {self.retry_period}, {self.renew_deadline}, {self.lease_duration}"
            )


def _micro_time(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: Mapping[str, Any]) -> tuple[Any, ...]:
    """What changes when a holder renews or a new one takes over."""
    spec = lease.get("spec") or {}
    return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))


def may_take(
    lease: Mapping[str, Any], identity: str, observed_at: float, now: float, duration: float
) -> bool:
    """Whether ``identity`` may write itself into the Lease: it holds it already, nobody
    does, or the holder has not renewed for its duration of our clock since ``observed_at``
    (when this process last saw the Lease change). The duration is the one the holder wrote
    in the Lease (``leaseDurationSeconds``), as client-go reads it; ``duration`` where it
    wrote none."""
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    written = spec.get("leaseDurationSeconds")
    if isinstance(written, int) and written > 0:
        duration = written
    return not holder or holder == identity or now - observed_at >= duration


@dataclass(frozen=True)
class Election:
    """Where the Lease lives and how it is held: ``buildkit-operator run --leader-elect``."""

    namespace: str
    name: str = LEASE_NAME
    identity: str = ""
    timing: Timing = Timing()

    def elector(self, kube: Kube) -> LeaderElector:
        return LeaderElector(kube, self.namespace, self.name, self.identity, self.timing)


class LeaderElector:
    """Acquire, renew and release one Lease on behalf of this process."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = LEASE_NAME,
        identity: str = "",
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        timing.check()
        self.kube, self.namespace, self.name = kube, namespace, name
        self.identity = identity or default_identity()
        self.timing = timing
        self.clock = clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._leading = False
        self._stop = threading.Event()

    def valid(self) -> bool:
        """Whether this process may still act as the leader: it renewed the Lease less than
        the renew deadline ago. Checked before every write (``Kube.fence``); a standby
        cannot take over before then, since the deadline is shorter than the Lease."""
        return self._leading and self.clock() - self._renewed_at < self.timing.renew_deadline

    def _request(self, method: str, url: str, body: Any = None) -> Any:
        """One Lease request, ended by the renew deadline (no hidden retries): a leader on
        a hung connection must not outlive its leadership waiting for an answer."""
        if self._leading:
            left = self.timing.renew_deadline - (self.clock() - self._renewed_at)
        else:
            left = self.timing.renew_deadline
        return self.kube.raw(method, url, body=body, timeout=max(0.1, left))

    @property
    def _url(self) -> str:
        base = f"{self.kube.host}/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        return f"{base}/{self.name}"

    def _read(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self._request("GET", self._url)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        return lease

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro_time(datetime.now(UTC))
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards. Writes are
        conditional on the version read, so two candidates never both win."""
        try:
            lease = self._read()
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(0, None),
                }
                url = self._url.rsplit("/", 1)[0]
                written = self._request("POST", url, body)
            else:
                if not may_take(
                    lease,
                    self.identity,
                    self._observed_at,
                    self.clock(),
                    self.timing.lease_duration,
                ):
                    return False
                spec = lease.get("spec") or {}
                ours = spec.get("holderIdentity") == self.identity
                transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
                body = {
                    **lease,
                    "spec": self._spec(transitions, spec.get("acquireTime") if ours else None),
                }
                written = self._request("PUT", self._url, body)
        except ApiException as err:
            if err.status not in (409, 404):
                log.warning(
                    "leader election: Lease %s/%s: %s", self.namespace, self.name, err.reason
                )
            return False
        except Exception as err:  # a connection refused or timed out: try again later
            log.warning("leader election: Lease %s/%s: %s", self.namespace, self.name, err)
            return False
        now = self.clock()
        if self._leading and now - self._renewed_at >= self.timing.renew_deadline:
            return False  # renewed too late: leadership may have passed on meanwhile
        self._observed, self._observed_at = _record(written), now
        self._renewed_at = now
        self._leading = True
        return True

    def acquire(self) -> None:
        """Block until this process leads."""
        log.info(
            "leader election: %s waits for Lease %s/%s", self.identity, self.namespace, self.name
        )
        while not self.try_acquire_or_renew():
            if self._stop.wait(self.timing.retry_period):
                raise SystemExit(0)
        log.info(
            "leader election: %s leads (Lease %s/%s)", self.identity, self.namespace, self.name
        )

    def keep_renewing(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew every retry period on a thread of its own; call ``on_lost`` when the Lease
        could not be renewed for the renew deadline (or another process holds it). A
        watchdog of its own calls it at the deadline even while a renewal hangs."""
        lost = threading.Event()

        def lose() -> None:
            if not self._stop.is_set() and not lost.is_set():
                lost.set()
                self._leading = False
                on_lost()

        def loop() -> None:
            while not self._stop.wait(self.timing.retry_period):
                if self.try_acquire_or_renew():
                    continue
                holder = (self._observed or (None,))[0]
                if holder not in (None, self.identity) or not self.valid():
                    lose()
                    return

        def watchdog() -> None:
            tick = min(0.5, self.timing.retry_period / 2)
            while not self._stop.wait(tick) and not lost.is_set():
                if not self.valid():
                    lose()
                    return

        threading.Thread(target=watchdog, daemon=True, name="leader-watchdog").start()
        thread = threading.Thread(target=loop, daemon=True, name="leader-election")
        thread.start()
        return thread

    def release(self) -> None:
        """Stop renewing and, if this process still holds the Lease, give it up so that a
        standby takes over at once. Called once nothing of this process writes any more:
        from here on the fence refuses every write but these two."""
        self._stop.set()
        self._leading = False
        try:
            lease = self._request("GET", self._url)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = _micro_time(datetime.now(UTC))
            released = {**spec, "holderIdentity": None, "renewTime": now, "leaseDurationSeconds": 1}
            self._request("PUT", self._url, {**lease, "spec": released})
            log.info(
                "leader election: %s released Lease %s/%s", self.identity, self.namespace, self.name
            )
        except Exception as err:  # the successor waits for expiry instead
            log.warning("leader election: could not release Lease: %s", err)
