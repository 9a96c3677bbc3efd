"""ensure_tls: the material a Builder should have, reusing whatever still serves.

Existing material is always preferred over new material: rotating a certificate restarts
the daemons and invalidates every client Secret copied out of the cluster, so a part is
re-issued only when it is missing, unreadable, not what was asked for, or close to expiry,
and the reason is reported. Bad data in a Secret is a reason to re-issue, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from .bundle import CA_PEM, CERT_PEM, KeyPair, LeafRole, TLSBundle
from .issue import LEAF_EKU, Issuer, Material, issue_ca, issue_leaf, material
from .pem import blob, load_cert_and_key, pair
from .sans import cert_sans, parse_sans, san_text
from .validity import CA_VALIDITY, LEAF_VALIDITY, RENEW_BEFORE, timing_problem, utc

_EKU_NAME = {"server": "serverAuth", "client": "clientAuth"}


# --- Checking existing material ---------------------------------------------------------


def _data(existing: Mapping[str, Mapping[str, bytes]], role: str) -> Mapping[str, bytes]:
    data = existing.get(role) if isinstance(existing, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except Exception:  # absent or malformed
        return None


def _reusable_ca(data: Mapping[str, bytes], now: datetime, renew_before: timedelta) -> Issuer | str:
    label = "CA certificate"
    loaded = load_cert_and_key(data, CA_PEM, "CA")
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
    problem = timing_problem(cert, label, now, renew_before)
    if problem:
        return problem
    return Issuer(cert, key, pair(cert, key))


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except Exception:
        return set()


def _reusable_leaf(
    role: LeafRole,
    data: Mapping[str, bytes],
    ca: Issuer,
    sans: Sequence[x509.GeneralName],
    now: datetime,
    renew_before: timedelta,
) -> Material | list[str]:
    label = f"{role} certificate"
    loaded = load_cert_and_key(data, CERT_PEM, role)
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
    if LEAF_EKU[role] not in _eku(cert):
        return [f"{label} lacks the {_EKU_NAME[role]} extended key usage"]
    problem = timing_problem(cert, label, now, renew_before)
    if problem:
        return [problem]
    if role == "server":
        have, want = cert_sans(cert), set(sans)
        problems = [f"{label} lacks SAN {san_text(s)}" for s in sans if s not in have]
        problems += [
            f"{label} has SAN {san_text(s)} that is no longer requested"
            for s in sorted(have - want, key=san_text)
        ]
        if problems:
            return problems
    return material(cert, key)


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
    now = utc(now)
    if not name:
        raise ValueError("name must not be empty")
    if not timedelta(0) <= renew_before < min(leaf_validity, ca_validity):
        raise ValueError("renew_before must be shorter than leaf_validity and ca_validity")
    sans = parse_sans(server_sans)

    issued: set[str] = set()
    reasons: list[str] = []

    ca = _reusable_ca(_data(existing, "ca"), now, renew_before)
    if isinstance(ca, str):
        reasons.append(ca)
        ca = issue_ca(name, now, ca_validity)
        issued.add("ca")

    leaves: dict[str, KeyPair] = {}
    roles: tuple[LeafRole, ...] = ("server", "client")
    for role in roles:
        data = _data(existing, role)
        if "ca" in issued:
            present = blob(data, CERT_PEM) is not None
            found: Material | list[str] = [
                f"{role} certificate re-issued under the new CA"
                if present
                else f"no {role} certificate yet"
            ]
        else:
            found = _reusable_leaf(role, data, ca, sans, now, renew_before)
        if isinstance(found, list):
            reasons.extend(found)
            found = issue_leaf(role, name, sans, ca, now, leaf_validity)
            issued.add(role)
        leaves[role] = found.pair

    return TLSBundle(
        ca=ca.pair,
        server=leaves["server"],
        client=leaves["client"],
        issued=frozenset(issued),
        reasons=tuple(reasons),
    )
