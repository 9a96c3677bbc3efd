"""Signing a user's certificate signing request with a Builder's CA (the operator as a
Kubernetes CSR signer). Pure: the request, the identity the API server recorded, the CA and
the clock come in as arguments.

Only the request's public key is taken from the user: the subject is the identity the API
server authenticated (CN = the user name, O = the groups), never what the request claims,
so a request cannot name someone else. The private key stays with the user; nothing here
sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .bundle import CA_PEM, CLIENT_CA_PEM, client_ca_data
from .issue import Issuer, _sign_hash, leaf_key_usage
from .pem import load_cert_and_key, pair
from .validity import CLOCK_SKEW, utc

# buildkitd speaks TLS through Go's crypto/tls: these are the keys it verifies well.
_RSA_MIN_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1)


class Refused(ValueError):
    """Why a request is not signed; the text becomes the CSR's Denied or Failed message."""


def load_issuer(data: dict[str, bytes]) -> Issuer:
    """The Builder's CA from its Secret's data, or Refused when it cannot sign."""
    return _issuer(data, "CA")


def load_client_issuer(data: dict[str, bytes]) -> Issuer:
    """The Builder's client CA (the one users' certificates are signed with, replaced by
    ``tls.revokedBefore``) from its CA Secret's data, or Refused when it cannot sign."""
    if not data.get(CLIENT_CA_PEM):
        raise Refused("the Builder has no client CA yet; ask again once it is Ready")
    return _issuer(client_ca_data(data), "client CA")


def _issuer(data: Mapping[str, bytes], label: str) -> Issuer:
    loaded = load_cert_and_key(data, CA_PEM, label)
    if isinstance(loaded, str):
        raise Refused(loaded)
    cert, key = loaded
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise Refused(f"the {label} key cannot sign certificates")
    return Issuer(cert, key, pair(cert, key))


def _public_key(request_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        request = x509.load_pem_x509_csr(request_pem)
    except Exception:
        raise Refused("spec.request is not a PEM CERTIFICATE REQUEST") from None
    if not request.is_signature_valid:
        raise Refused("the request's signature does not match its public key")
    key = request.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _RSA_MIN_BITS:
            raise Refused(f"an RSA key must have at least {_RSA_MIN_BITS} bits")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise Refused("an EC key must be on P-256 or P-384")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise Refused("the key must be ECDSA (P-256, P-384), RSA or Ed25519")
    return request


# The full identity, whatever its length, as a URI name: a ServiceAccount's user name
# (system:serviceaccount:<namespace>:<name>) can be far longer than a CN holds.
USER_URI_PREFIX = "urn:kubernetes:user:"
_CN_MAX = 64  # ub-common-name (RFC 5280)


def common_name_for(username: str) -> str:
    """The user name when a CN holds it; else its start and a digest of the whole, so that
    two long names never share a CN (the URI name carries the full one)."""
    if len(username) <= _CN_MAX:
        return username
    digest = hashlib.sha256(username.encode()).hexdigest()[:12]
    return f"{username[: _CN_MAX - len(digest) - 1]}~{digest}"


def subject_for(username: str, groups: Sequence[str]) -> x509.Name:
    """CN = the user name, one O per group, as Kubernetes' own client certificates."""
    if not username:
        raise Refused("the request has no user name")
    # A group name too long for an O attribute (ub-organization-name) is left out rather
    # than refusing the user: groups only describe, the review already decided.
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups if 0 < len(g) <= 64
    ]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name_for(username)))
    return x509.Name(attributes)


def lifetime(requested_seconds: int | None, default: timedelta, cap: timedelta) -> timedelta:
    """spec.expirationSeconds is a hint: honoured when shorter than the cap, else the cap;
    absent, the default (itself within the cap)."""
    if requested_seconds is None:
        return min(default, cap)
    return min(timedelta(seconds=max(int(requested_seconds), 600)), cap)


def sign_client(
    request_pem: bytes,
    *,
    username: str,
    groups: Sequence[str],
    ca: Issuer,
    now: datetime,
    validity: timedelta,
) -> x509.Certificate:
    """A client certificate for ``username`` over the request's public key, signed by
    ``ca``, valid from ``now`` (backdated by the clock skew) for ``validity``, never beyond
    the CA. Raises Refused with the reason otherwise."""
    now = utc(now)
    request = _public_key(request_pem)
    subject = subject_for(username, groups)
    not_after = min(now + validity, ca.cert.not_valid_after_utc)
    if not_after <= now:
        raise Refused("the Builder's CA has expired")
    key = request.public_key()
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            leaf_key_usage(key_encipherment=isinstance(key, rsa.RSAPublicKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(USER_URI_PREFIX + quote(username, safe=":@"))]
            ),
            critical=False,
        )
        .sign(ca.key, _sign_hash(ca.key))
    )
    return cert


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


__all__ = [
    "Refused",
    "certificate_pem",
    "lifetime",
    "load_client_issuer",
    "load_issuer",
    "sign_client",
    "subject_for",
]
