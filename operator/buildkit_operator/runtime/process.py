"""The operator process: metrics, liveness, leadership, then Kopf.

With leader election only the Lease holder starts Kopf at all (handlers, watches, the
children's cache); a standby answers liveness and waits. A leader that may have lost the
Lease leaves at once rather than reconcile beside its successor.
"""

from __future__ import annotations

import logging
import os
import sys

import kopf
from prometheus_client import start_http_server

from ..api.defaults import DEFAULTS, Defaults
from ..cluster import REQUEST_TIMEOUT, Kube
from ..cluster.lease import Election
from ..reconcile.signing import Lifetimes
from . import handlers  # noqa: F401  (importing it registers the Kopf handlers)
from .liveness import serve_liveness

log = logging.getLogger(__name__)

__all__ = ["exit_on_lost_leadership", "run_operator"]


def exit_on_lost_leadership() -> None:
    """Leave at once: a process that may no longer lead must not make one more write."""
    log.error("leader election: lost the Lease; exiting so that only the new leader reconciles")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(1)


def run_operator(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    verbose: bool,
    liveness: str,
    metrics_port: int,
    request_timeout: float = REQUEST_TIMEOUT[1],
    defaults: Defaults = DEFAULTS,
    concurrency: int = 0,
    election: Election | None = None,
    lifetimes: Lifetimes | None = None,
) -> None:
    """Run the handlers until stopped; with ``election``, only once this process leads."""
    kopf.configure(verbose=verbose)
    if metrics_port:
        start_http_server(metrics_port)
    elector = None
    if election is not None:
        kube = Kube(timeout=(min(REQUEST_TIMEOUT[0], request_timeout), request_timeout))
        elector = election.elector(kube)
        with serve_liveness(liveness):  # a standby is alive, and says so to the kubelet
            elector.acquire()
        elector.keep_renewing(exit_on_lost_leadership)
    try:
        kopf.run(
            clusterwide=all_namespaces or not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness or None,
            standalone=True,
            memo=kopf.Memo(
                request_timeout=request_timeout,
                defaults=defaults,
                concurrency=concurrency,
                namespaces=[] if all_namespaces else namespaces,
                fence=elector.valid if elector is not None else None,
                lifetimes=lifetimes or Lifetimes(),
            ),
        )
    finally:
        # Kopf has run the cleanup handler: the reconciles have ended.
        if elector is not None:
            elector.release()
