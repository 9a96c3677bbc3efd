"""The pinned helm (hack/tools/helm) as the tests run it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


class Helm:
    """The pinned helm (hack/tools/helm) against the test cluster, with a private home."""

    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def __call__(self, *args: str, timeout: float = 240) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}"
            )
        return result.stdout


def helm_binary(tools: Callable[..., tuple[Path, ...]]) -> Path:
    for directory in tools("helm"):
        if (directory / "helm").exists():
            return directory / "helm"
    pytest.fail("hack/build-tools.sh helm produced no helm binary", pytrace=False)
