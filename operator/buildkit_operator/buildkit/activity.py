"""Is a daemon building? Asked of the daemon itself, through BuildKit's build history.

BuildKit keeps a record of every build, and its control API (``ListenBuildHistory`` with
``ActiveOnly`` and ``EarlyExit``, what ``buildctl debug histories`` calls) lists the builds in
flight and returns at once. That is the most exact signal there is: it counts builds, not
connections (a buildx client may hold an idle connection; a build may outlive its client's
reconnect), and BuildKit's Prometheus ``/metrics`` only counts builds once they have ended.

The operator asks each daemon's pod on its build port (1234), over the Builder's mutual TLS
with the client certificate it issued (``tls.mode: auto``) or plain TCP (``disabled``). A
daemon that cannot be asked quickly (no pod IP, a pod IP the operator cannot reach, a user's
certificate the operator holds no client key for, a wedged daemon) is ``UNKNOWN``: the
operator never waits on it longer than ``TIMEOUT``. What ``UNKNOWN`` means is up to the
caller; the roll planner treats it as idle, because the daemon's own preStop hook still
waits for its builds before it stops (see ``render/workload.py``).

The interface, kept stable for its users (the roll planner, scale-to-zero):
``Activity`` (``in_flight``, ``last_build``, ``known``, ``building``, ``idle_for(now)``),
``UNKNOWN`` (both in ``api/daemons.py``, since the pure planner reads them), ``Target``,
``targets`` and ``gather``; the reconciler's ``observe.daemon_activity`` asks a Builder's
daemons through them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from ..api.daemons import Activity

log = logging.getLogger(__name__)

# Seconds the operator gives one daemon to answer, connection included: a pass that needs
# the answer (a roll of a daemon) must not be held up by a daemon that cannot answer.
TIMEOUT = 1.0
_METHOD = "/moby.buildkit.v1.Control/ListenBuildHistory"
STARTED = 0  # BuildHistoryEventType.STARTED


@dataclass(frozen=True)
class Target:
    """How to ask one daemon: ``address`` is ``host:port``; ``ca``, ``cert``, ``key`` (PEM)
    and ``server_name`` for mutual TLS, or all None for plain TCP."""

    daemon: str
    address: str
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None


def _messages() -> tuple[Any, Any]:
    """The two messages of BuildKit's control API the operator reads, built from their field
    numbers (``api/services/control/control.proto``); fields not named here are skipped by
    the protobuf decoder as unknown ones."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="buildkit_operator/control_subset.proto",
        package="moby.buildkit.v1",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    f = descriptor_pb2.FieldDescriptorProto
    request = proto.message_type.add(name="BuildHistoryRequest")
    for name, number, kind in (
        ("ActiveOnly", 1, f.TYPE_BOOL),
        ("Ref", 2, f.TYPE_STRING),
        ("EarlyExit", 3, f.TYPE_BOOL),
        ("Limit", 5, f.TYPE_INT32),
    ):
        request.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    record = proto.message_type.add(name="BuildHistoryRecord")
    record.field.add(name="Ref", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    for name, number in (("CreatedAt", 6), ("CompletedAt", 7)):
        record.field.add(
            name=name,
            number=number,
            type=f.TYPE_MESSAGE,
            type_name=".google.protobuf.Timestamp",
            label=f.LABEL_OPTIONAL,
        )
    event = proto.message_type.add(name="BuildHistoryEvent")
    event.field.add(name="type", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    event.field.add(
        name="record",
        number=2,
        type=f.TYPE_MESSAGE,
        type_name=".moby.buildkit.v1.BuildHistoryRecord",
        label=f.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("moby.buildkit.v1.BuildHistoryRequest")),
        get(pool.FindMessageTypeByName("moby.buildkit.v1.BuildHistoryEvent")),
    )


_Request, _Event = _messages()


# Pods are reached directly: an HTTP proxy from the environment is not for them.
_OPTIONS = [("grpc.enable_http_proxy", 0)]


def _channel(target: Target) -> grpc.Channel:
    if target.cert is None:
        return grpc.insecure_channel(target.address, options=_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=target.ca, private_key=target.key, certificate_chain=target.cert
    )
    options = [*_OPTIONS, ("grpc.ssl_target_name_override", target.server_name or "")]
    return grpc.secure_channel(target.address, credentials, options=options)


def _time(stamp: Any) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    when: datetime = stamp.ToDatetime(tzinfo=UTC)
    return when


def history(events: Iterable[Any]) -> Activity:
    """The activity a daemon's history events describe (pure, for the tests)."""
    in_flight = 0
    latest: datetime | None = None
    for event in events:
        record = event.record
        completed = _time(record.CompletedAt)
        if event.type == STARTED and completed is None:
            in_flight += 1
        when = completed or _time(record.CreatedAt)
        if when is not None and (latest is None or when > latest):
            latest = when
    return Activity(in_flight, latest)


def ask(target: Target, timeout: float = TIMEOUT) -> Activity:
    """Ask one daemon; never raises, never takes much longer than ``timeout``."""
    try:
        with _channel(target) as channel:
            call = channel.unary_stream(
                _METHOD,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=_Event.FromString,
            )
            # Every record the daemon keeps (in flight ones first), then it hangs up: the
            # history is bounded by BuildKit's history GC (days, or a count).
            request = _Request(ActiveOnly=False, EarlyExit=True)
            return history(call(request, timeout=timeout, wait_for_ready=True))
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        reason = f"{target.address}: {getattr(code, 'name', code)}"
        log.debug("activity of %s unknown: %s", target.daemon, reason)
        return Activity(None, None, reason)
    except (ValueError, OSError) as err:
        return Activity(None, None, f"{target.address}: {err}")


_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="activity")


def gather(targets: Iterable[Target], timeout: float = TIMEOUT) -> dict[str, Activity]:
    """Ask every daemon at once: the whole takes about ``timeout`` at most."""
    targets = list(targets)
    answers = _POOL.map(lambda t: ask(t, timeout), targets)
    return {t.daemon: a for t, a in zip(targets, answers, strict=True)}


def pod_of(daemon: str, pods: Iterable[str]) -> str | None:
    """The pod of a daemon's Deployment among pod names: ``<deployment>-<hash>-<hash>``."""
    for pod in pods:
        rest = pod.removeprefix(daemon + "-")
        if rest != pod and rest.count("-") == 1:
            return pod
    return None


def targets(
    daemons: Iterable[str],
    addresses: Mapping[str, str],
    *,
    port: int,
    tls: Mapping[str, bytes] | None,
    server_name: str | None,
) -> tuple[list[Target], dict[str, Activity]]:
    """How to ask each daemon (its pod's IP, from ``addresses``: pod name → IP), and the
    daemons that cannot be asked. ``tls`` holds the client's ``ca.pem``, ``cert.pem`` and
    ``key.pem``; None means plain TCP, an empty mapping that the operator holds no client
    certificate the daemons trust (``tls.mode: secret``)."""
    found: list[Target] = []
    unknown: dict[str, Activity] = {}
    for daemon in daemons:
        pod = pod_of(daemon, addresses)
        if pod is None:
            unknown[daemon] = Activity(None, None, "no serving pod")
            continue
        host = addresses[pod]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if tls is None:
            found.append(Target(daemon, address))
        elif {"ca.pem", "cert.pem", "key.pem"} <= set(tls):
            found.append(
                Target(
                    daemon,
                    address,
                    tls["ca.pem"],
                    tls["cert.pem"],
                    tls["key.pem"],
                    server_name,
                )
            )
        else:
            unknown[daemon] = Activity(None, None, "no client certificate the daemon trusts")
    return found, unknown


def describe(activity: Mapping[str, Activity]) -> dict[str, str]:
    """One word per daemon, for logs and status: ``building (2)``, ``idle``, ``unknown``."""
    out = {}
    for daemon, a in activity.items():
        if not a.known:
            out[daemon] = "unknown"
        elif a.building:
            out[daemon] = f"building ({a.in_flight})"
        else:
            out[daemon] = "idle"
    return out
