"""Fixtures for the end-to-end tests: the real buildkitd and buildctl, run as the rendered
Deployment describes (see buildkit_e2e.py).

- ``buildkit_bin``: the bin directory of the pinned BuildKit (hack/tools/buildkit), built on
  first use by hack/build-tools.sh; a failed build fails the run loudly.
- ``runtime_deps``: hack/install-runtime-deps.sh has run (runc; iproute2 for the network
  namespace of the registry mirror; rootlesskit, uidmap, fuse-overlayfs and a uid-1000
  account with subordinate ids for rootless).
- ``render_builders``: runs ``buildkit-operator render`` on Builder specs.
- ``start_daemon``: starts a Daemon for a rendered Builder; every daemon is stopped at teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from buildkit_e2e import (
    OPERATOR_CLI,
    REPO,
    DaemonPool,
    RenderBuilders,
    Rendered,
    builder_manifest,
    render,
)

HACK = REPO / "hack"


@pytest.fixture(scope="session")
def buildkit_bin() -> Path:
    """buildkitd and buildctl at the pinned version, built by hack/build-tools.sh."""
    print("e2e: building or reusing BuildKit (hack/build-tools.sh buildkit)", file=sys.stderr)
    result = subprocess.run(
        [str(HACK / "build-tools.sh"), "--print-path", "buildkit"],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"hack/build-tools.sh buildkit failed with exit status {result.returncode}; the "
            "build output above says why (a first build needs Go and the Go module proxy)",
            pytrace=False,
        )
    bin_dir = Path(result.stdout.strip().split(":")[0])
    for program in ("buildkitd", "buildctl"):
        if not os.access(bin_dir / program, os.X_OK):
            pytest.fail(f"{bin_dir / program} missing after the build", pytrace=False)
    return bin_dir


@pytest.fixture(scope="session")
def buildkit_cgroup() -> Iterator[None]:
    """buildkitd puts its containers under the cgroup /buildkit, its default parent (the
    rendered config names none, as in a pod). When this run made that cgroup, it is removed
    afterwards, in every hierarchy, so the run leaves no cgroup behind."""
    from cgroups import cgroup_mounts, remove_cgroup

    existed = any((mount / "buildkit").is_dir() for mount in cgroup_mounts().values())
    yield
    if not existed:
        left = remove_cgroup("/buildkit")
        assert not left, f"cgroups still holding processes after the daemons stopped: {left}"


@pytest.fixture(scope="session")
def runtime_deps() -> None:
    """runc for the rootful daemon; ip (iproute2); the rootless packages and account."""
    if os.geteuid() != 0:
        pytest.fail(
            "the e2e tests run buildkitd as root (and as uid 1000 for rootless); run them as "
            "root, e.g. in the CI container",
            pytrace=False,
        )
    result = subprocess.run(
        [str(HACK / "install-runtime-deps.sh")], stderr=None, timeout=1800, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"hack/install-runtime-deps.sh failed with exit status {result.returncode}",
            pytrace=False,
        )
    for program in ("runc", "ip"):
        if shutil.which(program) is None:
            pytest.fail(
                f"{program} is not on PATH after hack/install-runtime-deps.sh", pytrace=False
            )


@pytest.fixture(scope="session")
def render_builders(tmp_path_factory: pytest.TempPathFactory) -> RenderBuilders:
    """``render_builders({"name": spec, ...})`` -> the rendered objects of each Builder."""
    if not OPERATOR_CLI.exists():
        pytest.fail(f"{OPERATOR_CLI} missing: install the project into .venv", pytrace=False)

    def _render(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Rendered]:
        manifests = [builder_manifest(name, spec) for name, spec in specs.items()]
        return render(manifests, tmp_path_factory.mktemp("render"))

    return _render


@pytest.fixture(scope="module")
def daemons(buildkit_bin: Path, runtime_deps: None, buildkit_cgroup: None) -> Iterator[DaemonPool]:
    """Module-scoped pool: daemons a module starts are stopped when it ends."""
    pool = DaemonPool(buildkit_bin)
    try:
        yield pool
    finally:
        pool.close()
