"""The pinned kubectl with a cluster's kubeconfig (Kubectl), raising KubectlError."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .api import ClusterError


class KubectlError(ClusterError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr


class Kubectl:
    """Runs a given kubectl binary with a kubeconfig; ``__call__`` raises on a non-zero exit."""

    def __init__(self, binary: Path, kubeconfig: Path, cache_dir: Path | None = None) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.env["KUBECONFIG"] = str(kubeconfig)
        if cache_dir is not None:
            self.env["KUBECACHEDIR"] = str(cache_dir)

    def run(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl and return the completed process, whatever its exit status."""
        return subprocess.run(
            [str(self.binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """Run kubectl and return its stdout; raise KubectlError (with stderr) on failure."""
        result = self.run(*args, input=input, timeout=timeout)
        if result.returncode != 0:
            raise KubectlError(args, result)
        return result.stdout

    def json(self, *args: str, input: str | None = None, timeout: float = 60) -> Any:
        """Run kubectl with ``-o json`` and parse the output."""
        return json.loads(self(*args, "-o", "json", input=input, timeout=timeout))
