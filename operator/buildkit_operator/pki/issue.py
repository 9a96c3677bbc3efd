"""Issuing: a CA per Builder, and server and client leaves signed by it (ECDSA P-256,
backdated against clock skew, never outliving their CA)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .bundle import KeyPair, LeafRole
from .pem import pair
from .sans import parse_san
from .validity import CLOCK_SKEW

ORGANIZATION = "buildkit-operator"
CA_CN_SUFFIX = " BuildKit CA"
CLIENT_CA_CN_SUFFIX = " BuildKit client CA"
CLIENT_CN_SUFFIX = "-client"
_CN_MAX = 64  # ub-common-name (RFC 5280)
# The client CN doubles as a DNS SAN, so it must also fit a 63-character DNS label.
_CLIENT_CN_MAX = 63

LEAF_EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _cn(name: str, suffix: str = "", limit: int = _CN_MAX) -> str:
    """``name + suffix`` cut to the ``limit`` characters a CN may hold, keeping the suffix."""
    head = name[: limit - len(suffix)]
    if suffix and len(head) < len(name):
        # Keeps "<name>-client" a well-formed DNS name when the cut lands after a dot.
        head = head.rstrip(".-")
    return head + suffix


def _client_sans(common_name: str) -> list[x509.GeneralName]:
    """The client CN as a DNS SAN: verifiers following RFC 6125/CABF insist on a SAN."""
    try:
        san = parse_san(common_name)
    except ValueError:
        return []
    return [san] if isinstance(san, x509.DNSName) else []


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _sign_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


@dataclass(frozen=True)
class Material:
    """A parsed certificate and key, with the canonical PEM to write back."""

    cert: x509.Certificate
    key: PrivateKeyTypes
    pair: KeyPair


@dataclass(frozen=True)
class Issuer:
    """A CA certificate with a key able to sign certificates."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    pair: KeyPair


def material(cert: x509.Certificate, key: PrivateKeyTypes) -> Material:
    return Material(cert, key, pair(cert, key))


def issue_ca(name: str, now: datetime, validity: timedelta, suffix: str = CA_CN_SUFFIX) -> Issuer:
    key = _new_key()
    subject = _subject(_cn(name, suffix))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(cert, key, pair(cert, key))


def leaf_key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    """The key usage of a TLS leaf: signing only, plus key encipherment for an RSA key
    (whose TLS key exchange encrypts with it)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_leaf(
    role: LeafRole,
    name: str,
    sans: Sequence[x509.GeneralName],
    ca: Issuer,
    now: datetime,
    validity: timedelta,
) -> Material:
    key = _new_key()
    common_name = _cn(name) if role == "server" else _cn(name, CLIENT_CN_SUFFIX, _CLIENT_CN_MAX)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        # A leaf outliving its CA would be unverifiable for the remainder.
        .not_valid_after(min(now + validity, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(key_encipherment=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([LEAF_EKU[role]]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    leaf_sans = list(sans) if role == "server" else _client_sans(common_name)
    if leaf_sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(leaf_sans), critical=False)
    return material(builder.sign(ca.key, _sign_hash(ca.key)), key)
