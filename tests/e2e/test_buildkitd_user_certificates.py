"""A real buildkitd (the rendered rootful one) takes a user's certificate signed the way
the operator signs a CertificateSigningRequest for buildkit.dev/client, without any shared
client Secret, and refuses it once it has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from buildkit_e2e import (
    Buildctl,
    ClientCerts,
    Daemon,
    DaemonPool,
    RenderBuilders,
    Rendered,
    oci_image_files,
    tls_handshake,
    write_context,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from buildkit_operator.pki.client_csr import certificate_pem, load_issuer, sign_client

pytestmark = pytest.mark.e2e

CLOSED = ("write: broken pipe", "connection reset by peer")


@pytest.fixture(scope="module")
def rendered(render_builders: RenderBuilders) -> Rendered:
    spec = {
        "rootless": False,
        "cache": {"type": "ephemeral", "size": "5Gi"},
        "tls": {"sharedClientCertificate": False},
    }
    return render_builders({"users": spec})["users"]


@pytest.fixture(scope="module")
def daemon(rendered: Rendered, daemons: DaemonPool) -> Daemon:
    return daemons.start(rendered)


def user_certs(rendered: Rendered, into: Path, now: datetime, lifetime: timedelta) -> ClientCerts:
    """A key made here, a request as `connect` makes one, signed as the operator signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "buildkit-client")]))
        .sign(key, hashes.SHA256())
    )
    ca = rendered.secret_data("-ca")
    cert = sign_client(
        request.public_bytes(serialization.Encoding.PEM),
        username="alice",
        groups=["devs"],
        ca=load_issuer(ca),
        now=now,
        validity=lifetime,
    )
    into.mkdir(parents=True, exist_ok=True)
    files = {
        "ca.pem": ca["ca.pem"],
        "cert.pem": certificate_pem(cert),
        "key.pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for name, data in files.items():
        (into / name).write_bytes(data)
        (into / name).chmod(0o600)
    return ClientCerts(ca=into / "ca.pem", cert=into / "cert.pem", key=into / "key.pem")


def test_no_shared_client_secret_is_rendered(rendered: Rendered) -> None:
    names = {s["metadata"]["name"] for s in rendered.of_kind("Secret")}
    assert names == {"users-ca", "users-server-tls"}, names


def test_a_user_certificate_builds(daemon: Daemon, rendered: Rendered, tmp_path: Path) -> None:
    certs = user_certs(rendered, tmp_path / "alice", datetime.now(UTC), timedelta(hours=8))
    context = write_context(
        tmp_path / "context", "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": b"hi\n"}
    )
    out = tmp_path / "out.tar"
    build = daemon.client(certs).build(context, f"type=oci,dest={out}")
    print(f"\ne2e: build with a user's certificate took {build.seconds:.1f}s")
    assert oci_image_files(out)["/hello.txt"] == b"hi\n"


def test_an_expired_user_certificate_is_refused(
    daemon: Daemon, rendered: Rendered, tmp_path: Path
) -> None:
    expired = user_certs(
        rendered, tmp_path / "old", datetime.now(UTC) - timedelta(hours=3), timedelta(hours=1)
    )
    errors = daemon.client(expired).refusals(attempts=10)
    print(f"\ne2e: expired user certificate: {Buildctl.telling(errors)}")
    for error in errors:
        assert (
            "expired" in error or "bad certificate" in error or any(c in error for c in CLOSED)
        ), error
    # Presented regardless (OpenSSL's client), the server's own check refuses it.
    offered = tls_handshake(daemon.address, expired)
    print(f"e2e: expired user certificate, presented: {offered}")
    assert offered != "ok" and "expired" in offered.lower(), offered
    # A fresh one from the same CA still works: it is the expiry that was refused.
    fresh = user_certs(rendered, tmp_path / "new", datetime.now(UTC), timedelta(hours=1))
    assert tls_handshake(daemon.address, fresh) == "ok"
