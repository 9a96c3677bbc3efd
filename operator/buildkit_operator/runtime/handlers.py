"""Kopf handlers: thin. Kopf carries the Builder watch and the event loop; every trigger
asks the runner (``runner.py``) to reconcile the Builder concerned.

Builders come through ``kopf.on.event``, for which Kopf persists nothing on the object
(no bookkeeping patch per Builder); the children come through the watch-fed cache in
``cluster/cache.py``, whose changes wake their Builder.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from ..api import GROUP, PLURAL, VERSION
from ..api.defaults import DEFAULTS
from ..api.names import SIGNER_NAME
from ..cluster import REQUEST_TIMEOUT, Kube
from ..reconcile.signing import Lifetimes, handle
from .runner import DEFAULT_CONCURRENCY, Runner
from .settings import configure


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings)
    timeout = float(memo.get("request_timeout") or REQUEST_TIMEOUT[1])
    concurrency = int(memo.get("concurrency") or DEFAULT_CONCURRENCY)
    kube = await asyncio.to_thread(
        Kube, timeout=(min(REQUEST_TIMEOUT[0], timeout), timeout), concurrency=concurrency
    )
    # With leader election, no write leaves this process once it may have lost the Lease.
    kube.fence = memo.get("fence")
    runner = Runner(kube, memo.get("defaults", DEFAULTS), concurrency=concurrency)
    memo["runner"] = runner
    memo["kube"] = kube
    loop = asyncio.get_running_loop()

    def on_change(obj: dict[str, Any]) -> None:  # called on a watch's thread
        loop.call_soon_threadsafe(runner.child_changed, obj)

    kube.watch_children(memo.get("namespaces") or [], on_change)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def builder_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every Builder event, including the listing at startup. Kopf keeps no state of its
    own on the Builder for this kind of handler (no annotations to patch): the reconcile
    is level-based, so a new generation, or a Builder not seen before, is all it needs."""
    runner: Runner | None = memo.get("runner")
    obj = event.get("object")
    if runner is None or not isinstance(obj, Mapping):
        return
    runner.builder_changed(event.get("type"), copy.deepcopy(dict(obj)))


# Seconds between attempts at a certificate request the API server refused.
CSR_RETRIES = (1.0, 3.0, 10.0)


@kopf.on.event(
    "certificates.k8s.io",
    "v1",
    "certificatesigningrequests",
    field="spec.signerName",
    value=SIGNER_NAME,
)
async def csr_event(event: kopf.RawEvent, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """A user's request for a client certificate: level-based like the Builders (every
    event, the listing at startup included, re-decides whatever is still undecided)."""
    kube: Kube | None = memo.get("kube")
    obj = event.get("object")
    if kube is None or not isinstance(obj, Mapping) or event.get("type") == "DELETED":
        return
    lifetimes = memo.get("lifetimes") or Lifetimes()
    name = (obj.get("metadata") or {}).get("name")
    # A request sees no further event unless someone changes it: a refusal of the API
    # server (not the user's) is tried again here, then left to the listing at startup.
    for pause in (*CSR_RETRIES, None):
        try:
            done = await asyncio.to_thread(
                handle, kube, copy.deepcopy(dict(obj)), datetime.now(UTC), lifetimes
            )
        except Exception as err:
            logger.warning("certificate request %s: %s", name, err)
            if pause is None:
                return
            await asyncio.sleep(pause)
            continue
        if done:
            logger.info("certificate request %s", done)
        return


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """On the way out, before the Lease is released: no pass starts, and the ones running
    end, so that nothing of this process writes beside its successor."""
    runner: Runner | None = memo.get("runner")
    if runner is not None:
        await asyncio.to_thread(runner.close)
