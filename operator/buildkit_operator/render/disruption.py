"""The PodDisruptionBudget over a Builder's daemons: a node drain stops them one at a time.

Each stopping daemon drains its builds in its preStop hook (see ``workload.py``); the budget
keeps an eviction from stopping a second daemon of the Builder before the first is back.
It binds evictions only (``kubectl drain``, the cluster autoscaler), never the operator's
own rolls, and lets an unhealthy pod go (``AlwaysAllow``): a daemon that is down has no
build to lose, and must not hold a node drain for ever.
"""

from __future__ import annotations

from typing import Any

from ..api import Builder
from ..api.names import ChildNames, child_labels, selector_labels
from .meta import object_meta


def disruption_budget(builder: Builder) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(
            builder,
            ChildNames(builder.name).disruption_budget,
            child_labels(builder.name, "disruption-budget"),
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(builder.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
