"""The Builder API: the pydantic model (the CRD is generated from it), install-wide
defaults, child names and labels. Imports nothing else of the operator."""

from .builder import Builder, InvalidBuilder
from .buildkitd import DEFAULT_IMAGE_ROOTFUL, DEFAULT_IMAGE_ROOTLESS
from .durations import duration_seconds
from .identity import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .pools import pool_slug
from .quantities import quantity_bytes
from .spec import BuilderSpec
from .status import (
    AutoscaleStatus,
    BuilderStatus,
    Condition,
    DaemonStatus,
    Phase,
    PoolStatus,
    WaitingDaemon,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_IMAGE_ROOTFUL",
    "DEFAULT_IMAGE_ROOTLESS",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AutoscaleStatus",
    "Builder",
    "BuilderSpec",
    "BuilderStatus",
    "Condition",
    "DaemonStatus",
    "InvalidBuilder",
    "Phase",
    "PoolStatus",
    "WaitingDaemon",
    "duration_seconds",
    "pool_slug",
    "quantity_bytes",
]
