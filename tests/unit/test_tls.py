"""Certificate issuing and reuse for a Builder's mutual TLS."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from buildkit_operator.pki import (
    CA_VALIDITY,
    LEAF_VALIDITY,
    RENEW_BEFORE,
    KeyPair,
    TLSBundle,
    ensure_tls,
    san_problems,
    server_not_after,
    validate_user_secret,
)
from fuzzing import fuzz_settings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NAME = "team-a"
DNS_SANS = [
    "team-a",
    "team-a.ci",
    "team-a.ci.svc",
    "team-a.ci.svc.cluster.local",
    "*.team-a.ci.svc.cluster.local",
]
IP_SANS = ["127.0.0.1", "::1"]
SANS = DNS_SANS + IP_SANS

Data = dict[str, dict[str, bytes]]


def issue(existing: Mapping[str, Mapping[str, Any]] | None = None, **kw: Any) -> TLSBundle:
    args: dict[str, Any] = {"name": NAME, "server_sans": SANS, "now": NOW, **kw}
    return ensure_tls(existing or {}, **args)


@pytest.fixture(scope="module")
def bundle() -> TLSBundle:
    return issue()


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def policy(b: TLSBundle, at: datetime = NOW) -> verification.PolicyBuilder:
    store = verification.Store([cert(b.ca.cert_pem)])
    return verification.PolicyBuilder().store(store).time(at)


def copy(b: TLSBundle) -> Data:
    return {role: dict(data) for role, data in b.secret_data().items()}


E = TypeVar("E", bound=x509.ExtensionType)


def ext(c: x509.Certificate, kind: type[E]) -> E:
    return c.extensions.get_extension_for_class(kind).value


def critical(c: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    return c.extensions.get_extension_for_class(kind).critical


# --- Issued chain -----------------------------------------------------------------------


def test_first_call_issues_all_three(bundle: TLSBundle) -> None:
    assert bundle.issued == {"ca", "client-ca", "server", "client"}
    assert len(bundle.reasons) == 4
    data = bundle.secret_data()
    assert set(data) == {"ca", "server", "client"}
    assert set(data["ca"]) == {"ca.pem", "key.pem", "client-ca.pem", "client-ca-key.pem"}
    assert set(data["server"]) == set(data["client"]) == {"ca.pem", "cert.pem", "key.pem"}
    assert data["client"]["ca.pem"] == bundle.ca.cert_pem
    assert data["server"]["ca.pem"] == bundle.client_ca.cert_pem + bundle.ca.cert_pem
    for pair in (bundle.ca, bundle.server, bundle.client):
        assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS8, unencrypted


@pytest.mark.parametrize("host", [*DNS_SANS[:-1], "buildkitd-0.team-a.ci.svc.cluster.local"])
def test_server_cert_verifies_for_service_names(bundle: TLSBundle, host: str) -> None:
    verifier = policy(bundle).build_server_verifier(x509.DNSName(host))
    chain = verifier.verify(cert(bundle.server.cert_pem), [])
    assert chain[-1] == cert(bundle.ca.cert_pem)


@pytest.mark.parametrize("ip", IP_SANS)
def test_server_cert_verifies_for_ip(bundle: TLSBundle, ip: str) -> None:
    target = x509.IPAddress(ipaddress.ip_address(ip))
    policy(bundle).build_server_verifier(target).verify(cert(bundle.server.cert_pem), [])


def test_server_cert_rejected_for_other_names(bundle: TLSBundle) -> None:
    for target in (
        x509.DNSName("team-b.ci.svc"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ):
        with pytest.raises(verification.VerificationError):
            policy(bundle).build_server_verifier(target).verify(cert(bundle.server.cert_pem), [])


def test_client_cert_verifies_as_client(bundle: TLSBundle) -> None:
    verified = policy(bundle).build_client_verifier().verify(cert(bundle.client.cert_pem), [])
    assert verified.chain[-1] == cert(bundle.ca.cert_pem)


def test_roles_are_not_interchangeable(bundle: TLSBundle) -> None:
    with pytest.raises(verification.VerificationError):
        policy(bundle).build_client_verifier().verify(cert(bundle.server.cert_pem), [])
    client_name = x509.DNSName(f"{NAME}-client")
    with pytest.raises(verification.VerificationError):
        policy(bundle).build_server_verifier(client_name).verify(cert(bundle.client.cert_pem), [])


def test_chain_fails_outside_validity(bundle: TLSBundle) -> None:
    late = NOW + LEAF_VALIDITY + timedelta(days=1)
    with pytest.raises(verification.VerificationError):
        policy(bundle, late).build_client_verifier().verify(cert(bundle.client.cert_pem), [])


def test_certificate_profile(bundle: TLSBundle) -> None:
    ca, server, client = (cert(p.cert_pem) for p in (bundle.ca, bundle.server, bundle.client))
    for c in (ca, server, client):
        public = c.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        assert isinstance(c.signature_hash_algorithm, hashes.SHA256)
        assert c.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert ca.serial_number != server.serial_number != client.serial_number

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "team-a BuildKit CA"
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "buildkit-operator"
    )
    assert ca.subject == ca.issuer == server.issuer == client.issuer
    assert ca.not_valid_after_utc == NOW + CA_VALIDITY
    assert critical(ca, x509.BasicConstraints)
    assert ext(ca, x509.BasicConstraints) == x509.BasicConstraints(ca=True, path_length=0)
    assert critical(ca, x509.KeyUsage)
    ku = ext(ca, x509.KeyUsage)
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ski = ext(ca, x509.SubjectKeyIdentifier)
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca_key)

    for c, cn, eku in (
        (server, "team-a", ExtendedKeyUsageOID.SERVER_AUTH),
        (client, "team-a-client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert c.not_valid_after_utc == NOW + LEAF_VALIDITY
        assert list(ext(c, x509.ExtendedKeyUsage)) == [eku]
        assert critical(c, x509.KeyUsage)
        ku = ext(c, x509.KeyUsage)
        assert ku.digital_signature and not ku.key_cert_sign
        bc = ext(c, x509.BasicConstraints)
        assert bc == x509.BasicConstraints(ca=False, path_length=None)
        assert ext(c, x509.AuthorityKeyIdentifier).key_identifier == ski.digest

    sans = ext(server, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == DNS_SANS
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip) for ip in IP_SANS]
    client_sans = ext(client, x509.SubjectAlternativeName)
    assert client_sans.get_values_for_type(x509.DNSName) == ["team-a-client"]


def test_not_after_and_server_not_after(bundle: TLSBundle) -> None:
    assert bundle.server.not_after == NOW + LEAF_VALIDITY
    assert bundle.server.not_after.tzinfo is not None
    assert server_not_after(bundle) == bundle.server.not_after
    assert bundle.ca.not_after == NOW + CA_VALIDITY


def test_long_names_are_truncated_in_common_names() -> None:
    long_name = ("a" * 60 + ".") * 4 + "b" * 9  # 253 characters, dots included
    assert len(long_name) == 253
    b = issue(name=long_name)
    for pair, suffix in ((b.ca, " BuildKit CA"), (b.server, ""), (b.client, "-client")):
        cn = cert(pair.cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert len(cn) <= 64
        assert isinstance(cn, str) and cn.endswith(suffix) and cn.startswith("a" * 50)
    policy(b).build_client_verifier().verify(cert(b.client.cert_pem), [])


def test_leaf_never_outlives_ca() -> None:
    short_ca = timedelta(days=100)
    b = issue(ca_validity=short_ca)
    assert b.server.not_after == b.client.not_after == b.ca.not_after == NOW + short_ca
    # ... and that cap does not make the leaves look due for renewal on the next call.
    again = issue(b.secret_data(), ca_validity=short_ca, now=NOW + timedelta(days=60))
    assert again.issued == frozenset()
    # Inside the CA's window everything is renewed, and the new leaves get a full year.
    late = issue(b.secret_data(), ca_validity=short_ca, now=NOW + timedelta(days=80))
    assert late.issued == {"ca", "client-ca", "server", "client"}


# --- Reuse and renewal ------------------------------------------------------------------


def test_reuse_is_byte_identical(bundle: TLSBundle) -> None:
    for later in (NOW, NOW + timedelta(days=200), NOW + LEAF_VALIDITY - RENEW_BEFORE):
        again = issue(bundle.secret_data(), now=later - timedelta(seconds=1))
        assert again.issued == frozenset()
        assert again.reasons == ()
        assert again.secret_data() == bundle.secret_data()
        assert again == replace(bundle, issued=frozenset(), reasons=())


def test_reuse_ignores_san_order_case_and_duplicates(bundle: TLSBundle) -> None:
    shuffled = [s.upper() for s in reversed(SANS)] + ["team-a", "0:0::1"]
    again = issue(bundle.secret_data(), server_sans=shuffled)
    assert again.issued == frozenset()


def test_reuse_accepts_string_values(bundle: TLSBundle) -> None:
    as_text = {
        role: {k: v.decode() for k, v in data.items()}
        for role, data in bundle.secret_data().items()
    }
    assert issue(as_text).issued == frozenset()


def test_leaves_inside_renewal_window_are_renewed(bundle: TLSBundle) -> None:
    later = bundle.server.not_after - timedelta(days=10)
    again = issue(bundle.secret_data(), now=later)
    assert again.issued == {"server", "client"}
    assert again.ca == bundle.ca
    assert any(
        r.startswith("server certificate expires") and "30-day renewal window" in r
        for r in again.reasons
    )
    assert again.server.not_after == later + LEAF_VALIDITY
    policy(again, later).build_client_verifier().verify(cert(again.client.cert_pem), [])
    # The renewed leaves are then stable.
    assert issue(again.secret_data(), now=later + timedelta(days=1)).issued == frozenset()


def test_ca_inside_renewal_window_renews_everything(bundle: TLSBundle) -> None:
    later = bundle.ca.not_after - timedelta(days=5)
    again = issue(bundle.secret_data(), now=later)
    assert again.issued == {"ca", "client-ca", "server", "client"}
    assert again.ca.cert_pem != bundle.ca.cert_pem
    assert any("CA certificate expires" in r and "renewal window" in r for r in again.reasons)
    assert any("under the new CA" in r for r in again.reasons)
    policy(again, later).build_client_verifier().verify(cert(again.client.cert_pem), [])


def test_expired_leaves_are_reissued(bundle: TLSBundle) -> None:
    later = bundle.server.not_after + timedelta(days=3)
    again = issue(bundle.secret_data(), now=later)
    assert again.issued == {"server", "client"}
    assert any(r.startswith("server certificate expired on") for r in again.reasons)
    assert any(r.startswith("client certificate expired on") for r in again.reasons)


def test_expired_ca_renews_everything(bundle: TLSBundle) -> None:
    again = issue(bundle.secret_data(), now=bundle.ca.not_after + timedelta(days=1))
    assert again.issued == {"ca", "client-ca", "server", "client"}
    assert any("CA certificate expired" in r for r in again.reasons)


def test_material_from_the_future_is_reissued(bundle: TLSBundle) -> None:
    again = issue(bundle.secret_data(), now=NOW - timedelta(hours=1))
    assert again.issued == {"ca", "client-ca", "server", "client"}
    assert any("not valid before" in r for r in again.reasons)


def test_custom_renewal_window_in_reason(bundle: TLSBundle) -> None:
    window = timedelta(days=90)
    again = issue(bundle.secret_data(), now=NOW + timedelta(days=300), renew_before=window)
    assert again.issued == {"server", "client"}
    assert any("90-day renewal window" in r for r in again.reasons)


# --- SAN changes ------------------------------------------------------------------------


def test_added_san_reissues_server_only(bundle: TLSBundle) -> None:
    again = issue(bundle.secret_data(), server_sans=[*SANS, "builds.example.com", "10.1.2.3"])
    assert again.issued == {"server"}
    assert again.ca == bundle.ca and again.client == bundle.client
    assert "server certificate lacks SAN builds.example.com" in again.reasons
    assert "server certificate lacks SAN 10.1.2.3" in again.reasons
    target = x509.DNSName("builds.example.com")
    policy(again).build_server_verifier(target).verify(cert(again.server.cert_pem), [])


def test_removed_san_reissues_server_only(bundle: TLSBundle) -> None:
    again = issue(bundle.secret_data(), server_sans=DNS_SANS)
    assert again.issued == {"server"}
    assert any("127.0.0.1" in r and "no longer requested" in r for r in again.reasons)
    san = ext(cert(again.server.cert_pem), x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.IPAddress) == []


# --- Bad existing data ------------------------------------------------------------------


def _mangle(how: str, value: bytes) -> bytes | None:
    return {
        "garbage": b"\x00\xffnot a pem at all",
        "truncated": value[: len(value) // 2],
        "empty": b"",
        "missing": None,
        "wrong-pem-type": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    }[how]


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "missing", "wrong-pem-type"])
@pytest.mark.parametrize(
    ("role", "key"),
    [
        ("ca", "ca.pem"),
        ("ca", "key.pem"),
        ("server", "cert.pem"),
        ("server", "key.pem"),
        ("client", "cert.pem"),
        ("client", "key.pem"),
    ],
)
def test_bad_existing_data_is_reissued_with_reason(
    bundle: TLSBundle, role: str, key: str, how: str
) -> None:
    data = copy(bundle)
    mangled = _mangle(how, data[role][key])
    if mangled is None:
        del data[role][key]
    else:
        data[role][key] = mangled
    again = issue(data)
    # The client CA is kept: it stands apart from the CA, so only a revocation replaces it.
    expected = {"ca", "server", "client"} if role == "ca" else {role}
    assert again.issued == expected
    label = "CA" if role == "ca" else role
    assert any(label in r for r in again.reasons), again.reasons
    policy(again).build_client_verifier().verify(cert(again.client.cert_pem), [])


@pytest.mark.parametrize("role", ["ca", "server", "client"])
def test_missing_role_is_issued(bundle: TLSBundle, role: str) -> None:
    data = copy(bundle)
    del data[role]
    again = issue(data)
    assert role in again.issued
    assert f"no {'CA' if role == 'ca' else role} certificate yet" in again.reasons


def test_non_mapping_existing_values_are_ignored(bundle: TLSBundle) -> None:
    data: dict[str, object] = {"ca": None, "server": "junk", "client": {"cert.pem": 3}}
    again = issue(data)  # type: ignore[arg-type]
    assert again.issued == {"ca", "client-ca", "server", "client"}


def test_mismatched_key_is_reissued(bundle: TLSBundle) -> None:
    data = copy(bundle)
    data["server"]["key.pem"] = bundle.client.key_pem
    again = issue(data)
    assert again.issued == {"server"}
    assert "server key does not match the server certificate" in again.reasons

    data = copy(bundle)
    data["ca"]["key.pem"] = bundle.server.key_pem
    again = issue(data)
    assert again.issued == {"ca", "server", "client"}
    assert "CA key does not match the CA certificate" in again.reasons


def test_leaf_from_a_same_named_ca_is_reissued(bundle: TLSBundle) -> None:
    # Same Builder name, so the issuer name matches: only the signature tells them apart.
    other = issue()
    assert cert(other.server.cert_pem).issuer == cert(bundle.ca.cert_pem).subject
    data = copy(bundle)
    data["server"] = dict(other.secret_data()["server"])
    data["server"]["ca.pem"] = bundle.ca.cert_pem
    again = issue(data)
    assert again.issued == {"server"}
    assert "server certificate is not signed by the current CA" in again.reasons
    policy(again).build_server_verifier(x509.DNSName("team-a")).verify(
        cert(again.server.cert_pem), []
    )


def test_leaf_from_another_ca_is_reissued(bundle: TLSBundle) -> None:
    other = issue(name="team-b")
    data = copy(bundle)
    data["client"] = dict(other.secret_data()["client"])
    again = issue(data)
    assert again.issued == {"client"}
    assert "client certificate is not signed by a CA the daemons accept clients of" in again.reasons


def test_swapped_leaves_are_reissued(bundle: TLSBundle) -> None:
    data = copy(bundle)
    data["server"], data["client"] = data["client"], data["server"]
    again = issue(data)
    assert again.issued == {"server", "client"}
    assert "server certificate lacks the serverAuth extended key usage" in again.reasons
    assert "client certificate lacks the clientAuth extended key usage" in again.reasons


def test_leaf_in_ca_slot_is_reissued(bundle: TLSBundle) -> None:
    data = copy(bundle)
    data["ca"] = {"ca.pem": bundle.server.cert_pem, "key.pem": bundle.server.key_pem}
    again = issue(data)
    assert again.issued == {"ca", "client-ca", "server", "client"}
    assert "CA certificate is not a CA certificate" in again.reasons


@fuzz_settings(25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(["ca", "server", "client", "other"]),
        st.dictionaries(
            st.sampled_from(["ca.pem", "cert.pem", "key.pem"]),
            st.binary(max_size=64)
            | st.sampled_from(
                [
                    b"-----BEGIN CERTIFICATE-----\n",
                    b"-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n",
                ]
            ),
        ),
    )
)
def test_arbitrary_existing_data_never_raises(existing: Data) -> None:
    b = issue(existing)
    assert b.issued == {"ca", "client-ca", "server", "client"}
    policy(b).build_client_verifier().verify(cert(b.client.cert_pem), [])


# --- Arguments, repr --------------------------------------------------------------------


def test_repr_never_shows_private_keys(bundle: TLSBundle) -> None:
    for obj in (bundle, bundle.ca, bundle.server, bundle.client):
        assert "PRIVATE KEY" not in repr(obj)
        assert "PRIVATE KEY" not in str(obj)
    assert "PRIVATE KEY" not in repr(KeyPair(cert_pem=b"x", key_pem=b"-----BEGIN PRIVATE KEY"))


@pytest.mark.parametrize(
    "kw",
    [
        {"now": datetime(2026, 1, 1)},
        {"server_sans": []},
        {"server_sans": ["ok.example", "bad name"]},
        {"server_sans": ["fe80::1%eth0"]},
        {"name": ""},
        {"renew_before": LEAF_VALIDITY},
    ],
)
def test_bad_arguments_raise_value_error(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        issue(**kw)


def test_san_problems() -> None:
    assert san_problems(SANS) == []
    assert san_problems(["*.svc.ns.svc", "2001:db8::1", "10.0.0.1", "a_b.example"]) == []
    problems = san_problems(["ok", "bad name", "", "x" * 64 + ".example", "ü.example", "a..b"])
    assert len(problems) == 5
    assert "'bad name'" in problems[0]


def test_other_timezones_are_accepted(bundle: TLSBundle) -> None:
    from datetime import timezone

    elsewhere = NOW.astimezone(timezone(timedelta(hours=-7)))
    assert issue(bundle.secret_data(), now=elsewhere).issued == frozenset()


# --- User-supplied Secret (tls.mode: secret) --------------------------------------------


def _ca_cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = x509.CertificateBuilder()
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return (
        builder.subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def test_user_secret_good(bundle: TLSBundle) -> None:
    assert validate_user_secret(bundle.secret_data()["server"], now=NOW) == []


SERVER_AUTH_MISSING = (
    "cert.pem is not a server certificate (its extended key usage does not include serverAuth)"
)


def test_a_client_certificate_is_not_a_server_secret(bundle: TLSBundle) -> None:
    """Another Builder's client Secret has every key a server Secret has: it is refused for
    what it is (RFC 5280's serverAuth purpose), not for its name."""
    assert validate_user_secret(bundle.secret_data()["client"], now=NOW) == [SERVER_AUTH_MISSING]


@pytest.mark.parametrize(
    ("usage", "problems"),
    [
        ([ExtendedKeyUsageOID.SERVER_AUTH], []),
        ([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], []),
        ([ExtendedKeyUsageOID.CLIENT_AUTH], [SERVER_AUTH_MISSING]),
        ([ExtendedKeyUsageOID.CODE_SIGNING], [SERVER_AUTH_MISSING]),
        (None, [SERVER_AUTH_MISSING]),
    ],
    ids=["server", "both", "client", "code-signing", "no-extension"],
)
def test_only_a_server_certificate_is_served(
    usage: list[x509.ObjectIdentifier] | None, problems: list[str]
) -> None:
    root_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    root = _ca_cert("root", root_key, None)
    leaf = _ca_cert("leaf", leaf_key, (root, root_key), usage)
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    data = {"ca.pem": _pem(root), "cert.pem": _pem(leaf), "key.pem": key_pem}
    assert validate_user_secret(data, now=NOW) == problems


def test_user_secret_with_intermediate_and_ca_bundle(bundle: TLSBundle) -> None:
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _ca_cert("root", root_key, None)
    mid = _ca_cert("intermediate", mid_key, (root, root_key))
    leaf = _ca_cert("leaf", leaf_key, (mid, mid_key), [ExtendedKeyUsageOID.SERVER_AUTH])
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    data = {
        "ca.pem": bundle.ca.cert_pem + _pem(root),
        "cert.pem": _pem(leaf) + _pem(mid),
        "key.pem": key_pem,
    }
    assert validate_user_secret(data, now=NOW) == []
    without_mid = {**data, "cert.pem": _pem(leaf)}
    assert validate_user_secret(without_mid, now=NOW) == [
        "cert.pem is not signed by a CA in ca.pem"
    ]


def test_user_secret_missing_keys() -> None:
    assert validate_user_secret({}, now=NOW) == [
        "missing key ca.pem",
        "missing key cert.pem",
        "missing key key.pem",
    ]


def test_user_secret_unparsable(bundle: TLSBundle) -> None:
    good = bundle.secret_data()["server"]
    problems = validate_user_secret(
        {"ca.pem": b"junk", "cert.pem": good["cert.pem"][:100], "key.pem": b"\x00"}, now=NOW
    )
    assert problems == [
        "ca.pem is not a readable PEM certificate",
        "cert.pem is not a readable PEM certificate",
        "key.pem is not a readable unencrypted PEM private key",
    ]


def test_user_secret_key_mismatch(bundle: TLSBundle) -> None:
    data = {**bundle.secret_data()["server"], "key.pem": bundle.client.key_pem}
    assert validate_user_secret(data, now=NOW) == [
        "key.pem does not match the certificate in cert.pem"
    ]


def test_user_secret_wrong_ca(bundle: TLSBundle) -> None:
    other = issue()  # same CA name, different key
    data = {**bundle.secret_data()["server"], "ca.pem": other.ca.cert_pem}
    assert validate_user_secret(data, now=NOW) == ["cert.pem is not signed by a CA in ca.pem"]


def test_user_secret_expired_and_not_yet_valid(bundle: TLSBundle) -> None:
    data = bundle.secret_data()["server"]
    expired = validate_user_secret(data, now=NOW + LEAF_VALIDITY)
    assert len(expired) == 1 and expired[0].startswith("cert.pem expired on 2027-01-01")
    early = validate_user_secret(data, now=NOW - timedelta(days=1))
    assert len(early) == 1 and early[0].startswith("cert.pem is not valid before")


def test_user_secret_several_problems_at_once(bundle: TLSBundle) -> None:
    data = {"cert.pem": bundle.server.cert_pem, "key.pem": bundle.client.key_pem}
    problems = validate_user_secret(data, now=NOW + timedelta(days=400))
    assert problems[0] == "missing key ca.pem"
    assert "key.pem does not match the certificate in cert.pem" in problems
    assert any(p.startswith("cert.pem expired on") for p in problems)


def test_user_secret_defaults_to_current_time(bundle: TLSBundle) -> None:
    # The bundle was issued for 2026; whatever today is, the call must not raise.
    assert isinstance(validate_user_secret(bundle.secret_data()["server"]), list)
