"""Cache-sticky routing: which daemon a project builds on.

Rendezvous (highest-random-weight) hashing: every daemon scores every key, and the key goes
to the daemon with the highest score. The same key always picks the same daemon while that
daemon is ready, so a project keeps finding its warm cache; a daemon added takes over only
the keys it now scores highest for (about 1/n of them), and a daemon that goes away hands
over only its own keys. No table is kept anywhere: every client computes the same answer
from the Builder's status.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def score(key: str, daemon: str) -> int:
    digest = hashlib.sha256(f"{key}\x00{daemon}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick(key: str, daemons: Iterable[str]) -> str | None:
    """The daemon ``key`` builds on, or None when there is none."""
    candidates = list(daemons)
    if not candidates:
        return None
    return max(candidates, key=lambda daemon: (score(key, daemon), daemon))
