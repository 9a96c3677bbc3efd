"""The server Secret a user brings (``tls.mode: secret``): not the operator's to re-issue,
so it is only checked, and what is wrong with it is reported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from .bundle import CA_PEM, CERT_PEM, KEY_PEM
from .pem import blob, same_public_key
from .validity import utc, when

_MAX_CHAIN = 8


def _unchained(
    leaf: x509.Certificate, extra: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> bool:
    """True when no path leads from ``leaf`` through ``extra`` to one of ``roots``."""
    current = leaf
    for _ in range(_MAX_CHAIN):
        for root in roots:
            try:
                current.verify_directly_issued_by(root)
                return False
            except Exception:
                pass
        for cert in extra:
            try:
                current.verify_directly_issued_by(cert)
            except Exception:
                continue
            current = cert
            break
        else:
            return True
    return True


def _serves(leaf: x509.Certificate) -> bool:
    """Whether the certificate says it is for TLS servers (an extended key usage naming
    serverAuth; one without the extension is refused too, as it says nothing)."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usage


def validate_user_secret(data: Mapping[str, bytes], *, now: datetime | None = None) -> list[str]:
    """Problems with a user-supplied server Secret (``tls.mode: secret``); [] when fine.

    ``cert.pem`` may carry intermediates after the leaf; ``ca.pem`` may hold several CAs.
    ``now`` defaults to the current time, used only for the validity check.
    """
    moment = datetime.now(UTC) if now is None else utc(now)
    problems: list[str] = []
    blobs = {key: blob(data, key) for key in (CA_PEM, CERT_PEM, KEY_PEM)}
    problems += [f"missing key {key}" for key, blob in blobs.items() if blob is None]

    roots: list[x509.Certificate] = []
    chain: list[x509.Certificate] = []
    key: PrivateKeyTypes | None = None
    ca_blob, cert_blob, key_blob = blobs[CA_PEM], blobs[CERT_PEM], blobs[KEY_PEM]
    if ca_blob is not None:
        try:
            roots = x509.load_pem_x509_certificates(ca_blob)
        except Exception:
            problems.append(f"{CA_PEM} is not a readable PEM certificate")
    if cert_blob is not None:
        try:
            chain = x509.load_pem_x509_certificates(cert_blob)
        except Exception:
            problems.append(f"{CERT_PEM} is not a readable PEM certificate")
    if key_blob is not None:
        try:
            key = serialization.load_pem_private_key(key_blob, password=None)
        except Exception:
            problems.append(f"{KEY_PEM} is not a readable unencrypted PEM private key")

    if not chain:
        return problems
    leaf = chain[0]
    if key is not None and not same_public_key(leaf, key):
        problems.append(f"{KEY_PEM} does not match the certificate in {CERT_PEM}")
    if roots and _unchained(leaf, chain[1:], roots):
        problems.append(f"{CERT_PEM} is not signed by a CA in {CA_PEM}")
    if not _serves(leaf):
        # A client certificate (another Builder's client key, say) is not a server's: the
        # daemon must never be started with it.
        problems.append(
            f"{CERT_PEM} is not a server certificate (its extended key usage "
            "does not include serverAuth)"
        )
    if moment >= leaf.not_valid_after_utc:
        problems.append(f"{CERT_PEM} expired on {when(leaf.not_valid_after_utc)}")
    elif moment < leaf.not_valid_before_utc:
        problems.append(f"{CERT_PEM} is not valid before {when(leaf.not_valid_before_utc)}")
    return problems
