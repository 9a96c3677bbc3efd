"""A CI job in the cluster gets a certificate of its own identity: `buildkit-operator
connect` run in a pod, with no kubeconfig, uses the pod's ServiceAccount (its token, CA and
namespace mounted where the kubelet mounts them), and the operator signs a certificate for
`system:serviceaccount:<ns>:<name>`. The pod is imitated as far as the process can tell: a
private mount namespace puts a real ServiceAccount token of the real API server at
/var/run/secrets/kubernetes.io/serviceaccount, and the kubelet's environment variables
point at the API server; nothing outside that namespace is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from harness import accepted_issuers, builder, issued_by_one_of, wait_phase
from test_client_certificates import user_roles  # noqa: F401  (a fixture)

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OPERATOR_BIN = REPO / ".venv" / "bin" / "buildkit-operator"
MOUNTED = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run is /run

IN_A_POD = f"""
set -e
mount -t tmpfs tmpfs /run
mkdir -p {MOUNTED}
mount --bind "$SA_FILES" {MOUNTED}
exec "$OPERATOR" connect "$BUILDER" -o "$OUT"
"""


def test_a_ci_job_in_the_cluster_connects_as_its_service_account(
    k: Kubectl,
    cluster: Any,
    namespace: str,
    tmp_path: Path,
    user_roles: None,  # noqa: F811
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("imitating a pod's mounts needs root and unshare(1)")
    k.apply(builder("ci", namespace, cache={"type": "ephemeral"}))
    wait_phase(k, "ci", namespace, "Ready")
    # What an admin grants a pipeline: the two roles of examples/builder-user-rbac.yaml.
    k("create", "serviceaccount", "pipeline", "-n", namespace)
    k(
        "create", "rolebinding", "pipeline-builds", "-n", namespace,
        "--clusterrole=buildkit-builder-user", f"--serviceaccount={namespace}:pipeline",
    )  # fmt: skip
    k(
        "create", "clusterrolebinding", f"pipeline-csr-{namespace}",
        "--clusterrole=buildkit-client-certificate-requester",
        f"--serviceaccount={namespace}:pipeline",
    )  # fmt: skip
    try:
        files = tmp_path / "sa"
        files.mkdir()
        token = k("create", "token", "pipeline", "-n", namespace, "--duration=10m").strip()
        (files / "token").write_text(token)
        shutil.copy(cluster.pki / "ca.crt", files / "ca.crt")
        (files / "namespace").write_text(namespace)
        out = tmp_path / "certs"
        host, port = cluster.server.removeprefix("https://").rsplit(":", 1)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),  # no ~/.kube/config, no $KUBECONFIG
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "SA_FILES": str(files),
            "OPERATOR": str(OPERATOR_BIN),
            "BUILDER": "ci",
            "OUT": str(out),
        }
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_A_POD],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # The namespace came from the pod's files (no -n), the identity from its token.
        assert f"tcp://ci.{namespace}.svc:1234" in proc.stdout, proc.stdout
        cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        # The identity whole in the URI name (a CN holds 64 characters, and a
        # ServiceAccount's user name may be longer, as this one is), and as much as fits in CN.
        identity = f"system:serviceaccount:{namespace}:pipeline"
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = names.get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [f"urn:kubernetes:user:{identity}"], uris
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(cn, str) and identity.startswith(cn.split("~")[0]), cn
        groups = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
        # Groups as O, those an O holds (64 characters; this namespace's group is longer).
        assert "system:serviceaccounts" in groups
        in_namespace = f"system:serviceaccounts:{namespace}"
        assert (in_namespace in groups) == (len(in_namespace) <= 64), groups
        assert issued_by_one_of(cert, accepted_issuers(k, namespace, "ci")), (
            "not signed by a CA the daemons take clients of"
        )
        # Nothing of the imitation outlives the process: the host has no such mount.
        assert MOUNTED not in Path("/proc/self/mounts").read_text()
    finally:
        k("delete", "clusterrolebinding", f"pipeline-csr-{namespace}", "--ignore-not-found")
