"""Signing users' certificate requests with a Builder's CA (pki/client_csr.py) and what the
signer decides from a CertificateSigningRequest (reconcile/csr.py): pure, no cluster."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from buildkit_operator.pki import ensure_tls
from buildkit_operator.pki.client_csr import Refused, lifetime, load_issuer, sign_client
from buildkit_operator.reconcile.csr import access_review, pending, target, unsigned

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def request_pem(key: Any = None, cn: str = "someone-else") -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca() -> Any:
    bundle = ensure_tls({}, name="b", server_sans=["b"], now=NOW)
    return load_issuer(bundle.secret_data()["ca"])


def test_the_certificate_is_for_the_authenticated_identity_not_the_requested_subject(
    ca: Any,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_client(
        request_pem(key, cn="admin"),
        username="alice",
        groups=["devs", "system:authenticated"],
        ca=ca,
        now=NOW,
        validity=HOUR,
    )
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "devs",
        "system:authenticated",
    ]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == NOW + HOUR


def test_never_outlives_the_ca(ca: Any) -> None:
    cert = sign_client(
        request_pem(), username="a", groups=[], ca=ca, now=NOW, validity=timedelta(days=99999)
    )
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


@pytest.mark.parametrize(
    ("requested", "want"),
    [(None, 8 * HOUR), (3600, HOUR), (10 * 24 * 3600, 24 * HOUR), (1, timedelta(minutes=10))],
)
def test_expiration_seconds_is_a_hint_within_the_cap(
    requested: int | None, want: timedelta
) -> None:
    # Kubernetes: a signer may shorten spec.expirationSeconds; its minimum is 600.
    assert lifetime(requested, 8 * HOUR, 24 * HOUR) == want


@pytest.mark.parametrize(
    ("pem", "why"),
    [
        (b"not a request", "not a PEM CERTIFICATE REQUEST"),
        (request_pem(rsa.generate_private_key(65537, 1024)), "at least 2048 bits"),
        (request_pem(ec.generate_private_key(ec.SECP521R1())), "P-256 or P-384"),
    ],
)
def test_unusable_requests_are_refused_with_the_reason(ca: Any, pem: bytes, why: str) -> None:
    with pytest.raises(Refused, match=why):
        sign_client(pem, username="a", groups=[], ca=ca, now=NOW, validity=HOUR)


def test_no_user_name_no_certificate(ca: Any) -> None:
    with pytest.raises(Refused, match="no user name"):
        sign_client(request_pem(), username="", groups=[], ca=ca, now=NOW, validity=HOUR)


def csr(signer: str = "buildkit.dev/client", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "annotations": {"buildkit.dev/builder": "ci/b"}},
        "spec": {
            "signerName": signer,
            "request": base64.b64encode(request_pem()).decode(),
            "username": "system:serviceaccount:ci:job",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "uid": "u-1",
            "extra": {"authentication.kubernetes.io/pod-name": ["job-x"]},
        },
        "status": status,
    }


def test_only_our_signer_and_only_undecided_requests() -> None:
    assert pending(csr()) and not unsigned(csr())
    assert not pending(csr("kubernetes.io/kube-apiserver-client"))
    approved = csr(conditions=[{"type": "Approved", "status": "True"}])
    assert not pending(approved) and unsigned(approved)
    assert not unsigned(csr("example.com/x", conditions=[{"type": "Approved"}]))
    assert not unsigned({**approved, "status": {**approved["status"], "certificate": "eA=="}})
    assert not pending(csr(conditions=[{"type": "Denied", "status": "True"}]))


def test_the_review_asks_about_the_recorded_identity_and_the_builder() -> None:
    obj = csr()
    where = target(obj)
    assert not isinstance(where, str)
    spec = access_review(obj, where)["spec"]
    assert (spec["user"], spec["groups"], spec["uid"], spec["extra"]) == (
        obj["spec"]["username"],
        obj["spec"]["groups"],
        "u-1",
        obj["spec"]["extra"],
    )
    assert spec["resourceAttributes"] == {
        "group": "buildkit.dev",
        "resource": "builders",
        "verb": "use",
        "namespace": "ci",
        "name": "b",
    }


@pytest.mark.parametrize("value", [None, "b", "ci/", "/b", "a/b/c"])
def test_a_request_must_name_its_builder(value: str | None) -> None:
    obj = csr()
    obj["metadata"]["annotations"] = {} if value is None else {"buildkit.dev/builder": value}
    assert isinstance(target(obj), str)


def test_the_operator_refuses_a_default_lifetime_beyond_the_cap() -> None:
    from buildkit_operator.cli.main import UsageError, build_parser, lifetimes_from

    run = ["run", "--client-certificate-lifetime=2h", "--client-certificate-max-lifetime=4h"]
    lifetimes = lifetimes_from(build_parser().parse_args(run))
    assert (lifetimes.default, lifetimes.cap) == (2 * HOUR, 4 * HOUR)
    wrong = ["run", "--client-certificate-lifetime=8h", "--client-certificate-max-lifetime=1h"]
    with pytest.raises(UsageError, match="at most"):
        lifetimes_from(build_parser().parse_args(wrong))


def test_a_service_account_of_any_length_gets_a_certificate_naming_it_whole(ca: Any) -> None:
    """system:serviceaccount:<namespace>:<name> may be 300 characters long; a CN holds 64.
    Refusing them refused CI jobs of long namespaces (seen in the CI flow's test)."""
    base = "system:serviceaccount:" + "n" * 63 + ":"
    names = [base + "pipeline-" + "x" * 100, base + "pipeline-" + "x" * 99 + "y"]
    cns = []
    for user in names:
        cert = sign_client(request_pem(), username=user, groups=[], ca=ca, now=NOW, validity=HOUR)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(cn, str) and len(cn) <= 64 and user.startswith(cn.split("~")[0])
        cns.append(cn)
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [
            "urn:kubernetes:user:" + user
        ]
    assert cns[0] != cns[1], "two identities share a CN"
    short = sign_client(request_pem(), username="alice", groups=[], ca=ca, now=NOW, validity=HOUR)
    assert short.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
