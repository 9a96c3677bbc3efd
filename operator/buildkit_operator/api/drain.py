"""How long builds are let finish before a daemon is stopped or changed: buildkitd
cancels every build it runs when it stops."""

from __future__ import annotations

from pydantic import Field, StrictInt

from .camel_model import CamelModel

# A hold or a drain never outlasts a day: certificates are renewed 30 days before they
# expire, so no wait for idle can let one run out.
MAX_DRAIN_SECONDS = 86400
DEFAULT_GRACE_SECONDS = 600
DEFAULT_MAX_WAIT_SECONDS = 3600


class DrainSpec(CamelModel):
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
