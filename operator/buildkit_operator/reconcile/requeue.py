"""When to look at a Builder again, though nothing changed: a timer for what no watch
reports (a deletion in progress, a build's end, a user's Secret, a certificate's renewal
time, a conflicting object someone may remove, a watch gone quiet mid-rollout). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..pki import RENEW_BEFORE, TLSBundle
from .types import Plan

# How soon to look again while something is still settling (a deletion in progress).
SETTLE_DELAY = 2.0
# Certificates are checked at least this often, so renewal never waits on an event.
RENEWAL_CHECK = timedelta(hours=1)
# A user's tls.secretName Secret carries none of our labels, so no watch reports its
# rotation (watching every Secret of the cluster would cost far more): look at it this often.
USER_SECRET_CHECK = 30.0
# Objects that are not ours carry none of our labels either: look again this often, so
# the Builder goes on soon after someone removes a conflicting object.
CONFLICT_CHECK = 30.0
# While a rollout is under way the children's watch events say when it is done; look
# again this often anyway, so a watch that went quiet (a dropped connection) cannot leave
# a Builder Pending.
PROGRESS_CHECK = 15.0
# While a change waits for a building daemon, ask it again this often: nothing reports the
# end of a build.
IDLE_CHECK = 5.0


def requeue_after(
    the_plan: Plan,
    bundle: TLSBundle | None,
    status: Mapping[str, Any],
    now: datetime,
    *,
    user_secret: bool,
    idle_check: float | None,
) -> float | None:
    """Seconds until the next pass, or None when only an event should start one."""
    after = _requeue(the_plan, bundle, now, user_secret=user_secret)
    if idle_check is not None:
        after = min(after or idle_check, idle_check)
    if any(c["type"] == "Progressing" and c["status"] == "True" for c in status["conditions"]):
        after = min(after or PROGRESS_CHECK, PROGRESS_CHECK)
    return after


def _requeue(
    the_plan: Plan, bundle: TLSBundle | None, now: datetime, *, user_secret: bool
) -> float | None:
    if the_plan.actions or the_plan.waiting:
        return SETTLE_DELAY
    if the_plan.held:
        return IDLE_CHECK
    if user_secret:
        return USER_SECRET_CHECK
    if the_plan.conflicts:
        return CONFLICT_CHECK
    if bundle is not None:
        renew_at = min(
            bundle.server.not_after,
            bundle.client.not_after,
            bundle.ca.not_after,
            bundle.client_ca.not_after,
        )
        until = (renew_at - RENEW_BEFORE - now).total_seconds()
        if bundle.revisit is not None:
            # A revocation set for later takes effect on time, to the second.
            return max(1.0, min(until, (bundle.revisit - now).total_seconds()))
        return max(60.0, min(until, RENEWAL_CHECK.total_seconds()))
    return None
