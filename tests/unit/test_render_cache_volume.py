"""What the daemon's pod asks of the storage its cache lands on: a rootless daemon (uid 1000)
needs the volume group-writable through fsGroup, and a big cache must not be re-chowned at
every mount. Expected values are the Kubernetes API's (PodSecurityContext)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from buildkit_operator.api import Builder
from buildkit_operator.pki import ensure_tls
from buildkit_operator.render import render_builder, server_sans

NOW = datetime(2026, 11, 24, tzinfo=UTC)
ROOTLESS_UID = 1000  # the rootless image's user (moby/buildkit rootless: user "user", 1000)


def pod_security(**spec: Any) -> dict[str, Any] | None:
    builder = Builder.from_manifest(
        {
            "apiVersion": "buildkit.dev/v1alpha1",
            "kind": "Builder",
            "metadata": {"name": "team-a", "namespace": "ci", "uid": "u"},
            "spec": spec,
        }
    )
    bundle = ensure_tls({}, name="team-a", server_sans=server_sans(builder), now=NOW)
    (deployment,) = [o for o in render_builder(builder, bundle) if o["kind"] == "Deployment"]
    security: dict[str, Any] | None = deployment["spec"]["template"]["spec"].get("securityContext")
    return security


def test_rootless_cache_gets_fsgroup_changed_only_on_root_mismatch() -> None:
    """fsGroupChangePolicy OnRootMismatch: the kubelet walks the volume to chown and chmod
    it only when its root directory does not already carry the group (the first mount);
    with the default (Always) every pod start of a daemon walks its whole cache, minutes
    for a large one, before buildkitd starts."""
    security = pod_security()
    assert security is not None
    assert security["fsGroup"] == ROOTLESS_UID
    assert security["fsGroupChangePolicy"] == "OnRootMismatch"


def test_rootful_daemon_asks_no_ownership_change() -> None:
    """A rootful daemon runs as root: nothing to chown, so no fsGroup and no walk."""
    security = pod_security(rootless=False) or {}
    assert "fsGroup" not in security
    assert "fsGroupChangePolicy" not in security
