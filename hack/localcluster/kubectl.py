"""The one kubectl helper of every tier (the command line, integration, chaos and node tests):
a given kubectl binary with a kubeconfig, raising KubectlError when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .api import ClusterError

# Long enough for `apply` of the CRDs or a `delete --wait` on a busy machine.
TIMEOUT = 120


class KubectlError(ClusterError):
    """kubectl exited non-zero; ``stdout`` and ``stderr`` are what it printed."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr


class Kubectl:
    """Runs a given kubectl binary with a kubeconfig (and, if given, a cache directory).

    ``k(*args)`` returns stdout and raises KubectlError on a non-zero exit; with
    ``check=False`` it returns stdout and stderr together whatever the exit (for callers
    that look for a refusal's message). ``run`` returns the completed process.
    """

    def __init__(self, binary: Path, kubeconfig: Path, cache_dir: Path | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.env["KUBECONFIG"] = str(kubeconfig)
        if cache_dir is not None:
            self.env["KUBECACHEDIR"] = str(cache_dir)

    def run(
        self, *args: str, input: str | None = None, timeout: float = TIMEOUT
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

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = TIMEOUT, check: bool = True
    ) -> str:
        """Run kubectl and return its stdout; raise KubectlError (with stderr) on failure.
        With ``check=False``: return stdout and stderr, never raise."""
        result = self.run(*args, input=input, timeout=timeout)
        if not check:
            return result.stdout + result.stderr
        if result.returncode != 0:
            raise KubectlError(args, result)
        return result.stdout

    def json(self, *args: str, input: str | None = None, timeout: float = TIMEOUT) -> Any:
        """Run kubectl with ``-o json`` and parse the output."""
        return json.loads(self(*args, "-o", "json", input=input, timeout=timeout))

    def apply(self, obj: dict[str, Any] | str) -> str:
        """``kubectl apply -f -`` of an object (or YAML text)."""
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self("apply", "-f", "-", input=text)

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until CRD ``crd`` is Established. `kubectl wait --for=condition=Established`
        fails at once (``.status.conditions accessor error``) when it reads a CRD the
        API server has not given conditions yet, so the condition is polled instead."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            result = self.run("get", f"crd/{crd}", "-o", "json")
            if result.returncode == 0:
                conditions = (json.loads(result.stdout).get("status") or {}).get("conditions")
                last = conditions
                if any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in conditions or []
                ):
                    return
            else:
                last = result.stderr.strip()
            time.sleep(0.2)
        raise ClusterError(f"CRD {crd} not Established within {timeout:.0f}s: {last}")
