"""``kubectl buildkit``: the command line as a kubectl plugin, run by the real (pinned) kubectl.

kubectl's plugin mechanism (kubectl.docs: "Extend kubectl with plugins"): any executable named
``kubectl-<name>`` on PATH runs as ``kubectl <name>``, with the words after the name as its
arguments and kubectl's environment (so ``KUBECONFIG``); ``kubectl plugin list`` lists them.
The package installs ``kubectl-buildkit`` beside ``buildkit-operator`` (pyproject.toml's
scripts), so a PATH holding the virtualenv's bin is all a user needs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from harness import OPERATOR_BIN, accepted_issuers, builder, issued_by_one_of, wait_phase

from localcluster.kubectl import Kubectl

VENV_BIN = OPERATOR_BIN.parent


def _kubectl(
    cluster: Any, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The cluster's kubectl as a user runs it: PATH with the virtualenv's bin and the
    system's directories only (no other kubectl-* plugin), the admin kubeconfig from
    KUBECONFIG."""
    base = {k: v for k, v in os.environ.items() if k not in ("PATH", "KUBECONFIG")}
    base.update(PATH=f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run(
        [str(cluster.kubectl_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def test_kubectl_lists_and_runs_the_buildkit_plugin(cluster: Any) -> None:
    listed = _kubectl(cluster, "plugin", "list")
    assert listed.returncode == 0, listed.stderr
    assert str(VENV_BIN / "kubectl-buildkit") in listed.stdout.splitlines()
    assert "warning" not in listed.stderr.lower(), listed.stderr

    helped = _kubectl(cluster, "buildkit", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: kubectl buildkit "), helped.stdout
    for command in ("connect", "wake"):
        assert command in helped.stdout
    connect_help = _kubectl(cluster, "buildkit", "connect", "--help")
    assert connect_help.stdout.startswith("usage: kubectl buildkit connect "), connect_help.stdout


def test_kubectl_buildkit_connect_writes_a_client_certificate(
    k: Kubectl, namespace: str, cluster: Any, tmp_path: Path
) -> None:
    from cryptography import x509

    k.apply(builder("plug", namespace, cache={"type": "ephemeral", "size": "1Gi"}))
    wait_phase(k, "plug", namespace, "Ready")
    out = tmp_path / "certs"
    proc = _kubectl(cluster, "buildkit", "connect", "plug", "-n", namespace, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"--addr tcp://plug.{namespace}.svc:1234" in proc.stdout
    assert f"--tlsservername plug.{namespace}.svc" in proc.stdout
    # The certificate is signed by a CA the daemons take clients of (the ca.pem of the
    # server Secret they mount), through the kubeconfig kubectl handed the plugin in
    # KUBECONFIG.
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert issued_by_one_of(cert, accepted_issuers(k, namespace, "plug"))
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600

    # A mistake reads under the name the user typed, with kubectl's exit status passed on.
    missing = _kubectl(cluster, "buildkit", "connect", "nope", "-n", namespace)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.startswith(
        f"kubectl buildkit: error: no Builder nope in namespace {namespace}"
    ), missing.stderr
    assert "Traceback" not in missing.stderr
