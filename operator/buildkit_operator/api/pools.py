"""Pools: a set of daemons per platform, on nodes of its architecture; and the slug a
pool's platform takes in child names."""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import ConfigDict, Field, StrictInt, field_validator, model_validator

from .autoscale import EXCLUSIVE_TEXT, AutoscaleSpec, exclusive_rule, no_server_default
from .camel_model import CamelModel
from .cel import cel_matches, cel_rule, validations
from .labels import Labels
from .pod import ResourceRequirements
from .syntax import MAX_PLATFORM_LENGTH, PLATFORM_PATTERN, PLATFORM_RE

MAX_POOLS = 8
MAX_DAEMONS = 64


class Pool(CamelModel):
    """A set of daemons of one platform, scheduled on nodes of its architecture."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [exclusive_rule(".autoscale")]}
    )

    platform: Annotated[
        str,
        validations(
            cel_rule(
                cel_matches("self", PLATFORM_PATTERN),
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
    replicas: StrictInt = Field(
        1,
        ge=0,
        le=MAX_DAEMONS,
        description="Daemons in this pool (1 when neither replicas nor autoscale is set).",
        json_schema_extra=no_server_default,
    )
    autoscale: AutoscaleSpec | None = Field(
        None,
        description=(
            "Let this pool's daemon count follow its build load, instead of a fixed "
            "replicas (exclusive with it)."
        ),
    )
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
        if len(platform) > MAX_PLATFORM_LENGTH or not PLATFORM_RE.match(platform):
            raise ValueError(f"{platform!r} is not a platform such as linux/amd64")
        return platform

    @model_validator(mode="after")
    def _exclusive(self) -> Pool:
        if self.autoscale is not None and "replicas" in self.model_fields_set:
            raise ValueError(EXCLUSIVE_TEXT)
        return self

    @property
    def os(self) -> str:
        return self.platform.split("/")[0]

    @property
    def arch(self) -> str:
        return self.platform.split("/")[1]


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
