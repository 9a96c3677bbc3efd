"""Shared test helpers: hack/ on sys.path, the pinned binaries built from hack/tools/, and
the one way every tier starts a local control plane of its own (``local_cluster``)."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
if str(HACK) not in sys.path:
    sys.path.insert(0, str(HACK))

from localcluster.cluster import LocalCluster  # noqa: E402

# Tiers marked from their directory (``-m node``, ``-m "not chaos"``); e2e modules mark
# themselves. One hook for all: a conftest's hook sees every item of the session anyway.
TIER_MARKERS = ("integration", "node", "chaos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        parents = Path(str(item.fspath)).parents
        for tier in TIER_MARKERS:
            if tests / tier in parents:
                item.add_marker(getattr(pytest.mark, tier))


@functools.cache
def tool_paths(*tools: str) -> tuple[Path, ...]:
    """Bin directories of the pinned tools (default: the local cluster's), building the missing.

    A first build takes minutes; hack/build-tools.sh reports progress on stderr (shown with -s,
    and in the captured output of a failure). A build that cannot be done fails the test run:
    tests that need these programs must not silently skip.
    """
    wanted = tools or ("kubernetes", "etcd", "kwok")
    print(f"building or reusing {' '.join(wanted)} (hack/build-tools.sh)", file=sys.stderr)
    result = subprocess.run(
        [str(HACK / "build-tools.sh"), "--print-path", *wanted],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"hack/build-tools.sh {' '.join(wanted)} failed with exit status {result.returncode}; "
            "the build output above says why (a Go toolchain and access to the Go module proxy "
            "are needed for a first build)",
            pytrace=False,
        )
    return tuple(Path(p) for p in result.stdout.strip().split(":") if p)


@pytest.fixture(scope="session")
def tools() -> Callable[..., tuple[Path, ...]]:
    """The tool_paths helper as a fixture: ``tools("buildkit")`` -> its bin directories."""
    return tool_paths


@pytest.fixture(scope="session")
def local_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[LocalCluster]]:
    """Factory: ``with local_cluster(name, **options) as cluster:`` starts a fresh
    LocalCluster of the pinned binaries in a new temporary directory named after ``name``
    (killed with this process should it die) and stops it on leaving. ``options`` go to
    LocalCluster (``storage_classes=...``). Each tier's session fixture makes its own:
    ``cluster`` (integration), ``chaos_cluster``, ``node_cluster``."""

    @contextlib.contextmanager
    def start(name: str, **options: Any) -> Iterator[LocalCluster]:
        directory = tmp_path_factory.mktemp(name, numbered=True)
        local = LocalCluster(
            directory, tool_paths("kubernetes", "etcd", "kwok"), die_with_parent=True, **options
        )
        local.start()
        try:
            yield local
            local.wait_namespaces_deleted()
        finally:
            local.stop()

    return start
