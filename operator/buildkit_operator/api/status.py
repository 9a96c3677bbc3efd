"""BuilderStatus: what the operator reports. Written only by the operator, so its types
check nothing beyond their shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .camel_model import CamelModel

Phase = Literal["Pending", "Ready", "Degraded", "Drifted", "Missing", "Invalid"]


class Condition(CamelModel):
    """A status condition, shaped like metav1.Condition."""

    type: str = Field(
        description="Ready, Progressing, Drifted, Degraded, and kstatus' Reconciling and Stalled."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason code.")
    message: str = Field("", description="What happened and what to do about it.")
    last_transition_time: str | None = Field(
        None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None, description="The Builder generation the condition was computed for."
    )


class CacheStatus(CamelModel):
    """The cache the daemons got: the spec's, or the operator's install-wide defaults."""

    size: str | None = Field(None, description="Size of each daemon's cache volume.")
    storage_class_name: str | None = Field(
        None, description="StorageClass of the cache PVCs; absent for the cluster default."
    )


class PoolStatus(CamelModel):
    """One pool of daemons as it runs."""

    platform: str = Field(description="The pool's platform, e.g. linux/arm64.")
    replicas: int = Field(description="Daemons desired in the pool.")
    ready_replicas: int = Field(description="The pool's daemons ready to serve builds.")
    endpoint: str = Field(description="The pool's Service: tcp://<service>.<namespace>.svc:1234.")


class DaemonStatus(CamelModel):
    """One daemon: its own address, so a client can come back to its cache."""

    name: str = Field(description="The daemon's Deployment, also its pod's hostname.")
    address: str = Field(
        description="tcp://<daemon>.<headless service>.<namespace>.svc:1234, covered by the "
        "server certificate; a Builder's only daemon is reached at its endpoint (the Service)."
    )
    platform: str | None = Field(None, description="Its pool's platform (pools only).")
    ready: bool = Field(description="Serving builds with the current spec.")
    idle: bool = Field(
        False, description="Scaled to zero after idleTimeout; connect or wake starts it."
    )
    builds_in_flight: int | None = Field(
        None,
        description=(
            "Builds the daemon was running when last asked (with autoscale); absent when it "
            "was not asked or could not answer."
        ),
    )
    reason: str | None = Field(
        None,
        description=(
            "Why it does not run, from its pods and its Deployment: CrashLoopBackOff, "
            "OOMKilled, ImagePullBackOff, Unschedulable, CreateContainerConfigError, "
            "FailedCreate or ContainerCreating; absent while nothing is wrong."
        ),
    )
    message: str | None = Field(
        None,
        description=(
            "What its pods say (the container's last termination message, the scheduler's "
            "or the API server's refusal) and what to do about it."
        ),
    )


class AutoscaleStatus(CamelModel):
    """What the autoscaler of one set of daemons decided, and why."""

    platform: str | None = Field(None, description="The pool's platform (pools only).")
    replicas: int = Field(description="Daemons the autoscaler wants now.")
    busy_since: str | None = Field(
        None,
        description=(
            "Since when every daemon has had builds in flight (RFC 3339): a daemon is added "
            "scaleUpAfter later."
        ),
    )
    message: str = Field(description="The current decision and what would change it.")
    last_scale_time: str | None = Field(
        None, description="When the autoscaler last added or removed a daemon (RFC 3339)."
    )
    last_scale: str | None = Field(None, description="What the autoscaler last did, and why.")


class WaitingDaemon(CamelModel):
    """A daemon whose roll, recreate or removal waits for it to go idle."""

    daemon: str = Field(description="The daemon's Deployment.")
    since: str = Field(description="When the wait began (RFC 3339).")
    reason: str = Field(description="What it waits for, and what waits.")


class BuilderStatus(CamelModel):
    """Observed state of a Builder."""

    phase: Phase | None = Field(
        None, description="Pending, Ready, Degraded, Drifted, Missing or Invalid."
    )
    message: str | None = Field(None, description="A one-line summary of the phase.")
    observed_generation: int | None = Field(
        None, description="The Builder generation this status describes."
    )
    ready: str | None = Field(
        None, description="Ready daemons / desired daemons, e.g. 1/2 (the READY column)."
    )
    replicas: int | None = Field(None, description="Daemons desired.")
    ready_replicas: int | None = Field(None, description="Daemons ready to serve builds.")
    endpoint: str | None = Field(
        None, description="Where clients connect: tcp://<service>.<namespace>.svc:1234."
    )
    client_secret_name: str | None = Field(
        None,
        description="Secret with the client certificate (ca.pem, cert.pem, key.pem) to connect.",
    )
    certificate_not_after: str | None = Field(
        None, description="Expiry of the server certificate (RFC 3339)."
    )
    ca_certificate: str | None = Field(
        None,
        description=(
            "The CA certificate (PEM) clients verify the daemons with, with tls.mode auto: "
            "public, so that a user with a certificate of their own (signer "
            "buildkit.dev/client) needs no Secret."
        ),
    )
    drifted_fields: list[str] = Field(
        default_factory=list,
        description=(
            "Fields of live children that differ from the spec and were left as they are "
            "(noRecreate, an adopted workload, a cache claim that cannot change in place)."
        ),
    )
    pools: list[PoolStatus] = Field(
        default_factory=list, description="Each pool's endpoint and readiness (spec.pools)."
    )
    daemons: list[DaemonStatus] = Field(
        default_factory=list,
        description="Every daemon with its own address, readiness, and whether it is Idle.",
    )
    image: str | None = Field(
        None, description="The buildkitd image the daemons run (the spec's or the default)."
    )
    cache: CacheStatus | None = Field(
        None, description="The cache the daemons got (the spec's or the defaults)."
    )
    autoscale: list[AutoscaleStatus] = Field(
        default_factory=list,
        description=(
            "One entry per set of daemons with autoscale (the Builder's, or each pool's): "
            "the daemons wanted, since when all of them build, and the last decision."
        ),
    )
    waiting_for_idle: list[WaitingDaemon] = Field(
        default_factory=list,
        description=(
            "Daemons whose roll, recreate or removal is held while they build (at most "
            "drain.maxWaitSeconds), or until another daemon's roll is done."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready (every daemon runs the current spec), Progressing (a rollout or recreate "
            "is under way), Drifted, Degraded, and for kstatus (Flux) Reconciling (as "
            "Progressing) and Stalled (waiting on a person); with observedGeneration."
        ),
    )
    applied_spec: dict[str, Any] | None = Field(
        None,
        description=(
            "The last valid spec, which the children were made from, shown for people: "
            "the operator never reads it. While a later edit is invalid, it keeps repairing "
            "and renewing what runs from its own copy (annotation buildkit.dev/applied-spec "
            "on the Builder's ConfigMap)."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
