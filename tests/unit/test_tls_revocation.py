"""tls.revokedBefore: client certificates issued before it stop being accepted, without
the CA the daemons are verified with ever changing. Judged as buildkitd judges a client:
Go's crypto/tls verifies the client's chain against the CAs in its --tlscacert file (the
server Secret's ca.pem), with the client auth usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from buildkit_operator.pki import TLSBundle, ensure_tls
from buildkit_operator.pki.client_csr import load_client_issuer, sign_client

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
SANS = ["team-a", "team-a.ci.svc"]


def issue(existing: dict[str, dict[str, bytes]] | None = None, **kw: Any) -> TLSBundle:
    return ensure_tls(existing or {}, name="team-a", server_sans=SANS, **{"now": NOW, **kw})


def accepted(bundle: TLSBundle, cert_pem: bytes, at: datetime) -> bool:
    """Whether a daemon serving this bundle's server Secret takes the client certificate:
    signed directly by one of the CAs in its ca.pem, valid at ``at``, for client auth (what
    Go checks of a one-level chain; cryptography's own verifier also insists on a SAN, which
    Go does not, so it would refuse users' certificates buildkitd takes)."""
    roots = x509.load_pem_x509_certificates(bundle.secret_data()["server"]["ca.pem"])
    leaf = x509.load_pem_x509_certificate(cert_pem)
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        return False
    if not leaf.not_valid_before_utc <= at < leaf.not_valid_after_utc:
        return False
    for root in roots:
        try:
            leaf.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return root.not_valid_before_utc <= at < root.not_valid_after_utc
    return False


def user_certificate(bundle: TLSBundle, user: str, at: datetime) -> bytes:
    """Signed as the operator signs a CertificateSigningRequest for the Builder."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .sign(key, hashes.SHA256())
    )
    cert = sign_client(
        request.public_bytes(serialization.Encoding.PEM),
        username=user,
        groups=[],
        ca=load_client_issuer(bundle.secret_data()["ca"]),
        now=at,
        validity=timedelta(hours=8),
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_without_a_revocation_everything_is_accepted_and_kept() -> None:
    first = issue()
    alice = user_certificate(first, "alice", NOW)
    assert accepted(first, alice, NOW + timedelta(minutes=1))
    assert accepted(first, first.client.cert_pem, NOW + timedelta(minutes=1))
    again = issue(first.secret_data(), now=NOW + timedelta(days=3))
    assert again.issued == frozenset() and again.secret_data() == first.secret_data()


def test_a_revocation_refuses_what_was_issued_before_it_and_keeps_the_ca() -> None:
    first = issue()
    alice = user_certificate(first, "alice", NOW + timedelta(minutes=10))
    cut = NOW + timedelta(hours=1)
    later = cut + timedelta(seconds=30)
    after = issue(first.secret_data(), now=later, revoked_before=cut)

    # Clients verify the daemons exactly as before: same CA, same server certificate.
    assert after.ca == first.ca and after.server == first.server
    assert "ca" not in after.issued and "server" not in after.issued
    assert after.issued == {"client-ca", "client"}
    assert any("before tls.revokedBefore" in r for r in after.reasons), after.reasons
    # What was issued before the cut is refused: a user's certificate and the shared one.
    assert not accepted(after, alice, later)
    assert not accepted(after, first.client.cert_pem, later)
    # What is issued after it is accepted: the new shared certificate and a new request.
    assert accepted(after, after.client.cert_pem, later)
    assert accepted(after, user_certificate(after, "alice", later), later)
    # Only the client CA is a client issuer now.
    issuers = x509.load_pem_x509_certificates(after.secret_data()["server"]["ca.pem"])
    assert [c.subject for c in issuers] == [
        x509.load_pem_x509_certificate(after.client_ca.cert_pem).subject
    ]

    # Level-based: the next pass, the next day, keeps all of it.
    again = issue(after.secret_data(), now=later + timedelta(days=1), revoked_before=cut)
    assert again.issued == frozenset() and again.secret_data() == after.secret_data()


def test_a_revocation_set_for_later_changes_nothing_until_then() -> None:
    first = issue()
    cut = NOW + timedelta(hours=2)
    before = issue(first.secret_data(), now=NOW + timedelta(hours=1), revoked_before=cut)
    assert before.issued == frozenset() and before.revisit == cut
    assert before.secret_data() == first.secret_data()
    at = issue(first.secret_data(), now=cut, revoked_before=cut)
    assert at.issued == {"client-ca", "client"} and at.revisit is None


def test_a_revocation_older_than_the_material_changes_nothing() -> None:
    first = issue()
    old = issue(
        first.secret_data(), now=NOW + timedelta(days=1), revoked_before=NOW - timedelta(days=1)
    )
    assert old.issued == frozenset() and old.secret_data() == first.secret_data()


def test_material_of_the_previous_release_gets_a_client_ca_and_keeps_everything_else() -> None:
    """Before client CAs, the CA Secret held ca.pem and key.pem only, and the daemons
    accepted clients of the CA: those clients keep working."""
    first = issue()
    data = first.secret_data()
    data["ca"] = {k: v for k, v in data["ca"].items() if k in ("ca.pem", "key.pem")}
    data["server"]["ca.pem"] = first.ca.cert_pem
    upgraded = issue(data, now=NOW + timedelta(days=30))
    assert upgraded.issued == {"client-ca"}
    assert upgraded.ca == first.ca and upgraded.server == first.server
    assert upgraded.client == first.client
    assert accepted(upgraded, first.client.cert_pem, NOW + timedelta(days=30))
