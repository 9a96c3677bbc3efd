"""The base of every spec and status type: how a field is named on the wire, and that an
unknown field is refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Camel-case wire names, snake-case Python names, and no unknown fields: a typo in a
    spec is an error a person sees, not a setting silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=False,
    )
