"""Certificates for a Builder's mutual TLS: one CA per Builder, a server and a client leaf.

Everything here is pure: the live Secrets' data and the clock come in as arguments and the
result says what to write, so the handler decides about I/O and tests need no cluster.

Existing material is always preferred over new material: rotating a certificate restarts
the daemons and invalidates every client Secret copied out of the cluster, so a part is
re-issued only when it is missing, unreadable, not what was asked for, or close to expiry,
and the reason is reported. Bad data in a Secret is a reason to re-issue, never an error.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
# Backdating absorbs clock skew between the operator and the nodes that check the chain.
CLOCK_SKEW = timedelta(minutes=5)

ORGANIZATION = "buildkit-operator"
CA_CN_SUFFIX = " BuildKit CA"
CLIENT_CN_SUFFIX = "-client"
_CN_MAX = 64  # ub-common-name (RFC 5280)
# The client CN doubles as a DNS SAN, so it must also fit a 63-character DNS label.
_CLIENT_CN_MAX = 63

CA_PEM = "ca.pem"
CERT_PEM = "cert.pem"
KEY_PEM = "key.pem"

Role = Literal["ca", "server", "client"]
LeafRole = Literal["server", "client"]
ROLES: tuple[Role, ...] = ("ca", "server", "client")

_LEAF_EKU = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}
_EKU_NAME = {"server": "serverAuth", "client": "clientAuth"}
_DNS_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$")
_MAX_CHAIN = 8


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key; the key never appears in repr or logs."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def not_after(self) -> datetime:
        """End of validity, tz-aware UTC."""
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class TLSBundle:
    """The CA, server and client material of one Builder and why any of it is new."""

    ca: KeyPair
    server: KeyPair
    client: KeyPair
    # Roles newly issued by this call; empty when everything was reused.
    issued: frozenset[str]
    # Why each new part was issued, for Events and status messages.
    reasons: tuple[str, ...]

    def secret_data(self) -> dict[str, dict[str, bytes]]:
        """Data of the three Secrets, keyed by role; every Secret carries the CA certificate."""
        ca = self.ca.cert_pem
        return {
            "ca": {CA_PEM: ca, KEY_PEM: self.ca.key_pem},
            "server": {CA_PEM: ca, CERT_PEM: self.server.cert_pem, KEY_PEM: self.server.key_pem},
            "client": {CA_PEM: ca, CERT_PEM: self.client.cert_pem, KEY_PEM: self.client.key_pem},
        }


def server_not_after(bundle: TLSBundle) -> datetime:
    """When the server certificate expires (status.certificateNotAfter)."""
    return bundle.server.not_after


# --- SANs -------------------------------------------------------------------------------


def parse_san(entry: str) -> x509.GeneralName:
    """An IP address SAN when ``entry`` parses as IPv4/IPv6, else a DNS name SAN.

    DNS names are lower-cased (they compare case-insensitively) and may start with a
    ``*.`` wildcard label. Raises ValueError naming the entry when it is neither.
    """
    text = entry.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        # A zone ("fe80::1%eth0") means nothing to a peer and cannot be encoded in a SAN.
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError(f"{entry!r}: an IP address SAN cannot carry a zone")
        return x509.IPAddress(address)
    name = text.lower()
    labels = name.split(".")
    if labels and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if (
        not name
        or not name.isascii()
        or len(name) > 253
        or not all(len(label) <= 63 and _DNS_LABEL_RE.match(label) for label in labels)
    ):
        raise ValueError(f"{entry!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def san_problems(sans: Sequence[str]) -> list[str]:
    """Why each entry of ``sans`` cannot go into a certificate; [] when all can."""
    problems: list[str] = []
    for entry in sans:
        try:
            parse_san(entry)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def _parse_sans(sans: Sequence[str]) -> list[x509.GeneralName]:
    parsed: list[x509.GeneralName] = []
    for entry in sans:
        san = parse_san(entry)
        if san not in parsed:
            parsed.append(san)
    if not parsed:
        raise ValueError("server_sans must name at least one DNS name or IP address")
    return parsed


def _san_text(san: x509.GeneralName) -> str:
    return str(san.value)


def _cert_sans(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # absent or malformed: either way no SAN to match
        return set()
    found: set[x509.GeneralName] = set()
    for name in ext:
        if isinstance(name, x509.DNSName):
            found.add(x509.DNSName(name.value.lower()))
        else:
            found.add(name)
    return found


# --- Issuing ----------------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(delta: timedelta) -> str:
    if delta.seconds == 0 and delta.microseconds == 0:
        return f"{delta.days}-day"
    return str(delta)


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


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _sign_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


@dataclass(frozen=True)
class _Material:
    """A parsed certificate and key, with the canonical PEM to write back."""

    cert: x509.Certificate
    key: PrivateKeyTypes
    pair: KeyPair


@dataclass(frozen=True)
class _Issuer:
    """A CA certificate with a key able to sign certificates."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    pair: KeyPair


def _pair(cert: x509.Certificate, key: PrivateKeyTypes) -> KeyPair:
    return KeyPair(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def _material(cert: x509.Certificate, key: PrivateKeyTypes) -> _Material:
    return _Material(cert, key, _pair(cert, key))


def _issue_ca(name: str, now: datetime, validity: timedelta) -> _Issuer:
    key = _new_key()
    subject = _subject(_cn(name, CA_CN_SUFFIX))
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
    return _Issuer(cert, key, _pair(cert, key))


def _issue_leaf(
    role: LeafRole,
    name: str,
    sans: Sequence[x509.GeneralName],
    ca: _Issuer,
    now: datetime,
    validity: timedelta,
) -> _Material:
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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([_LEAF_EKU[role]]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    leaf_sans = list(sans) if role == "server" else _client_sans(common_name)
    if leaf_sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(leaf_sans), critical=False)
    return _material(builder.sign(ca.key, _sign_hash(ca.key)), key)


# --- Checking existing material ---------------------------------------------------------


def _data(existing: Mapping[str, Mapping[str, bytes]], role: str) -> Mapping[str, bytes]:
    data = existing.get(role) if isinstance(existing, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def _blob(data: Mapping[str, bytes], key: str) -> bytes | None:
    value: object = data.get(key)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | bytearray) and value.strip():
        return bytes(value)
    return None


def _same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        return bool(
            cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
        )
    except Exception:
        return False


def _load(
    data: Mapping[str, bytes], cert_key: str, who: str
) -> tuple[x509.Certificate, PrivateKeyTypes] | str:
    """The certificate and key in ``data``, or why they cannot be used."""
    cert_blob, key_blob = _blob(data, cert_key), _blob(data, KEY_PEM)
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
    if not _same_public_key(cert, key):
        return f"{who} key does not match the {who} certificate"
    return cert, key


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except Exception:  # absent or malformed
        return None


def _timing_problem(
    cert: x509.Certificate, label: str, now: datetime, renew_before: timedelta
) -> str | None:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        return f"{label} is not valid before {_when(not_before)}"
    if now >= not_after:
        return f"{label} expired on {_when(not_after)}"
    if now >= not_after - renew_before:
        return (
            f"{label} expires {_when(not_after)}, inside the {_span(renew_before)} renewal window"
        )
    return None


def _reusable_ca(
    data: Mapping[str, bytes], now: datetime, renew_before: timedelta
) -> _Issuer | str:
    label = "CA certificate"
    loaded = _load(data, CA_PEM, "CA")
    if isinstance(loaded, str):
        return loaded
    cert, key = loaded
    constraints = _basic_constraints(cert)
    if constraints is None or not constraints.ca:
        return f"{label} is not a CA certificate"
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | dsa.DSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        return f"{label} key cannot sign certificates"
    problem = _timing_problem(cert, label, now, renew_before)
    if problem:
        return problem
    return _Issuer(cert, key, _pair(cert, key))


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except Exception:
        return set()


def _reusable_leaf(
    role: LeafRole,
    data: Mapping[str, bytes],
    ca: _Issuer,
    sans: Sequence[x509.GeneralName],
    now: datetime,
    renew_before: timedelta,
) -> _Material | list[str]:
    label = f"{role} certificate"
    loaded = _load(data, CERT_PEM, role)
    if isinstance(loaded, str):
        return [loaded]
    cert, key = loaded
    try:
        cert.verify_directly_issued_by(ca.cert)
    except Exception:
        return [f"{label} is not signed by the current CA"]
    constraints = _basic_constraints(cert)
    if constraints is not None and constraints.ca:
        return [f"{label} is a CA certificate"]
    if _LEAF_EKU[role] not in _eku(cert):
        return [f"{label} lacks the {_EKU_NAME[role]} extended key usage"]
    problem = _timing_problem(cert, label, now, renew_before)
    if problem:
        return [problem]
    if role == "server":
        have, want = _cert_sans(cert), set(sans)
        problems = [f"{label} lacks SAN {_san_text(s)}" for s in sans if s not in have]
        problems += [
            f"{label} has SAN {_san_text(s)} that is no longer requested"
            for s in sorted(have - want, key=_san_text)
        ]
        if problems:
            return problems
    return _material(cert, key)


# --- Entry points -----------------------------------------------------------------------


def ensure_tls(
    existing: Mapping[str, Mapping[str, bytes]],
    *,
    name: str,
    server_sans: Sequence[str],
    now: datetime,
    ca_validity: timedelta = CA_VALIDITY,
    leaf_validity: timedelta = LEAF_VALIDITY,
    renew_before: timedelta = RENEW_BEFORE,
) -> TLSBundle:
    """The TLS material a Builder should have, reusing whatever in ``existing`` still serves.

    ``existing`` maps a role ("ca", "server", "client") to its live Secret's decoded data;
    any role may be absent or hold garbage. The CA is kept while it parses, matches its key,
    is a CA and is outside the renewal window; a leaf is kept while it also is signed by that
    CA, has its role's extended key usage, is valid now, is outside the renewal window and
    (server) carries exactly ``server_sans``. A new CA means new leaves.

    Raises ValueError only for bad arguments (naive ``now``, empty ``name``, an entry of
    ``server_sans`` that is neither IP nor DNS name, or a renewal window not shorter than
    the validities), never for bad ``existing`` data.
    """
    now = _utc(now)
    if not name:
        raise ValueError("name must not be empty")
    if not timedelta(0) <= renew_before < min(leaf_validity, ca_validity):
        raise ValueError("renew_before must be shorter than leaf_validity and ca_validity")
    sans = _parse_sans(server_sans)

    issued: set[str] = set()
    reasons: list[str] = []

    ca = _reusable_ca(_data(existing, "ca"), now, renew_before)
    if isinstance(ca, str):
        reasons.append(ca)
        ca = _issue_ca(name, now, ca_validity)
        issued.add("ca")

    leaves: dict[str, KeyPair] = {}
    roles: tuple[LeafRole, ...] = ("server", "client")
    for role in roles:
        data = _data(existing, role)
        if "ca" in issued:
            present = _blob(data, CERT_PEM) is not None
            found: _Material | list[str] = [
                f"{role} certificate re-issued under the new CA"
                if present
                else f"no {role} certificate yet"
            ]
        else:
            found = _reusable_leaf(role, data, ca, sans, now, renew_before)
        if isinstance(found, list):
            reasons.extend(found)
            found = _issue_leaf(role, name, sans, ca, now, leaf_validity)
            issued.add(role)
        leaves[role] = found.pair

    return TLSBundle(
        ca=ca.pair,
        server=leaves["server"],
        client=leaves["client"],
        issued=frozenset(issued),
        reasons=tuple(reasons),
    )


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


def validate_user_secret(data: Mapping[str, bytes], *, now: datetime | None = None) -> list[str]:
    """Problems with a user-supplied server Secret (``tls.mode: secret``); [] when fine.

    ``cert.pem`` may carry intermediates after the leaf; ``ca.pem`` may hold several CAs.
    ``now`` defaults to the current time, used only for the validity check.
    """
    moment = datetime.now(UTC) if now is None else _utc(now)
    problems: list[str] = []
    blobs = {key: _blob(data, key) for key in (CA_PEM, CERT_PEM, KEY_PEM)}
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
    if key is not None and not _same_public_key(leaf, key):
        problems.append(f"{KEY_PEM} does not match the certificate in {CERT_PEM}")
    if roots and _unchained(leaf, chain[1:], roots):
        problems.append(f"{CERT_PEM} is not signed by a CA in {CA_PEM}")
    if moment >= leaf.not_valid_after_utc:
        problems.append(f"{CERT_PEM} expired on {_when(leaf.not_valid_after_utc)}")
    elif moment < leaf.not_valid_before_utc:
        problems.append(f"{CERT_PEM} is not valid before {_when(leaf.not_valid_before_utc)}")
    return problems
