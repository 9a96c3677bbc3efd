"""The schema the operator compares children by is the one the pinned API server publishes."""

from __future__ import annotations

from typing import Any

import pytest

from openapi_snapshot import SNAPSHOT, fetch_documents, reduce_documents, render

pytestmark = pytest.mark.integration


def test_snapshot_is_the_api_servers_schema(cluster: Any) -> None:
    documents = fetch_documents(cluster.api.get)
    assert render(reduce_documents(documents)) == SNAPSHOT.read_text(), (
        "operator/buildkit_operator/reconcile/openapi_children.json is stale: "
        "run hack/openapi_snapshot.py against the local cluster"
    )
