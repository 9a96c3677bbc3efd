"""Daemons are changed one at a time, and a hold never outlasts drain.maxWaitSeconds.

On kwok nodes no daemon can be asked whether it builds (pod IPs are not real), so the
operator treats each as idle: what is held here is the second daemon's roll while the
first one's new pod is not ready. The first daemon's new pod can never be scheduled (a
nodeSelector no node matches), so the hold ends only by its bound.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness import builder, condition, get, patch_spec, wait_phase, wait_until

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

MAX_WAIT = 8
NOWHERE = {"buildkit.dev/nowhere": "true"}


def _selector(k: Kubectl, name: str, ns: str) -> dict[str, str]:
    dep = get(k, "deployment", name, ns)
    return dict(dep["spec"]["template"]["spec"].get("nodeSelector") or {})


def test_second_daemon_waits_for_the_first_then_for_no_longer_than_max_wait(
    k: Kubectl, namespace: str
) -> None:
    spec: dict[str, Any] = {
        "replicas": 2,
        "cache": {"type": "ephemeral", "size": "1Gi"},
        "drain": {"maxWaitSeconds": MAX_WAIT},
    }
    k.apply(builder("roll", namespace, **spec))
    wait_phase(k, "roll", namespace, "Ready")
    patch_spec(k, "roll", namespace, {"nodeSelector": NOWHERE})
    changed = time.monotonic()

    wait_until("roll-0 to get the new template", lambda: _selector(k, "roll-0", namespace))
    # roll-1 keeps its pod while roll-0's new one is not ready, and the status says why.
    obj = wait_until(
        "roll-1 to be reported waiting",
        lambda: (
            o
            if (o := get(k, "builder", "roll", namespace)).get("status", {}).get("waitingForIdle")
            else None
        ),
        timeout=30,
    )
    (waiting,) = obj["status"]["waitingForIdle"]
    assert waiting["daemon"] == "roll-1" and "roll-0" in waiting["reason"], waiting
    progressing = condition(obj, "Progressing")
    assert progressing["status"] == "True" and "roll-1" in progressing["message"], progressing
    assert _selector(k, "roll-1", namespace) == {}

    wait_until(
        "roll-1 to roll once the hold is over",
        lambda: _selector(k, "roll-1", namespace),
        timeout=MAX_WAIT + 30,
    )
    held = time.monotonic() - changed
    assert held >= MAX_WAIT - 1, held
    obj = get(k, "builder", "roll", namespace)
    assert not obj["status"].get("waitingForIdle"), obj["status"]
    print(f"\nsecond daemon held {held:.1f}s (drain.maxWaitSeconds={MAX_WAIT})")
