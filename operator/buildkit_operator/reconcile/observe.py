"""Observe: what a pass reads besides the Builder and its children. Here, what the daemons
a change would stop are doing, asked of the daemons themselves (``buildkit.activity``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from ..api import Builder
from ..api.daemons import Activity
from ..api.names import PORT, ChildNames
from ..buildkit.activity import describe, gather, targets
from ..cluster import Kube, secret_data

log = logging.getLogger(__name__)


def daemon_activity(
    kube: Kube,
    builder: Builder,
    live: Mapping[tuple[str, str], Mapping[str, Any]],
    daemons: Sequence[str],
) -> dict[str, Activity]:
    """Ask the daemons a change would stop whether they are building (at most about
    activity.TIMEOUT); the ones that cannot be asked are left unknown."""
    names = ChildNames(builder.name)
    try:
        addresses = kube.daemon_addresses(builder.namespace, names.service)
    except (ApiException, OSError, urllib3.exceptions.HTTPError) as err:
        log.info("%s/%s: no daemon addresses: %s", builder.namespace, builder.name, err)
        return {}
    mode = builder.spec.tls.mode
    tls = (
        None
        if mode == "disabled"
        else secret_data(live.get(("Secret", names.client_secret)))
        if mode == "auto"
        else {}
    )
    found, unknown = targets(
        daemons,
        addresses,
        port=PORT,
        tls=tls,
        server_name=f"{names.service}.{builder.namespace}.svc",
    )
    answers = {**unknown, **gather(found)}
    log.info("%s/%s: activity %s", builder.namespace, builder.name, describe(answers))
    return answers
