"""Autoscaling: the daemon count follows the build load between two bounds, instead of a
fixed ``replicas``.

The bounds and windows are checked here (and repeated as CEL, so ``kubectl apply`` refuses
what the operator would); the decision itself is ``reconcile/autoscale.py``. ``replicas``
and ``autoscale`` are exclusive, at the Builder's level and in each pool: two counts for
one set of daemons would leave one of them silently ignored. That is why neither
``replicas`` has a default in the CRD (the model's default of one daemon stands in): the
API server could not tell a ``replicas: 1`` it filled in from one a user wrote.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, StrictInt, model_validator

from .camel_model import CamelModel
from .cel import cel_rule
from .durations import Duration, duration_seconds

DEFAULT_SCALE_UP_AFTER = "30s"
DEFAULT_SCALE_DOWN_AFTER = "10m"
MAX_AUTOSCALED = 64  # the same bound as replicas (pools.MAX_DAEMONS)

EXCLUSIVE_TEXT = (
    "replicas and autoscale are exclusive: autoscale sets the number of daemons between "
    "minReplicas and maxReplicas; remove replicas (or autoscale)"
)
MIN_OVER_MAX_TEXT = "minReplicas must not be more than maxReplicas"


def no_server_default(schema: dict[str, Any]) -> None:
    """Drop a field's default from the CRD (the model keeps it): for ``replicas``, which
    must be absent in an object the API server stores for ``autoscale`` to be allowed."""
    schema.pop("default", None)


def exclusive_rule(field_path: str) -> dict[str, Any]:
    """The CEL rule, on an object with ``replicas`` and ``autoscale``, that refuses both."""
    return cel_rule(
        "!(has(self.replicas) && has(self.autoscale))",
        EXCLUSIVE_TEXT,
        field_path=field_path,
    )


class AutoscaleSpec(CamelModel):
    """Daemons added when all of them build, removed when one is idle."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.minReplicas) || !has(self.maxReplicas) || "
                    "self.minReplicas <= self.maxReplicas",
                    # No messageExpression: the API server prices string(int) as unbounded.
                    MIN_OVER_MAX_TEXT,
                    field_path=".minReplicas",
                )
            ]
        }
    )

    min_replicas: StrictInt = Field(
        1,
        ge=0,
        le=MAX_AUTOSCALED,
        description=(
            "Fewest daemons: they run however idle they are (idleTimeout may still put them "
            "to sleep). 0 keeps one daemon, which then sleeps after idleTimeout (required "
            "with 0) and wakes on connect or wake, as without autoscale."
        ),
    )
    max_replicas: StrictInt = Field(
        ge=1,
        le=MAX_AUTOSCALED,
        description=(
            "Most daemons. A daemon is added, one at a time, when every daemon has had "
            "builds in flight for scaleUpAfter. The cluster's admission policy may bound it "
            "(chart value policy.limits.maxReplicas)."
        ),
    )
    scale_up_after: Duration = Field(
        DEFAULT_SCALE_UP_AFTER,
        description=(
            "How long every ready daemon must have had builds in flight before a daemon is "
            "added (e.g. 30s, 2m): a short burst is served by the daemons there are."
        ),
    )
    scale_down_after: Duration = Field(
        DEFAULT_SCALE_DOWN_AFTER,
        description=(
            "How long the highest-numbered daemon beyond minReplicas must have run no build "
            "before it is removed (e.g. 10m, 1h). It is never removed while it builds; its "
            "cache claim is kept, so the daemon of that number comes back with a warm cache."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not be more than maxReplicas "
                f"({self.max_replicas})"
            )
        return self

    @property
    def up_seconds(self) -> int:
        return duration_seconds(self.scale_up_after)

    @property
    def down_seconds(self) -> int:
        return duration_seconds(self.scale_down_after)
