"""The build cache: a volume per daemon, and the floor below which BuildKit's garbage
collection limits, derived from its size, leave no room to work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, field_validator

from .camel_model import CamelModel
from .cel import cel_rule
from .object_names import ObjectName
from .quantities import PositiveQuantity, quantity_bytes

MIN_CACHE = "256Mi"
MIN_CACHE_BYTES = 256 * 1024**2
DEFAULT_CACHE_SIZE = "20Gi"


class CacheSpec(CamelModel):
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
                cel_rule(
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
