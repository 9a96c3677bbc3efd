"""The Builder API as pydantic models: the single source of field names, defaults and
descriptions. The CRD schema is generated from these models (see ``crd.py``), so a field
documented here is what ``kubectl explain`` prints.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "buildkit.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Builder"
PLURAL = "builders"
SINGULAR = "builder"
SHORT_NAMES = ["bk"]

MIN_CACHE = "256Mi"
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
    "--debugaddr",
)

# A reserved flag in any form buildkitd's parser reads: -flag, --flag, --flag=value.
assert all(re.fullmatch(r"--[a-z-]+", flag) for flag in RESERVED_BUILDKITD_FLAGS)
_RESERVED_FLAG_PATTERN = (
    "^-+(" + "|".join(flag.removeprefix("--") for flag in RESERVED_BUILDKITD_FLAGS) + ")(=|$)"
)

# The pattern Kubernetes itself publishes for resource.Quantity (as controller-gen emits it).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)

# The syntax rules below are written once and used twice: compiled here for the operator's
# own check, and embedded in the CRD's CEL rules (RE2 reads them the same way) so that the
# API server refuses the same input at `kubectl apply`. Only [.] is used for a literal dot,
# so that no pattern needs escaping inside a CEL string literal.
_DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
_LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A DNS name, optionally a wildcard, each label at most 63 characters.
_SAN_DNS_PATTERN = (
    r"^([*][.])?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"([.][A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_PLATFORM_PATTERN = r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$"


def _ipv6_pattern() -> str:
    """An IPv6 address as Python's ipaddress reads one (no zone): eight groups, or fewer
    around one '::', the last two groups optionally written as an IPv4 address."""
    group = "[0-9A-Fa-f]{1,4}"
    octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    ipv4 = f"{octet}([.]{octet}){{3}}"
    forms = [f"({group}:){{7}}{group}", f"({group}:){{6}}{ipv4}"]
    # '::' stands for at least one group of zeros: `before` groups, then '::', then the rest.
    forms.append(f"::({group}(:{group}){{0,6}})?")
    forms.append(f"::({group}:){{0,5}}{ipv4}")
    for before in range(1, 8):
        head = f"({group}:){{{before}}}:"
        if before <= 6:
            forms.append(f"{head}({group}(:{group}){{0,{6 - before}}})?")
        else:
            forms.append(head)
        if before <= 5:
            forms.append(f"{head}({group}:){{0,{5 - before}}}{ipv4}")
    return "^(" + "|".join(forms) + ")$"


_IPV6_PATTERN = _ipv6_pattern()

_DNS_SUBDOMAIN_RE = re.compile(_DNS_SUBDOMAIN_PATTERN)
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME_RE = re.compile(_LABEL_NAME_PATTERN)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_PATTERN)
_SAN_DNS_RE = re.compile(_SAN_DNS_PATTERN)
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_PLATFORM_RE = re.compile(_PLATFORM_PATTERN)

# Bounds the CRD declares so that the API server can bound the cost of its CEL rules (it
# refuses a CRD whose rules it cannot prove cheap). The model enforces the same bounds, so
# the operator and the API server accept the same Builders. Each is far above real use.
MAX_QUANTITY_LENGTH = 64  # a quantity written as a string
MAX_LABELS = 64  # entries in nodeSelector, podLabels, podAnnotations
MAX_LABEL_KEY_LENGTH = 253 + 1 + 63  # DNS-subdomain prefix, '/', name
MAX_LABEL_VALUE_LENGTH = 63
MAX_OBJECT_NAME_LENGTH = 253
MAX_IMAGE_LENGTH = 1024
MAX_ARGS = 128
MAX_ARG_LENGTH = 4096
MAX_PLATFORMS = 32
MAX_PLATFORM_LENGTH = 64
MAX_SANS = 64
MAX_SAN_LENGTH = 253
MAX_TOLERATIONS = 64
MAX_RESOURCES = 32
MAX_PULL_SECRETS = 32

LABEL_VALUE_TEXT = (
    "at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
)
LABEL_TEXT = "1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
OBJECT_NAME_TEXT = (
    "at most 253 lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric"
)
NOT_A_RESOURCE_TEXT = (
    "is not a resource: use cpu, memory, ephemeral-storage, hugepages-<size> or a "
    "domain-prefixed name such as nvidia.com/gpu"
)


# --- CEL rules of the CRD -------------------------------------------------------------------
# Libraries used besides CEL's standard ones: regex (matches), the strings extension as of its
# first version (lastIndexOf, substring, split, trim) and Kubernetes' quantity library
# (isQuantity, quantity, compareTo). The quantity library came with Kubernetes 1.28, and an
# API server offers a library to new expressions one release after it came (so that a
# rollback keeps understanding stored rules): a CRD with these rules needs 1.29 or newer.


def _cel_string(text: str) -> str:
    """A CEL string literal (double-quoted: messages and patterns contain single quotes)."""
    assert '"' not in text and "\\" not in text, text
    return f'"{text}"'


def _cel_matches(value: str, pattern: str) -> str:
    return f"{value}.matches({_cel_string(pattern)})"


def _cel_label_key_ok(key: str) -> str:
    """CEL for _check_label_key: an optional DNS-subdomain prefix and '/', then a name."""
    name = f"{key}.substring({key}.lastIndexOf('/') + 1)"
    prefix = f"{key}.substring(0, {key}.lastIndexOf('/'))"
    return (
        f"(!{key}.contains('/') || ({key}.lastIndexOf('/') <= 253 && "
        f"{_cel_matches(prefix, _DNS_SUBDOMAIN_PATTERN)})) && "
        f"size({name}) <= 63 && {_cel_matches(name, _LABEL_NAME_PATTERN)}"
    )


def _cel_label_key_message(key: str) -> str:
    """CEL for the message _check_label_key gives about ``key``."""
    prefix = f"{key}.substring(0, {key}.lastIndexOf('/'))"
    return (
        f'"label key \'" + {key} + "\': " + '
        f"({key}.contains('/') && !({key}.lastIndexOf('/') <= 253 && "
        f"{_cel_matches(prefix, _DNS_SUBDOMAIN_PATTERN)}) ? "
        f"'prefix must be a DNS subdomain' : "
        f"{_cel_string('name must be ' + LABEL_TEXT)})"
    )


def _cel_label_value_ok(value: str) -> str:
    return f"size({value}) <= 63 && {_cel_matches(value, _LABEL_VALUE_PATTERN)}"


def _rule(
    rule: str,
    message: str,
    *,
    message_expression: str | None = None,
    field_path: str | None = None,
) -> dict[str, Any]:
    """One x-kubernetes-validations entry: ``message`` is what the API server says when
    ``message_expression`` cannot be evaluated."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    return out


@dataclass(frozen=True)
class CRDSchema:
    """Keywords added to the CRD's schema of a type, beside what pydantic generates.

    For checks that the model's validators already make (with their own messages): this
    repeats them for the API server, and tests/integration/test_admission.py proves the two
    refuse the same Builders.
    """

    # Not hashed (a dict is not hashable): typing hashes the Annotated types that carry it.
    extra: Mapping[str, Any] = field(hash=False)

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        return {**schema, **copy.deepcopy(dict(self.extra))}


def _validations(*rules: dict[str, Any], **extra: Any) -> CRDSchema:
    return CRDSchema({**extra, "x-kubernetes-validations": list(rules)})


def _quantity(value: Any) -> str:
    """Accept what Kubernetes accepts for a quantity (a string or a number) as a string."""
    if isinstance(value, bool):
        raise ValueError("must be a quantity such as 20Gi, not a boolean")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a quantity such as 20Gi")
    if len(value) > MAX_QUANTITY_LENGTH or not _QUANTITY_RE.match(value):
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
    "maxLength": MAX_QUANTITY_LENGTH,
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
    _validations(
        _rule(
            "type(self) == int ? self >= 0 : "
            "(!isQuantity(self) || quantity(self).compareTo(quantity('0')) >= 0)",
            "must not be negative",
            message_expression='"\'" + string(self) + "\' must not be negative"',
        )
    ),
]
PositiveQuantity = Annotated[
    str,
    BeforeValidator(_quantity),
    AfterValidator(_positive_quantity),
    WithJsonSchema(_QUANTITY_SCHEMA),
]


def _check_label_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        raise ValueError(f"label key {key!r}: name must be {LABEL_TEXT}")
    return key


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
            raise ValueError(f"label value {value!r} for {key!r}: {LABEL_VALUE_TEXT}")
    return labels


def _label_key_rule() -> dict[str, Any]:
    return _rule(
        f"self.all(k, {_cel_label_key_ok('k')})",
        "keys must be label keys: an optional DNS-subdomain prefix and '/', then a name of "
        + LABEL_TEXT,
        message_expression=(
            f"self.filter(k, !({_cel_label_key_ok('k')})).map(k, {_cel_label_key_message('k')})[0]"
        ),
    )


def _label_value_rule() -> dict[str, Any]:
    return _rule(
        f"self.all(k, {_cel_label_value_ok('self[k]')})",
        "values must be label values: empty or " + LABEL_TEXT,
        message_expression=(
            f"self.filter(k, !({_cel_label_value_ok('self[k]')}))"
            '.map(k, "label value \'" + self[k] + "\' for \'" + k + '
            + _cel_string("': " + LABEL_VALUE_TEXT)
            + ")[0]"
        ),
    )


Labels = Annotated[
    dict[str, Annotated[str, CRDSchema({"maxLength": MAX_LABEL_VALUE_LENGTH})]],
    Field(max_length=MAX_LABELS),
    AfterValidator(_check_labels),
    _validations(_label_key_rule(), _label_value_rule()),
]
LabelKeyed = Annotated[
    dict[str, str],
    Field(max_length=MAX_LABELS),
    _validations(_label_key_rule()),
]


def _dns_subdomain(name: str, what: str) -> str:
    """The rule for object names: a DNS subdomain of at most 253 characters."""
    if len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
        raise ValueError(f"{name!r} is not a valid {what}: {OBJECT_NAME_TEXT}")
    return name


def _check_object_name(name: str) -> str:
    """Names of objects the pods refer to (Secrets, ServiceAccounts, classes): the API
    server rejects a pod or claim naming anything that is not a DNS subdomain."""
    return _dns_subdomain(name, "object name")


def _object_name_rule(allow_empty: bool = False) -> dict[str, Any]:
    ok = _cel_matches("self", _DNS_SUBDOMAIN_PATTERN)
    return _rule(
        f"self == '' || {ok}" if allow_empty else ok,
        "must be a valid object name: " + OBJECT_NAME_TEXT,
        message_expression=(
            '"\'" + self + ' + _cel_string("' is not a valid object name: " + OBJECT_NAME_TEXT)
        ),
    )


ObjectName = Annotated[
    str,
    AfterValidator(_check_object_name),
    _validations(_object_name_rule(), maxLength=MAX_OBJECT_NAME_LENGTH),
]


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

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "(has(self.key) && self.key != '') || "
                    "(has(self.operator) && self.operator == 'Exists')",
                    "operator must be Exists when key is empty (matches every taint)",
                    field_path=".operator",
                ),
                _rule(
                    "!(has(self.operator) && self.operator == 'Exists' && "
                    "has(self.value) && self.value != '')",
                    "value must be empty when operator is Exists",
                    field_path=".value",
                ),
                _rule(
                    "!has(self.tolerationSeconds) || "
                    "(has(self.effect) && self.effect == 'NoExecute')",
                    "tolerationSeconds is only allowed with effect NoExecute",
                    field_path=".tolerationSeconds",
                ),
            ]
        }
    )

    key: Annotated[
        str | None,
        _validations(
            _rule(
                f"self == '' || ({_cel_label_key_ok('self')})",
                "must be a label key: an optional DNS-subdomain prefix and '/', then a name of "
                + LABEL_TEXT,
                message_expression=_cel_label_key_message("self"),
            ),
            maxLength=MAX_LABEL_KEY_LENGTH,
        ),
    ] = Field(None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (default Equal)."
    )
    value: Annotated[
        str | None,
        _validations(
            _rule(
                _cel_label_value_ok("self"),
                "must be a label value: empty or " + LABEL_TEXT,
                message_expression=(
                    '"label value \'" + self + ' + _cel_string("': " + LABEL_VALUE_TEXT)
                ),
            ),
            maxLength=MAX_LABEL_VALUE_LENGTH,
        ),
    ] = Field(None, description="Taint value the toleration matches.")
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


def _resource_name_ok(name: str) -> str:
    standard = ", ".join(f"'{r}'" for r in _STANDARD_RESOURCES)
    return (
        f"{name} in [{standard}] || {name}.startsWith('hugepages-') || "
        f"({name}.contains('/') && {_cel_label_key_ok(name)})"
    )


def _request_exceeds_limit(name: str) -> str:
    request, limit = f"string(self.requests[{name}])", f"string(self.limits[{name}])"
    return (
        f"{name} in self.limits && isQuantity({request}) && isQuantity({limit}) && "
        f"quantity({request}).compareTo(quantity({limit})) > 0"
    )


ResourceList = Annotated[
    dict[str, NonNegativeQuantity],
    Field(max_length=MAX_RESOURCES),
    _validations(
        _rule(
            f"self.all(k, {_resource_name_ok('k')})",
            "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or a "
            "domain-prefixed name such as nvidia.com/gpu",
            message_expression=(
                f"self.filter(k, !({_resource_name_ok('k')}))"
                '.map(k, "\'" + k + ' + _cel_string("' " + NOT_A_RESOURCE_TEXT) + ")[0]"
            ),
        )
    ),
]


class ResourceRequirements(_Model):
    """Compute resources for the buildkitd container, as in a PodSpec."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.requests) || !has(self.limits) || "
                    f"!self.requests.exists(k, {_request_exceeds_limit('k')})",
                    "requests must not exceed limits",
                    message_expression=(
                        f"self.requests.filter(k, {_request_exceeds_limit('k')})"
                        ".map(k, 'requests.' + k + ' (' + string(self.requests[k]) + "
                        "') must not exceed limits.' + k + ' (' + string(self.limits[k]) + ')')[0]"
                    ),
                )
            ]
        }
    )

    limits: ResourceList = Field(
        default_factory=dict, description="Maximum resources, e.g. {cpu: '4', memory: 8Gi}."
    )
    requests: ResourceList = Field(
        default_factory=dict, description="Requested resources, e.g. {cpu: '1', memory: 2Gi}."
    )

    @field_validator("limits", "requests")
    @classmethod
    def _resource_names(cls, resources: dict[str, str]) -> dict[str, str]:
        for name in resources:
            if "/" in name:
                _check_label_key(name)
            elif name not in _STANDARD_RESOURCES and not name.startswith("hugepages-"):
                raise ValueError(f"{name!r} {NOT_A_RESOURCE_TEXT}")
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

    args: Annotated[
        list[
            Annotated[
                str,
                _validations(
                    _rule(
                        f"!{_cel_matches('self', _RESERVED_FLAG_PATTERN)}",
                        "flags the operator sets from the spec ("
                        + ", ".join(RESERVED_BUILDKITD_FLAGS)
                        + ") cannot be passed in args",
                        message_expression=(
                            "'--' + self.split('=')[0].substring(self.startsWith('--') ? 2 : 1)"
                            " + ' is set by the operator from the spec and cannot be passed in "
                            "args'"
                        ),
                    ),
                    maxLength=MAX_ARG_LENGTH,
                ),
            ]
        ],
        Field(max_length=MAX_ARGS),
    ] = Field(
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
    platforms: Annotated[
        list[
            Annotated[
                str,
                _validations(
                    _rule(
                        _cel_matches("self", _PLATFORM_PATTERN),
                        "must be a platform such as linux/amd64",
                        message_expression=(
                            '"\'" + self + "\' is not a platform such as linux/amd64"'
                        ),
                    ),
                    maxLength=MAX_PLATFORM_LENGTH,
                ),
            ]
        ],
        Field(max_length=MAX_PLATFORMS),
    ] = Field(
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
            if len(arg) > MAX_ARG_LENGTH:
                raise ValueError(f"an argument is longer than {MAX_ARG_LENGTH} characters")
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
            if len(platform) > MAX_PLATFORM_LENGTH or not _PLATFORM_RE.match(platform):
                raise ValueError(f"{platform!r} is not a platform such as linux/amd64")
        return platforms

    @field_validator("config")
    @classmethod
    def _config_is_toml(cls, config: str | None) -> str | None:
        if config is not None:
            try:
                document = tomllib.loads(config)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"not valid TOML: {err}") from None
            except RecursionError:  # the parser recurses per level of nesting
                raise ValueError(
                    f"nested deeper than {MAX_CONFIG_DEPTH} levels of tables and arrays"
                ) from None
            if _depth(document) > MAX_CONFIG_DEPTH:
                # buildkitd.toml is a few levels deep; rendering a deeper one would recurse
                # as deep again.
                raise ValueError(
                    f"nested deeper than {MAX_CONFIG_DEPTH} levels of tables and arrays"
                )
        return config


MAX_CONFIG_DEPTH = 32


def _depth(value: Any) -> int:
    """Levels of tables and arrays in a parsed TOML document, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


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
            f"Cache volume size, at least 256Mi; {DEFAULT_CACHE_SIZE} unless the operator is "
            "installed with another default (status.cache shows the size used). BuildKit's "
            "garbage collection limits are derived from it, so the cache never fills its volume."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    f"type(self) == int ? self >= {MIN_CACHE_BYTES} : (!isQuantity(self) || "
                    f"quantity(self).compareTo(quantity('{MIN_CACHE}')) >= 0)",
                    f"the cache needs at least {MIN_CACHE}",
                    message_expression=(
                        f'"\'" + string(self) + "\' is too small: the cache needs at least '
                        f'{MIN_CACHE}"'
                    ),
                )
            ]
        },
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
            raise ValueError(f"{size!r} is too small: the cache needs at least {MIN_CACHE}")
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
    secret_name: Annotated[
        str | None,
        _validations(_object_name_rule(allow_empty=True), maxLength=MAX_OBJECT_NAME_LENGTH),
    ] = Field(None, description="Secret holding the server certificate when tls.mode is secret.")
    extra_sans: Annotated[
        list[
            Annotated[
                str,
                _validations(
                    _rule(
                        f"{_cel_matches('self', _SAN_DNS_PATTERN)} || "
                        f"{_cel_matches('self', _IPV6_PATTERN)}",
                        "must be an IP address or a DNS name (a leading '*.' is allowed)",
                        message_expression=(
                            "self.contains('%') && "
                            + _cel_matches("self.split('%')[0]", _IPV6_PATTERN)
                            + " ? "
                            '"\'" + self + "\': an IP address in a certificate cannot carry a '
                            'zone" : "\'" + self + "\' is neither an IP address nor a DNS name '
                            "(a leading '*.' is allowed)\""
                        ),
                    ),
                    maxLength=MAX_SAN_LENGTH,
                ),
            ]
        ],
        Field(max_length=MAX_SANS),
    ] = Field(
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


SecurityProfile = Literal["rootless", "userns", "privileged"]
MAX_POOLS = 8
MAX_DAEMONS = 64
_DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_DURATION_RE = re.compile(_DURATION_PATTERN)


def duration_seconds(text: str) -> int:
    """Seconds in a duration written as Kubernetes users write one: 30m, 1h30m, 90s."""
    match = _DURATION_RE.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h or 1h30m")
    hours, minutes, seconds = (int((g or "0")[:-1] or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _check_duration(text: str) -> str:
    if duration_seconds(text) <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return text


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    _validations(
        _rule(
            f"self != '' && {_cel_matches('self', _DURATION_PATTERN)} && self.matches('[1-9]')",
            "must be a duration longer than zero such as 30m, 1h or 1h30m",
            message_expression=(
                '"\'" + self + "\' is not a duration longer than zero such as 30m, 1h or 1h30m"'
            ),
        ),
        maxLength=32,
    ),
]


class Pool(_Model):
    """A set of daemons of one platform, scheduled on nodes of its architecture."""

    platform: Annotated[
        str,
        _validations(
            _rule(
                _cel_matches("self", _PLATFORM_PATTERN),
                "must be a platform such as linux/amd64",
                message_expression='"\'" + self + "\' is not a platform such as linux/amd64"',
            ),
            maxLength=MAX_PLATFORM_LENGTH,
        ),
    ] = Field(
        description=(
            "Platform of the pool's daemons, e.g. linux/arm64: their pods run on nodes labelled "
            "kubernetes.io/os and kubernetes.io/arch to match, and buildkitd builds for it "
            "natively (unless buildkitd.platforms says otherwise)."
        )
    )
    replicas: StrictInt = Field(1, ge=0, le=MAX_DAEMONS, description="Daemons in this pool.")
    node_selector: Labels = Field(
        default_factory=dict,
        description="More node labels this pool's pods must match, besides spec.nodeSelector.",
    )
    resources: ResourceRequirements | None = Field(
        None, description="Compute resources of this pool's daemons, instead of spec.resources."
    )

    @field_validator("platform")
    @classmethod
    def _platform(cls, platform: str) -> str:
        if len(platform) > MAX_PLATFORM_LENGTH or not _PLATFORM_RE.match(platform):
            raise ValueError(f"{platform!r} is not a platform such as linux/amd64")
        return platform

    @property
    def os(self) -> str:
        return self.platform.split("/")[0]

    @property
    def arch(self) -> str:
        return self.platform.split("/")[1]


class ServiceSpec(_Model):
    """The Service in front of the daemons."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Service type; buildkitd is served on port 1234."
    )
    allow_without_tls: StrictBool = Field(
        False,
        alias="allowWithoutTLS",
        description=(
            "Allow service.type NodePort or LoadBalancer with tls.mode disabled, which is "
            "otherwise refused: it exposes an unauthenticated builder beyond the cluster "
            "(anyone who reaches the port can run builds on it, read its cache and use its "
            "network access). Set it only where the network itself admits nobody else, such "
            "as an isolated lab network or a load balancer restricted to trusted sources."
        ),
    )


# A hold or a drain never outlasts a day: certificates are renewed 30 days before they
# expire, so no wait for idle can let one run out.
MAX_DRAIN_SECONDS = 86400
DEFAULT_GRACE_SECONDS = 600
DEFAULT_MAX_WAIT_SECONDS = 3600


class DrainSpec(_Model):
    """How the operator keeps from killing builds: buildkitd cancels every build it runs
    when it is stopped."""

    grace_period_seconds: StrictInt = Field(
        DEFAULT_GRACE_SECONDS,
        ge=0,
        le=MAX_DRAIN_SECONDS,
        description=(
            "How long a stopping daemon (a roll, a recreate, a scale-down, a deleted pod, a "
            "node drain) may finish the builds it runs before it is stopped: its preStop hook "
            "waits until no build is in flight, at most this long."
        ),
    )
    max_wait_seconds: StrictInt = Field(
        DEFAULT_MAX_WAIT_SECONDS,
        ge=0,
        le=MAX_DRAIN_SECONDS,
        description=(
            "How long a roll, recreate or removal the operator wants (config, certificate, "
            "image, security settings, replicas) waits for a building daemon to go idle "
            "before it goes ahead anyway (the stopping daemon then still drains for "
            "gracePeriodSeconds). Daemons are changed one at a time."
        ),
    )


class MetricsSpec(_Model):
    """buildkitd's own Prometheus metrics."""

    enabled: StrictBool = Field(
        False,
        description=(
            "Serve buildkitd's debug address on port 6060 (named metrics) of each daemon, "
            "with prometheus.io scrape annotations on the pods: /metrics (builds counted by "
            "status, build durations, gRPC calls). Off by default: the same unauthenticated "
            "port also serves Go profiles and the daemon's cache records and accepts GC, "
            "compaction and cache-load requests; admit only your Prometheus to it (a "
            "NetworkPolicy)."
        ),
    )


# service.type NodePort/LoadBalancer with tls.mode disabled, without the opt-in.
_EXPOSED_WITHOUT_TLS = (
    "has(self.tls) && has(self.tls.mode) && self.tls.mode == 'disabled' && "
    "has(self.service) && has(self.service.type) && self.service.type != 'ClusterIP' && "
    "!(has(self.service.allowWithoutTLS) && self.service.allowWithoutTLS)"
)
EXPOSED_WITHOUT_TLS_TEXT = (
    "with tls.mode disabled exposes an unauthenticated builder beyond the cluster: use "
    "tls.mode auto or secret, or set service.allowWithoutTLS: true if the network admits "
    "nobody else"
)


class BuilderSpec(_Model):
    """Desired state of a Builder: a set of buildkitd daemons reachable over mutual TLS."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    f"!({_EXPOSED_WITHOUT_TLS})",
                    "service.type NodePort or LoadBalancer " + EXPOSED_WITHOUT_TLS_TEXT,
                    message_expression=(
                        "'service.type ' + self.service.type + ' ' + "
                        + _cel_string(EXPOSED_WITHOUT_TLS_TEXT)
                    ),
                    field_path=".service.type",
                ),
                _rule(
                    "!(has(self.rootless) && !self.rootless && has(self.securityProfile) && "
                    "self.securityProfile != 'privileged')",
                    "rootless: false means securityProfile privileged: drop rootless: false, or "
                    "set securityProfile: privileged",
                    field_path=".securityProfile",
                ),
            ]
        }
    )

    rootless: StrictBool = Field(
        True,
        description=(
            "Run buildkitd rootless (uid 1000, no process sandbox, seccomp and AppArmor "
            "Unconfined, not privileged); false runs it privileged as root."
        ),
    )
    security_profile: SecurityProfile | None = Field(
        None,
        description=(
            "How each daemon is isolated; unset follows rootless (true: rootless, false: "
            "privileged). rootless (the default): buildkitd as uid 1000 under rootlesskit, "
            "not privileged, seccomp and AppArmor Unconfined; pick it first. userns: "
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
        _validations(
            _rule(
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
        description="Number of buildkitd daemons (ignored when pools are set).",
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
            _check_label_key(key)
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
        total = sum(p.replicas for p in self.pools)
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


class PoolStatus(_Model):
    """One pool of daemons as it runs."""

    platform: str = Field(description="The pool's platform, e.g. linux/arm64.")
    replicas: int = Field(description="Daemons desired in the pool.")
    ready_replicas: int = Field(description="The pool's daemons ready to serve builds.")
    endpoint: str = Field(description="The pool's Service: tcp://<service>.<namespace>.svc:1234.")


class DaemonStatus(_Model):
    """One daemon: its own address, so a client can come back to its cache."""

    name: str = Field(description="The daemon's Deployment, also its pod's hostname.")
    address: str = Field(
        description="tcp://<daemon>.<headless service>.<namespace>.svc:1234, covered by the "
        "server certificate."
    )
    platform: str | None = Field(None, description="Its pool's platform (pools only).")
    ready: bool = Field(description="Serving builds with the current spec.")
    idle: bool = Field(
        False, description="Scaled to zero after idleTimeout; connect or wake starts it."
    )


class WaitingDaemon(_Model):
    """A daemon whose roll, recreate or removal waits for it to go idle."""

    daemon: str = Field(description="The daemon's Deployment.")
    since: str = Field(description="When the wait began (RFC 3339).")
    reason: str = Field(description="What it waits for, and what waits.")


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
            "The last valid spec, which the children were made from: while a later edit is "
            "invalid, the operator keeps repairing and renewing what runs from this."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


def pool_slug(platform: str) -> str:
    """A pool's platform in child names: its architecture and variant (and its OS when not
    Linux) as a DNS label of at most 9 characters (long ones shortened with a hash)."""
    parts = platform.split("/")
    if parts[0] == "linux":
        parts = parts[1:]
    slug = "-".join(part.replace("_", "") for part in parts)
    if len(slug) > 9 or not slug:
        slug = slug[:3] + hashlib.sha256(platform.encode()).hexdigest()[:6]
    return slug


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
