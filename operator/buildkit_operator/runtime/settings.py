"""Kopf settings: where Kopf keeps its own bookkeeping, and what it must not do."""

from __future__ import annotations

import kopf

PREFIX = "buildkit.dev"


def configure(settings: kopf.OperatorSettings) -> None:
    # Bookkeeping in annotations under our prefix, should a handler ever need it (the
    # event handler on Builders keeps none); the status subresource is ours alone (its
    # schema is strict, so anything else written there would be pruned anyway).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # The reconciler records its own Events, one per pass that changed something; Kopf's
    # per-handler log Events would be a write on every pass.
    settings.posting.enabled = False
    # No Kopf peering: of several replicas only the Lease holder (leader.py) runs Kopf,
    # so no peering objects (and no RBAC for them) are needed.
    settings.peering.standalone = True
    # The operator watches fixed resources: no need to read CRDs cluster-wide.
    settings.scanning.disabled = True
    settings.networking.error_backoffs = [1, 2, 5, 10, 30, 60]
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Kopf's own requests (patches, watch connections) give up rather than hang.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
