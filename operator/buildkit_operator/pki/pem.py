"""Certificates and keys to and from PEM, as Secrets hold them. Reading never raises: a
Secret may hold anything, and what cannot be read is a reason, not an error."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .bundle import KEY_PEM, KeyPair


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pair(cert: x509.Certificate, key: PrivateKeyTypes) -> KeyPair:
    return KeyPair(cert_pem=cert_pem(cert), key_pem=key_pem(key))


def blob(data: Mapping[str, bytes], key: str) -> bytes | None:
    value: object = data.get(key)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | bytearray) and value.strip():
        return bytes(value)
    return None


def same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        return bool(
            cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
        )
    except Exception:
        return False


def load_cert_and_key(
    data: Mapping[str, bytes], cert_key: str, who: str
) -> tuple[x509.Certificate, PrivateKeyTypes] | str:
    """The certificate and key in ``data``, or why they cannot be used."""
    cert_blob, key_blob = blob(data, cert_key), blob(data, KEY_PEM)
    if cert_blob is None and key_blob is None:
        return f"no {who} certificate yet"
    if cert_blob is None:
        return f"{who} certificate is missing ({cert_key})"
    if key_blob is None:
        return f"{who} key is missing ({KEY_PEM})"
    try:
        cert = x509.load_pem_x509_certificate(cert_blob)
        cert.public_key()
    except Exception:
        return f"{who} certificate is not a readable PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_blob, password=None)
    except Exception:
        return f"{who} key is not a readable unencrypted PEM private key"
    if not same_public_key(cert, key):
        return f"{who} key does not match the {who} certificate"
    return cert, key
