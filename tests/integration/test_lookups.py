"""What a pass asks the API server by name: each child's name once a pass at most.

A pass looks up by name what its children's cache cannot show (an object of a child's name
without the operator's labels is someone else's, and a CA Secret whose labels were removed
is still the Builder's). The TLS Secrets are looked up before rendering and are children
rendered too: a name the API server has just answered 404 for is not asked again.

The pass runs in this process against the real API server (no operator process: nothing
else writes), through a client that counts its requests.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from harness import MANAGED, builder

from buildkit_operator.cluster import Kube
from buildkit_operator.cluster.client import load_config
from buildkit_operator.reconcile.loop import reconcile
from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class CountingKube(Kube):
    """The operator's client, counting each GET of one named object by its path."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(load_config(str(kubeconfig)))
        self.gets: Counter[str] = Counter()

    def raw(self, method: str, url: str, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        if method == "GET" and "labelSelector" not in parts.query:
            self.gets[parts.path] += 1
        return super().raw(method, url, **kwargs)


@pytest.fixture
def admin(cluster: Any) -> Kubectl:
    k: Kubectl = cluster.kubectl()
    k("apply", "--server-side", "--force-conflicts", "-f",
      str(REPO / "crds" / "builders.buildkit.dev.yaml"))  # fmt: skip
    k.wait_established("builders.buildkit.dev")
    return k


def test_a_new_builders_first_pass_asks_for_each_name_once(
    admin: Kubectl, cluster: Any, namespace: str
) -> None:
    admin.apply(builder("b", namespace))
    kube = CountingKube(cluster.kubeconfig)
    outcome = reconcile(kube, namespace, "b")
    assert not outcome.errors, outcome.errors
    secrets = {
        item["metadata"]["name"]
        for item in admin.json("get", "secrets", "-n", namespace, "-l", MANAGED)["items"]
    }
    assert {"b-ca", "b-server-tls", "b-client-tls"} <= secrets  # the pass made its TLS Secrets
    asked = {path: n for path, n in kube.gets.items() if "/secrets/" in path}
    assert asked, "the Secrets are looked up by name"
    assert all(n == 1 for n in asked.values()), asked
    assert all(n == 1 for n in kube.gets.values()), kube.gets
