"""Whether a daemon is building, and when it last built: the idleness signal.

Scale to zero (``idle.py``) asks this module and nothing else. A daemon whose activity
cannot be judged (unreachable, not answering, no source configured) reads as ``None``, and
an unknown is never taken for idle.

This is the minimal interface; the source that reads buildkitd itself plugs in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Activity:
    building: bool  # a build is in flight right now
    last_build: datetime | None  # when the last build ended; None: none since it started


# (namespace, Builder name, daemon Deployment name) -> what the daemon is doing, or None.
Source = Callable[[str, str, str], Activity | None]


def unknown(namespace: str, builder: str, daemon: str) -> Activity | None:
    """The source used until one is configured: nothing can be judged, nothing sleeps."""
    return None


_source: Source = unknown


def set_source(source: Source) -> None:
    global _source
    _source = source


def observe(namespace: str, builder: str, daemon: str) -> Activity | None:
    try:
        return _source(namespace, builder, daemon)
    except Exception:  # a source that fails cannot judge: never a reason to sleep
        return None
