"""The Builder API as pydantic models: the single source of field names, defaults and
descriptions. The CRD schema is generated from these models (see ``crd.py``), so a field
documented here is what ``kubectl explain`` prints.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "buildkit.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Builder"
PLURAL = "builders"
SINGULAR = "builder"
SHORT_NAMES = ["bk"]

MIN_CACHE_BYTES = 256 * 1024**2

BUILDKIT_VERSION = "v0.34.2"
DEFAULT_IMAGE_REPOSITORY = "docker.io/moby/buildkit"
DEFAULT_IMAGE_ROOTFUL = f"{DEFAULT_IMAGE_REPOSITORY}:{BUILDKIT_VERSION}"
DEFAULT_IMAGE_ROOTLESS = f"{DEFAULT_IMAGE_REPOSITORY}:{BUILDKIT_VERSION}-rootless"
DEFAULT_CACHE_SIZE = "20Gi"

# Flags the operator owns on the buildkitd command line: letting users pass them would
# silently break the listener, TLS or cache layout the rest of the spec describes.
RESERVED_BUILDKITD_FLAGS = (
    "--addr",
    "--config",
    "--root",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--oci-worker-no-process-sandbox",
)

# The pattern Kubernetes itself publishes for resource.Quantity (as controller-gen emits it).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SAN_DNS_RE = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$"
)
_STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
_PLATFORM_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$")


def _quantity(value: Any) -> str:
    """Accept what Kubernetes accepts for a quantity (a string or a number) as a string."""
    if isinstance(value, bool):
        raise ValueError("must be a quantity such as 20Gi, not a boolean")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a quantity such as 20Gi")
    if not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a quantity (examples: 20Gi, 500Mi, 1.5G, 2)")
    return value


def _positive_quantity(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return value


def _non_negative_quantity(value: str) -> str:
    if parse_quantity(value) < 0:
        raise ValueError(f"{value!r} must not be negative")
    return value


def quantity_bytes(value: str) -> int:
    """Bytes in a quantity, rounded down (what a volume of that size can hold)."""
    return int(parse_quantity(value))


_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}

Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(_QUANTITY_SCHEMA),
]
NonNegativeQuantity = Annotated[
    str,
    BeforeValidator(_quantity),
    AfterValidator(_non_negative_quantity),
    WithJsonSchema(_QUANTITY_SCHEMA),
]
PositiveQuantity = Annotated[
    str,
    BeforeValidator(_quantity),
    AfterValidator(_positive_quantity),
    WithJsonSchema(_QUANTITY_SCHEMA),
]


def _check_label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        raise ValueError(
            f"label key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return key


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
            raise ValueError(
                f"label value {value!r} for {key!r}: at most 63 alphanumerics, '-', '_' or '.', "
                "starting and ending with an alphanumeric"
            )
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]


def _dns_subdomain(name: str, what: str) -> str:
    """The rule for object names: a DNS subdomain of at most 253 characters."""
    if len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
        raise ValueError(
            f"{name!r} is not a valid {what}: at most 253 lowercase alphanumerics, "
            "'-' or '.', starting and ending with an alphanumeric"
        )
    return name


def _check_object_name(name: str) -> str:
    """Names of objects the pods refer to (Secrets, ServiceAccounts, classes): the API
    server rejects a pod or claim naming anything that is not a DNS subdomain."""
    return _dns_subdomain(name, "object name")


ObjectName = Annotated[str, AfterValidator(_check_object_name)]


class _Model(BaseModel):
    """Camel-case wire names, snake-case Python names, and no unknown fields: a typo in a
    spec is an error a person sees, not a setting silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=False,
    )


class Toleration(_Model):
    """A toleration, as in a PodSpec."""

    key: str | None = Field(None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(None, description="Taint value the toleration matches.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: StrictInt | None = Field(
        None, description="How long a NoExecute taint is tolerated, in seconds."
    )

    @model_validator(mode="after")
    def _as_kubernetes_validates(self) -> Toleration:
        # The rules the API server applies to a pod's tolerations.
        if self.key:
            _check_label_key(self.key)
        elif self.operator != "Exists":
            raise ValueError("operator must be Exists when key is empty (matches every taint)")
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.operator != "Exists" and self.value:
            _check_labels({self.key or "": self.value})
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only allowed with effect NoExecute")
        return self


class LocalObjectReference(_Model):
    """A reference to an object in the Builder's namespace."""

    name: ObjectName = Field(description="Name of the referenced object.")


class ResourceRequirements(_Model):
    """Compute resources for the buildkitd container, as in a PodSpec."""

    limits: dict[str, NonNegativeQuantity] = Field(
        default_factory=dict, description="Maximum resources, e.g. {cpu: '4', memory: 8Gi}."
    )
    requests: dict[str, NonNegativeQuantity] = Field(
        default_factory=dict, description="Requested resources, e.g. {cpu: '1', memory: 2Gi}."
    )

    @field_validator("limits", "requests")
    @classmethod
    def _resource_names(cls, resources: dict[str, str]) -> dict[str, str]:
        for name in resources:
            if "/" in name:
                _check_label_key(name)
            elif name not in _STANDARD_RESOURCES and not name.startswith("hugepages-"):
                raise ValueError(
                    f"{name!r} is not a resource: use cpu, memory, ephemeral-storage, "
                    "hugepages-<size> or a domain-prefixed name such as nvidia.com/gpu"
                )
        return resources

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, request in self.requests.items():
            limit = self.limits.get(name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"requests.{name} ({request}) must not exceed limits.{name} ({limit})"
                )
        return self


class BuildkitdSpec(_Model):
    """Settings of the buildkitd daemon and its buildkitd.toml."""

    args: list[str] = Field(
        default_factory=list,
        description="Extra buildkitd flags, appended after the ones the operator sets.",
    )
    max_parallelism: StrictInt | None = Field(
        None, ge=1, description="Maximum build steps run at once ([worker.oci] max-parallelism)."
    )
    registry_mirrors: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Mirrors per registry, e.g. {docker.io: [mirror.internal:5000]}.",
    )
    insecure_registries: list[str] = Field(
        default_factory=list,
        description="Registries reached over plain HTTP or with unverified TLS.",
    )
    platforms: list[str] = Field(
        default_factory=list,
        description="Platforms the worker advertises, e.g. [linux/amd64, linux/arm64].",
    )
    config: str | None = Field(
        None,
        description=(
            "Raw buildkitd.toml merged under the generated one: the fields above win "
            "where both set the same key."
        ),
    )

    @field_validator("args")
    @classmethod
    def _no_reserved_flags(cls, args: list[str]) -> list[str]:
        for arg in args:
            # buildkitd's flag parser takes -flag and --flag alike.
            flag = arg.split("=", 1)[0]
            if flag.startswith("-"):
                flag = "--" + flag.lstrip("-")
            if flag in RESERVED_BUILDKITD_FLAGS:
                raise ValueError(
                    f"{flag} is set by the operator from the spec and cannot be passed in args"
                )
        return args

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, platforms: list[str]) -> list[str]:
        for platform in platforms:
            if not _PLATFORM_RE.match(platform):
                raise ValueError(f"{platform!r} is not a platform such as linux/amd64")
        return platforms

    @field_validator("config")
    @classmethod
    def _config_is_toml(cls, config: str | None) -> str | None:
        if config is not None:
            try:
                tomllib.loads(config)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"not valid TOML: {err}") from None
        return config


class CacheSpec(_Model):
    """Where buildkitd keeps its build cache."""

    type: Literal["persistent", "ephemeral"] = Field(
        "persistent",
        description=(
            "persistent: a PersistentVolumeClaim per daemon, kept across restarts; "
            "ephemeral: an emptyDir, lost when the pod goes."
        ),
    )
    # No schema default: an unset size takes the install-wide default (``--default-cache-size``)
    # when the operator renders, which a size the API server had filled in would hide.
    size: PositiveQuantity | None = Field(
        None,
        description=(
            f"Cache volume size; {DEFAULT_CACHE_SIZE} unless the operator is installed with "
            "another default (status.cache shows the size used). BuildKit's garbage "
            "collection limits are derived from it, so the cache never fills its volume."
        ),
    )
    storage_class_name: ObjectName | None = Field(
        None,
        description=(
            "StorageClass of the cache PVCs; when unset, the operator's install-wide default "
            "or else the cluster default."
        ),
    )
    retain: StrictBool = Field(True, description="Keep the cache PVCs when the Builder is deleted.")

    @property
    def effective_size(self) -> str:
        return self.size or DEFAULT_CACHE_SIZE

    @field_validator("size")
    @classmethod
    def _big_enough(cls, size: str | None) -> str | None:
        # Below this the derived GC limits leave BuildKit no room to work (and a value
        # such as "100m", a tenth of a byte, is almost always a typo for "100Mi").
        if size is not None and quantity_bytes(size) < MIN_CACHE_BYTES:
            raise ValueError(f"{size!r} is too small: the cache needs at least 256Mi")
        return size


class TLSSpec(_Model):
    """Mutual TLS between clients and buildkitd."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.mode) || self.mode != 'secret' || "
                        "(has(self.secretName) && self.secretName != '')"
                    ),
                    "message": "tls.secretName is required when tls.mode is secret",
                    "fieldPath": ".secretName",
                },
            ]
        }
    )

    mode: Literal["auto", "secret", "disabled"] = Field(
        "auto",
        description=(
            "auto: the operator runs a CA per Builder and issues server and client "
            "certificates; secret: tls.secretName (keys ca.pem, cert.pem, key.pem) is the "
            "server certificate; disabled: plain TCP (not recommended)."
        ),
    )
    secret_name: str | None = Field(
        None, description="Secret holding the server certificate when tls.mode is secret."
    )
    extra_sans: list[str] = Field(
        default_factory=list,
        alias="extraSANs",
        description="Extra DNS names or IP addresses for the server certificate.",
    )

    @field_validator("extra_sans")
    @classmethod
    def _sans(cls, sans: list[str]) -> list[str]:
        for san in sans:
            try:
                address = ipaddress.ip_address(san)
            except ValueError:
                pass
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
                    raise ValueError(f"{san!r}: an IP address in a certificate cannot carry a zone")
                continue
            labels = san.removeprefix("*.").split(".")
            if (
                len(san) > 253
                or not _SAN_DNS_RE.match(san)
                or any(len(label) > 63 for label in labels)
            ):
                raise ValueError(
                    f"{san!r} is neither an IP address nor a DNS name (a leading '*.' is allowed)"
                )
        return sans

    @model_validator(mode="before")
    @classmethod
    def _secret_name_present(cls, data: Any) -> Any:
        # With mode secret, an absent secretName is checked as an empty one, so that the
        # problem is reported at spec.tls.secretName rather than at spec.tls.
        if (
            isinstance(data, Mapping)
            and data.get("mode") == "secret"
            and "secretName" not in data
            and "secret_name" not in data
        ):
            return {**data, "secretName": ""}
        return data

    @field_validator("secret_name")
    @classmethod
    def _secret_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if not name:
            if info.data.get("mode") == "secret":
                raise ValueError("required when tls.mode is secret")
            return name
        return _check_object_name(name)


class ServiceSpec(_Model):
    """The Service in front of the daemons."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Service type; buildkitd is served on port 1234."
    )


class BuilderSpec(_Model):
    """Desired state of a Builder: a set of buildkitd daemons reachable over mutual TLS."""

    rootless: StrictBool = Field(
        True,
        description=(
            "Run buildkitd rootless (uid 1000, no process sandbox, seccomp and AppArmor "
            "Unconfined, not privileged); false runs it privileged as root."
        ),
    )
    image: str | None = Field(
        None,
        min_length=1,
        description=(
            f"buildkitd image; defaults to {DEFAULT_IMAGE_ROOTLESS} (rootless) or "
            f"{DEFAULT_IMAGE_ROOTFUL} (rootful), or to the operator's install-wide default "
            "(status.image shows the image used)."
        ),
    )
    replicas: StrictInt = Field(1, ge=0, le=64, description="Number of buildkitd daemons.")
    node_selector: Labels = Field(
        default_factory=dict, description="Node labels every builder pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the builder pods."
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
        default_factory=list, description="Secrets used to pull the buildkitd image."
    )
    pod_labels: Labels = Field(
        default_factory=dict,
        description="Extra labels on the builder pods; the operator's own labels win.",
    )
    pod_annotations: dict[str, str] = Field(
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
            _check_label_key(key)
        return annotations

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and image != image.strip():
            raise ValueError(f"{image!r} must not start or end with whitespace")
        return image

    @property
    def effective_image(self) -> str:
        if self.image:
            return self.image
        return DEFAULT_IMAGE_ROOTLESS if self.rootless else DEFAULT_IMAGE_ROOTFUL


Phase = Literal["Pending", "Ready", "Degraded", "Drifted", "Missing", "Invalid"]


class Condition(_Model):
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


class CacheStatus(_Model):
    """The cache the daemons got: the spec's, or the operator's install-wide defaults."""

    size: str | None = Field(None, description="Size of each daemon's cache volume.")
    storage_class_name: str | None = Field(
        None, description="StorageClass of the cache PVCs; absent for the cluster default."
    )


class BuilderStatus(_Model):
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
    drifted_fields: list[str] = Field(
        default_factory=list,
        description=(
            "Fields of live children that differ from the spec and were left as they are "
            "(noRecreate, an adopted workload, a cache claim that cannot change in place)."
        ),
    )
    image: str | None = Field(
        None, description="The buildkitd image the daemons run (the spec's or the default)."
    )
    cache: CacheStatus | None = Field(
        None, description="The cache the daemons got (the spec's or the defaults)."
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
            "The last valid spec, which the children were made from: while a later edit is "
            "invalid, the operator keeps repairing and renewing what runs from this."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


def _check_name(name: str) -> str:
    return _dns_subdomain(name, "name")


def _check_namespace(namespace: str) -> str:
    if len(namespace) > 63 or not _DNS_LABEL_RE.match(namespace):
        raise ValueError(f"{namespace!r} is not a valid namespace name")
    return namespace


class Builder(BaseModel):
    """A Builder as the operator sees it: identity plus a validated spec."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, AfterValidator(_check_name)]
    namespace: Annotated[str, AfterValidator(_check_namespace)] = "default"
    uid: str | None = None
    generation: int | None = None
    spec: BuilderSpec

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any], *, namespace: str = "default") -> Builder:
        """Validate a Builder object as found in YAML or returned by the API server."""
        if not isinstance(obj, Mapping):
            raise InvalidBuilder(["(document): must be a mapping"])
        if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
            raise InvalidBuilder(
                [
                    f"apiVersion/kind: expected {API_VERSION} {KIND}, "
                    f"got {obj.get('apiVersion')} {obj.get('kind')}"
                ]
            )
        meta = obj.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise InvalidBuilder(["metadata: must be a mapping"])
        spec = obj.get("spec")
        try:
            return cls(
                name=meta.get("name", ""),
                namespace=meta.get("namespace") or namespace,
                uid=meta.get("uid"),
                generation=meta.get("generation"),
                spec=BuilderSpec.model_validate({} if spec is None else spec),
            )
        except ValidationError as err:
            raise InvalidBuilder(describe_errors(err)) from None


class InvalidBuilder(ValueError):
    """A Builder the operator cannot act on; ``problems`` name the fields."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


_LOCATION_ROOTS = {"name": "metadata.name", "namespace": "metadata.namespace"}


def describe_errors(err: ValidationError) -> list[str]:
    """Turn pydantic errors into 'spec.cache.size: <message>' lines a person can act on."""
    problems = []
    for error in err.errors(include_url=False):
        loc: list[str | int] = list(error["loc"])
        if err.title == BuilderSpec.__name__:
            loc = ["spec", *loc]
        elif loc and isinstance(loc[0], str) and loc[0] in _LOCATION_ROOTS:
            loc = [_LOCATION_ROOTS[loc[0]], *loc[1:]]
        # Annotated validators report their own function names; drop them.
        loc = [part for part in loc if not str(part).startswith("function-")]
        path = ""
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{path or 'spec'}: {message}")
    return problems
