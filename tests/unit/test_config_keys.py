"""Keys of a raw buildkitd.config that buildkitd would silently ignore are named."""

from __future__ import annotations

from buildkit_operator.render.config import unknown_keys
from cli_in_process import run_cli


def test_known_keys_pass() -> None:
    raw = """
debug = true
[log]
format = "json"
[worker.oci]
max-parallelism = 2
gc = true
reservedSpace = "1GB"
[[worker.oci.gcpolicy]]
all = true
[registry."docker.io"]
mirrors = ["m:5000"]
[frontend."dockerfile.v0"]
enabled = true
[history]
maxEntries = 10
"""
    assert unknown_keys(raw) == []
    assert unknown_keys(None) == [] and unknown_keys("") == []


def test_typos_are_named_with_their_path() -> None:
    raw = """
[worker.oci]
max_parallelism = 2
[registry."ghcr.io"]
mirror = ["m"]
[workers]
x = 1
"""
    assert unknown_keys(raw) == ["worker.oci.max_parallelism", "registry.ghcr.io.mirror", "workers"]


def test_render_warns_but_still_renders() -> None:
    doc = (
        "apiVersion: buildkit.dev/v1alpha1\nkind: Builder\nmetadata: {name: x}\n"
        "spec:\n  buildkitd:\n    config: |\n      [worker.oci]\n      max_parallelism = 2\n"
    )
    proc = run_cli("render", "-f", "-", stdin=doc)
    assert proc.returncode == 0
    assert "warning" in proc.stderr and "worker.oci.max_parallelism" in proc.stderr
    assert "kind: Deployment" in proc.stdout
