"""Kubernetes quantities (20Gi, 500m, 2) as field types: accepted as strings or numbers,
as Kubernetes accepts them, and checked with the pattern Kubernetes publishes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from kubernetes.utils.quantity import parse_quantity
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from .cel import cel_rule, validations
from .syntax import MAX_QUANTITY_LENGTH

# The pattern Kubernetes itself publishes for resource.Quantity (as controller-gen emits it).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


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
    validations(
        cel_rule(
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
