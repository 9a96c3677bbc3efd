"""BuilderSpec: the spec as a whole, assembled from the field groups of the modules
beside it, with the rules that span groups (TLS against the Service's exposure, rootless
against the security profile, pools against the daemon bound)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .autoscale import EXCLUSIVE_TEXT, AutoscaleSpec, exclusive_rule, no_server_default
from .buildkitd import DEFAULT_IMAGE_ROOTFUL, DEFAULT_IMAGE_ROOTLESS, BuildkitdSpec
from .cache import CacheSpec
from .camel_model import CamelModel
from .cel import cel_rule, cel_string, validations
from .drain import DrainSpec
from .durations import Duration
from .labels import LabelKeyed, Labels, check_label_key
from .metrics import MetricsSpec
from .object_names import ObjectName
from .pod import LocalObjectReference, ResourceRequirements, SecurityProfile, Toleration
from .pools import MAX_DAEMONS, MAX_POOLS, Pool, pool_slug
from .service import ServiceSpec
from .syntax import MAX_IMAGE_LENGTH, MAX_PULL_SECRETS, MAX_TOLERATIONS
from .tls import TLSSpec

# service.type NodePort/LoadBalancer with tls.mode disabled, without the opt-in.
_EXPOSED_WITHOUT_TLS = (
    "has(self.tls) && has(self.tls.mode) && self.tls.mode == 'disabled' && "
    "has(self.service) && has(self.service.type) && self.service.type != 'ClusterIP' && "
    "!(has(self.service.allowWithoutTLS) && self.service.allowWithoutTLS)"
)
AUTOSCALE_WITH_POOLS_TEXT = (
    "autoscale applies to the daemons of spec.replicas; with pools, set autoscale in each "
    "pool that should follow its load"
)
MIN_ZERO_TEXT = (
    "minReplicas 0 lets the last daemon sleep, which idleTimeout decides: set idleTimeout "
    "(e.g. 30m), or minReplicas 1 or more"
)
EXPOSED_WITHOUT_TLS_TEXT = (
    "with tls.mode disabled exposes an unauthenticated builder beyond the cluster: use "
    "tls.mode auto or secret, or set service.allowWithoutTLS: true if the network admits "
    "nobody else"
)


class BuilderSpec(CamelModel):
    """Desired state of a Builder: a set of buildkitd daemons reachable over mutual TLS."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    f"!({_EXPOSED_WITHOUT_TLS})",
                    "service.type NodePort or LoadBalancer " + EXPOSED_WITHOUT_TLS_TEXT,
                    message_expression=(
                        "'service.type ' + self.service.type + ' ' + "
                        + cel_string(EXPOSED_WITHOUT_TLS_TEXT)
                    ),
                    field_path=".service.type",
                ),
                cel_rule(
                    "!(has(self.rootless) && !self.rootless && has(self.securityProfile) && "
                    "self.securityProfile != 'privileged')",
                    "rootless: false means securityProfile privileged: drop rootless: false, or "
                    "set securityProfile: privileged",
                    field_path=".securityProfile",
                ),
                exclusive_rule(".autoscale"),
                cel_rule(
                    "!(has(self.autoscale) && has(self.pools) && size(self.pools) > 0)",
                    AUTOSCALE_WITH_POOLS_TEXT,
                    field_path=".autoscale",
                ),
                cel_rule(
                    "has(self.idleTimeout) || ((!has(self.autoscale) || "
                    "self.autoscale.minReplicas > 0) && (!has(self.pools) || self.pools.all(p, "
                    "!has(p.autoscale) || p.autoscale.minReplicas > 0)))",
                    MIN_ZERO_TEXT,
                    field_path=".idleTimeout",
                ),
            ]
        }
    )

    rootless: StrictBool = Field(
        True,
        description=(
            "Run buildkitd rootless (uid 1000, no process sandbox, seccomp and AppArmor "
            "Unconfined, every capability dropped but SETUID and SETGID, not privileged); "
            "false runs it privileged as root."
        ),
    )
    security_profile: SecurityProfile | None = Field(
        None,
        description=(
            "How each daemon is isolated; unset follows rootless (true: rootless, false: "
            "privileged). rootless (the default): buildkitd as uid 1000 under rootlesskit, "
            "not privileged, seccomp and AppArmor Unconfined, every capability dropped but "
            "SETUID and SETGID (for newuidmap); pick it first. userns: "
            "buildkitd as root in a pod of its own user namespace (hostUsers: false, "
            "privileged inside it only: root in the pod is an unprivileged uid on the node); "
            "pick it where rootless fails (AppArmor or policy blocking newuidmap and nested "
            "user namespaces, GKE Autopilot); needs Kubernetes 1.33+ with a runtime that "
            "supports user namespaces (containerd 2, runc 1.2, Linux 6.3). privileged: "
            "buildkitd as root with privileged: true on the node, the same as rootless: "
            "false; only where the other two cannot run. Every profile needs the privileged "
            "Pod Security level in its namespace (BuildKit needs mounts and nested "
            "namespaces, which baseline and restricted forbid)."
        ),
    )
    image: Annotated[
        str | None,
        validations(
            cel_rule(
                "self == self.trim()",
                "must not start or end with whitespace",
                message_expression='"\'" + self + "\' must not start or end with whitespace"',
            )
        ),
    ] = Field(
        None,
        min_length=1,
        max_length=MAX_IMAGE_LENGTH,
        description=(
            f"buildkitd image; defaults to {DEFAULT_IMAGE_ROOTLESS} (rootless) or "
            f"{DEFAULT_IMAGE_ROOTFUL} (rootful), or to the operator's install-wide default "
            "(status.image shows the image used)."
        ),
    )
    replicas: StrictInt = Field(
        1,
        ge=0,
        le=MAX_DAEMONS,
        description=(
            "Number of buildkitd daemons (ignored when pools are set); 1 when neither "
            "replicas nor autoscale is set."
        ),
        json_schema_extra=no_server_default,
    )
    autoscale: AutoscaleSpec | None = Field(
        None,
        description=(
            "Let the number of daemons follow the build load, between minReplicas and "
            "maxReplicas, instead of a fixed replicas (exclusive with it; with pools, set it "
            "per pool). status.autoscale explains each decision."
        ),
    )
    pools: list[Pool] = Field(
        default_factory=list,
        max_length=MAX_POOLS,
        description=(
            "Per-architecture pools, e.g. [{platform: linux/amd64, replicas: 2}, {platform: "
            "linux/arm64, replicas: 1}]: one set of daemons per platform, each on nodes of "
            "its architecture and building for it natively, with an endpoint per pool "
            "(status.pools). Unset: one pool of spec.replicas daemons on any node."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["platform"],
        },
    )
    idle_timeout: Duration | None = Field(
        None,
        description=(
            "Scale a daemon that ran no build for this long (e.g. 30m) to zero pods; its "
            "cache claim is kept. buildkit-operator connect (or wake) starts it again and "
            "waits until it is ready. A daemon whose idleness cannot be judged is never put "
            "to sleep. Unset: never."
        ),
    )
    node_selector: Labels = Field(
        default_factory=dict, description="Node labels every builder pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_TOLERATIONS,
        description="Tolerations of the builder pods.",
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="Affinity of the builder pods, as in a PodSpec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Topology spread constraints of the builder pods, as in a PodSpec.",
        json_schema_extra={
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    )
    priority_class_name: ObjectName | None = Field(
        None, description="PriorityClass of the builder pods."
    )
    service_account_name: ObjectName | None = Field(
        None,
        description="ServiceAccount of the builder pods (buildkitd itself needs no API access).",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=MAX_PULL_SECRETS,
        description="Secrets used to pull the buildkitd image.",
    )
    pod_labels: Labels = Field(
        default_factory=dict,
        description="Extra labels on the builder pods; the operator's own labels win.",
    )
    pod_annotations: LabelKeyed = Field(
        default_factory=dict, description="Extra annotations on the builder pods."
    )
    resources: ResourceRequirements | None = Field(
        None, description="Compute resources of the buildkitd container."
    )
    buildkitd: BuildkitdSpec = Field(
        default_factory=BuildkitdSpec, description="buildkitd flags and buildkitd.toml settings."
    )
    cache: CacheSpec = Field(default_factory=CacheSpec, description="The build cache.")
    tls: TLSSpec = Field(default_factory=TLSSpec, description="Mutual TLS settings.")
    service: ServiceSpec = Field(
        default_factory=ServiceSpec, description="The Service in front of the daemons."
    )
    drain: DrainSpec = Field(
        default_factory=DrainSpec,
        description="How running builds are kept from being killed by stops and rolls.",
    )
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="buildkitd's Prometheus metrics."
    )
    no_create: StrictBool = Field(
        False,
        description=(
            "Never create, delete or recreate the buildkitd Deployments. One that exists "
            "under the expected name (<name>-0, <name>-1, ...) is adopted and stays yours "
            "(no owner reference: deleting the Builder leaves it): what the API server can "
            "change in place is applied; if anything cannot (its selector), nothing is "
            "changed and phase Drifted lists the differences. Without one, phase Missing "
            "and nothing is created."
        ),
    )
    no_recreate: StrictBool = Field(
        False,
        description=(
            "When live children differ from the spec, change nothing and report phase "
            "Drifted with the differing fields. Certificate renewal is not drift and goes "
            "on."
        ),
    )

    @field_validator("pod_annotations")
    @classmethod
    def _annotation_keys(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key in annotations:
            check_label_key(key)
        return annotations

    @field_validator("service")
    @classmethod
    def _not_exposed_without_tls(cls, service: ServiceSpec, info: ValidationInfo) -> ServiceSpec:
        tls = info.data.get("tls")
        if (
            tls is not None
            and tls.mode == "disabled"
            and service.type != "ClusterIP"
            and not service.allow_without_tls
        ):
            raise ValueError(f"service.type {service.type} {EXPOSED_WITHOUT_TLS_TEXT}")
        return service

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and image != image.strip():
            raise ValueError(f"{image!r} must not start or end with whitespace")
        return image

    @field_validator("security_profile")
    @classmethod
    def _profile_agrees(
        cls, profile: SecurityProfile | None, info: ValidationInfo
    ) -> SecurityProfile | None:
        if profile not in (None, "privileged") and info.data.get("rootless") is False:
            raise ValueError(
                "rootless: false means securityProfile privileged: drop rootless: false, or "
                "set securityProfile: privileged"
            )
        return profile

    @model_validator(mode="after")
    def _pools(self) -> BuilderSpec:
        slugs = [pool_slug(p.platform) for p in self.pools]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"pools: platforms {slugs} must differ in architecture or variant")
        if self.autoscale is not None:
            if "replicas" in self.model_fields_set:
                raise ValueError(f"autoscale: {EXCLUSIVE_TEXT}")
            if self.pools:
                raise ValueError(f"autoscale: {AUTOSCALE_WITH_POOLS_TEXT}")
        scaled = [("autoscale", self.autoscale)] + [
            (f"pools[{i}].autoscale", p.autoscale) for i, p in enumerate(self.pools)
        ]
        for where, autoscale in scaled:
            if self.idle_timeout is None and autoscale and autoscale.min_replicas == 0:
                raise ValueError(f"{where}.minReplicas: {MIN_ZERO_TEXT}")
        total = sum(p.autoscale.max_replicas if p.autoscale else p.replicas for p in self.pools)
        if total > MAX_DAEMONS:
            raise ValueError(f"pools: {total} daemons in all; at most {MAX_DAEMONS}")
        return self

    @property
    def profile(self) -> SecurityProfile:
        """The security profile in effect: securityProfile, else what rootless says."""
        if self.security_profile:
            return self.security_profile
        return "rootless" if self.rootless else "privileged"

    @property
    def rootless_image(self) -> bool:
        """Whether the daemons run the -rootless image (rootlesskit, uid 1000)."""
        return self.profile == "rootless"

    @property
    def effective_image(self) -> str:
        if self.image:
            return self.image
        return DEFAULT_IMAGE_ROOTLESS if self.rootless_image else DEFAULT_IMAGE_ROOTFUL
