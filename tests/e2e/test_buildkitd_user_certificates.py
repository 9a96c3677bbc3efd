"""A real buildkitd (the rendered rootful one) takes a user's certificate signed the way
the operator signs a CertificateSigningRequest for buildkit.dev/client, without any shared
client Secret, and refuses it once it has expired, or once tls.revokedBefore dates after it."""

from __future__ import annotations

import base64
import copy
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

from buildkit_operator.pki import ensure_tls
from buildkit_operator.pki.client_csr import certificate_pem, load_client_issuer, sign_client

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
        ca=load_client_issuer(ca),
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


def revoked(rendered: Rendered, now: datetime) -> Rendered:
    """The same Builder's objects after a pass with tls.revokedBefore = ``now``: the
    operator's own ensure_tls over the Secrets it rendered (the server Secret is the one
    that changes)."""
    server = rendered.secret_data("-server-tls")
    cert = x509.load_pem_x509_certificate(server["cert.pem"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    sans = [str(n.value) for n in names]
    bundle = ensure_tls(
        {"ca": rendered.secret_data("-ca"), "server": server},
        name=rendered.name,
        server_sans=sans,
        now=now,
        revoked_before=now,
    )
    assert bundle.server.cert_pem == server["cert.pem"], "the daemons' certificate was re-issued"
    objects = copy.deepcopy(rendered.objects)
    for obj in objects:
        if obj.get("kind") != "Secret":
            continue
        role = obj["metadata"]["name"].removeprefix(f"{rendered.name}-")
        data = bundle.secret_data().get({"server-tls": "server"}.get(role, role))
        if data is not None:
            obj["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return Rendered(rendered.name, objects)


def test_a_revoked_user_certificate_is_refused_and_a_new_one_builds(
    daemon: Daemon, rendered: Rendered, daemons: DaemonPool, tmp_path: Path
) -> None:
    before = user_certs(rendered, tmp_path / "before", datetime.now(UTC), timedelta(hours=8))
    assert tls_handshake(daemon.address, before) == "ok"
    after_render = revoked(rendered, datetime.now(UTC) + timedelta(seconds=1))
    restarted = daemons.start(after_render)
    # Presented regardless (OpenSSL's client): the daemon's own check of the chain refuses.
    offered = tls_handshake(restarted.address, before)
    print(f"\ne2e: user certificate issued before tls.revokedBefore, presented: {offered}")
    assert offered != "ok" and (
        "unknown ca" in offered.lower() or "bad certificate" in offered.lower()
    ), offered
    errors = restarted.client(before).refusals(attempts=5)
    print(f"e2e: the same through buildctl: {Buildctl.telling(errors)}")
    # What the user does next (connect asks again) is signed by the new client CA, and
    # still verifies the daemon with the CA it had: a build goes through.
    later = datetime.now(UTC) + timedelta(seconds=2)
    fresh = user_certs(after_render, tmp_path / "after", later, timedelta(hours=8))
    assert fresh.ca.read_bytes() == before.ca.read_bytes()
    context = write_context(
        tmp_path / "context", "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": b"hi\n"}
    )
    out = tmp_path / "out.tar"
    build = restarted.client(fresh).build(context, f"type=oci,dest={out}")
    print(f"e2e: build with a certificate issued after the revocation took {build.seconds:.1f}s")
    assert oci_image_files(out)["/hello.txt"] == b"hi\n"
