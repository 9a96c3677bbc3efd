"""Hypothesis settings of the unit tier's fuzzers, raised by ``make fuzz``.

By default (``make test``, ``make check``, CI) each fuzzer draws the number of examples it
names, chosen to be quick, and its pinned ``@example``s always run. The same environment the
integration fuzzers read makes them fuzz longer:

- ``BKO_FUZZ_EXAMPLES=N``: at least N examples each (a fuzzer that names more keeps its own);
- ``BKO_FUZZ_RANDOM`` set (to anything, as for the integration fuzzers): new random examples
  on every run, also for the fuzzers that are derandomized by default (failures are kept in
  Hypothesis' database, .hypothesis/).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import settings


def fuzz_settings(max_examples: int, *, derandomize: bool = False, **kwargs: Any) -> settings:
    """``settings(max_examples=..., deadline=None, ...)``, raised by BKO_FUZZ_EXAMPLES and
    randomized by BKO_FUZZ_RANDOM."""
    wanted = int(os.environ.get("BKO_FUZZ_EXAMPLES") or 0)
    if os.environ.get("BKO_FUZZ_RANDOM") is not None:
        derandomize = False
    kwargs.setdefault("deadline", None)
    return settings(max_examples=max(max_examples, wanted), derandomize=derandomize, **kwargs)
