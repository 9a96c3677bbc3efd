"""Durations as Kubernetes users write them (30m, 1h30m, 90s), as a field type and in
seconds."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from .cel import cel_matches, cel_rule, validations

_DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_DURATION_RE = re.compile(_DURATION_PATTERN)


def duration_seconds(text: str) -> int:
    """Seconds in a duration written as Kubernetes users write one: 30m, 1h30m, 90s."""
    match = _DURATION_RE.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h or 1h30m")
    hours, minutes, seconds = (int((g or "0")[:-1] or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _check_duration(text: str) -> str:
    if duration_seconds(text) <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return text


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    validations(
        cel_rule(
            f"self != '' && {cel_matches('self', _DURATION_PATTERN)} && self.matches('[1-9]')",
            "must be a duration longer than zero such as 30m, 1h or 1h30m",
            message_expression=(
                '"\'" + self + "\' is not a duration longer than zero such as 30m, 1h or 1h30m"'
            ),
        ),
        maxLength=32,
    ),
]
