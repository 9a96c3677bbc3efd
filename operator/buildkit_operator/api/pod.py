"""Fields of the builder pods as in a PodSpec: tolerations, compute resources, object
references, the security profile. Checked as the API server checks a pod's, so that a spec
whose pods it would refuse is refused at the Builder instead."""

from __future__ import annotations

from typing import Annotated, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import ConfigDict, Field, StrictInt, field_validator, model_validator

from .camel_model import CamelModel
from .cel import cel_rule, cel_string, validations
from .labels import (
    LABEL_TEXT,
    LABEL_VALUE_TEXT,
    cel_label_key_message,
    cel_label_key_ok,
    cel_label_value_ok,
    check_label_key,
    check_labels,
)
from .object_names import ObjectName
from .quantities import NonNegativeQuantity
from .syntax import MAX_LABEL_KEY_LENGTH, MAX_LABEL_VALUE_LENGTH, MAX_RESOURCES

SecurityProfile = Literal["rootless", "userns", "privileged"]

_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
NOT_A_RESOURCE_TEXT = (
    "is not a resource: use cpu, memory, ephemeral-storage, hugepages-<size> or a "
    "domain-prefixed name such as nvidia.com/gpu"
)


class Toleration(CamelModel):
    """A toleration, as in a PodSpec."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "(has(self.key) && self.key != '') || "
                    "(has(self.operator) && self.operator == 'Exists')",
                    "operator must be Exists when key is empty (matches every taint)",
                    field_path=".operator",
                ),
                cel_rule(
                    "!(has(self.operator) && self.operator == 'Exists' && "
                    "has(self.value) && self.value != '')",
                    "value must be empty when operator is Exists",
                    field_path=".value",
                ),
                cel_rule(
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
        validations(
            cel_rule(
                f"self == '' || ({cel_label_key_ok('self')})",
                "must be a label key: an optional DNS-subdomain prefix and '/', then a name of "
                + LABEL_TEXT,
                message_expression=cel_label_key_message("self"),
            ),
            maxLength=MAX_LABEL_KEY_LENGTH,
        ),
    ] = Field(None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (default Equal)."
    )
    value: Annotated[
        str | None,
        validations(
            cel_rule(
                cel_label_value_ok("self"),
                "must be a label value: empty or " + LABEL_TEXT,
                message_expression=(
                    '"label value \'" + self + ' + cel_string("': " + LABEL_VALUE_TEXT)
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
            check_label_key(self.key)
        elif self.operator != "Exists":
            raise ValueError("operator must be Exists when key is empty (matches every taint)")
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.operator != "Exists" and self.value:
            check_labels({self.key or "": self.value})
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only allowed with effect NoExecute")
        return self


class LocalObjectReference(CamelModel):
    """A reference to an object in the Builder's namespace."""

    name: ObjectName = Field(description="Name of the referenced object.")


def _resource_name_ok(name: str) -> str:
    standard = ", ".join(f"'{r}'" for r in _STANDARD_RESOURCES)
    return (
        f"{name} in [{standard}] || {name}.startsWith('hugepages-') || "
        f"({name}.contains('/') && {cel_label_key_ok(name)})"
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
    validations(
        cel_rule(
            f"self.all(k, {_resource_name_ok('k')})",
            "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or a "
            "domain-prefixed name such as nvidia.com/gpu",
            message_expression=(
                f"self.filter(k, !({_resource_name_ok('k')}))"
                '.map(k, "\'" + k + ' + cel_string("' " + NOT_A_RESOURCE_TEXT) + ")[0]"
            ),
        )
    ),
]


class ResourceRequirements(CamelModel):
    """Compute resources for the buildkitd container, as in a PodSpec."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
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
                check_label_key(name)
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
