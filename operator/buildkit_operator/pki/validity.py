"""How long certificates live and when they are renewed. The clock is an argument (a
tz-aware ``now``), never read here, so that tests pick the moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
# Backdating absorbs clock skew between the operator and the nodes that check the chain.
CLOCK_SKEW = timedelta(minutes=5)


def utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(delta: timedelta) -> str:
    if delta.seconds == 0 and delta.microseconds == 0:
        return f"{delta.days}-day"
    return str(delta)


def timing_problem(
    cert: x509.Certificate, label: str, now: datetime, renew_before: timedelta
) -> str | None:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        return f"{label} is not valid before {when(not_before)}"
    if now >= not_after:
        return f"{label} expired on {when(not_after)}"
    if now >= not_after - renew_before:
        return f"{label} expires {when(not_after)}, inside the {_span(renew_before)} renewal window"
    return None
