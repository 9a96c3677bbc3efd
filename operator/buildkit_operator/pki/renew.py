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

from .bundle import (
    CA_PEM,
    CERT_PEM,
    LeafRole,
    TLSBundle,
    client_ca_data,
)
from .issue import (
    CLIENT_CA_CN_SUFFIX,
    LEAF_EKU,
    Issuer,
    Material,
    issue_ca,
    issue_leaf,
    material,
)
from .pem import blob, load_cert_and_key, pair
from .sans import cert_sans, parse_sans, san_text
from .validity import (
    CA_VALIDITY,
    CLOCK_SKEW,
    LEAF_VALIDITY,
    RENEW_BEFORE,
    timing_problem,
    utc,
    when,
)

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


def _reusable_ca(
    data: Mapping[str, bytes],
    now: datetime,
    renew_before: timedelta,
    label: str = "CA certificate",
) -> Issuer | str:
    loaded = load_cert_and_key(data, CA_PEM, label.removesuffix(" certificate"))
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
    issuers: Sequence[Issuer],
    sans: Sequence[x509.GeneralName],
    now: datetime,
    renew_before: timedelta,
) -> Material | list[str]:
    label = f"{role} certificate"
    loaded = load_cert_and_key(data, CERT_PEM, role)
    if isinstance(loaded, str):
        return [loaded]
    cert, key = loaded
    if not any(_signed_by(cert, issuer) for issuer in issuers):
        which = "the current CA" if role == "server" else "a CA the daemons accept clients of"
        return [f"{label} is not signed by {which}"]
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


def _signed_by(cert: x509.Certificate, issuer: Issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer.cert)
    except Exception:
        return False
    return True


def issued_at(cert: x509.Certificate) -> datetime:
    """When the operator issued it: its notBefore is backdated by the clock skew."""
    return cert.not_valid_before_utc + CLOCK_SKEW


def _client_ca(
    data: Mapping[str, bytes],
    *,
    name: str,
    now: datetime,
    cut: datetime | None,
    validity: timedelta,
    renew_before: timedelta,
) -> tuple[Issuer, str | None]:
    """The CA that signs users' certificates, kept unless a revocation dates after it."""
    view = client_ca_data(data)
    if blob(view, CA_PEM) is None:
        found: Issuer | str = "no client CA yet"
    else:
        found = _reusable_ca(view, now, renew_before, label="client CA certificate")
    if isinstance(found, Issuer) and cut is not None and issued_at(found.cert) < cut:
        found = (
            f"client CA issued {when(issued_at(found.cert))}, before tls.revokedBefore {when(cut)}"
        )
    if isinstance(found, str):
        return issue_ca(name, now, validity, CLIENT_CA_CN_SUFFIX), found
    return found, None


# --- Entry points -----------------------------------------------------------------------


def ensure_tls(
    existing: Mapping[str, Mapping[str, bytes]],
    *,
    name: str,
    server_sans: Sequence[str],
    now: datetime,
    revoked_before: datetime | None = None,
    ca_validity: timedelta = CA_VALIDITY,
    leaf_validity: timedelta = LEAF_VALIDITY,
    renew_before: timedelta = RENEW_BEFORE,
) -> TLSBundle:
    """The TLS material a Builder should have, reusing whatever in ``existing`` still serves.

    ``existing`` maps a role ("ca", "server", "client") to its live Secret's decoded data;
    any role may be absent or hold garbage. The CA is kept while it parses, matches its key,
    is a CA and is outside the renewal window; the server leaf is kept while it also is
    signed by that CA, has its role's extended key usage, is valid now, is outside the
    renewal window and carries exactly ``server_sans``. A new CA means a new server leaf.

    The client CA signs users' certificates. ``revoked_before`` (``tls.revokedBefore``),
    once reached, refuses every client certificate issued before it: the client CA is
    replaced when older, and the CA stops being a client issuer when older. The shared
    client leaf is kept while a current client issuer signed it; a new one is signed by the
    CA while that is a client issuer (as before there was a client CA), else by the client
    CA. Nothing is re-issued for a revocation still to come (``revisit``).

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
    cut = utc(revoked_before) if revoked_before is not None else None
    revisit = cut if cut is not None and cut > now else None
    if revisit is not None:
        cut = None

    issued: set[str] = set()
    reasons: list[str] = []

    ca = _reusable_ca(_data(existing, "ca"), now, renew_before)
    if isinstance(ca, str):
        reasons.append(ca)
        ca = issue_ca(name, now, ca_validity)
        issued.add("ca")

    client_ca, why = _client_ca(
        _data(existing, "ca"),
        name=name,
        now=now,
        cut=cut,
        validity=ca_validity,
        renew_before=renew_before,
    )
    if why is not None:
        reasons.append(why)
        issued.add("client-ca")
    issuers = [client_ca]
    if cut is None or issued_at(ca.cert) >= cut:
        issuers.append(ca)

    data = _data(existing, "server")
    if "ca" in issued:
        present = blob(data, CERT_PEM) is not None
        server: Material | list[str] = [
            "server certificate re-issued under the new CA"
            if present
            else "no server certificate yet"
        ]
    else:
        server = _reusable_leaf("server", data, [ca], sans, now, renew_before)
    if isinstance(server, list):
        reasons.extend(server)
        server = issue_leaf("server", name, sans, ca, now, leaf_validity)
        issued.add("server")

    data = _data(existing, "client")
    client = _reusable_leaf("client", data, issuers, sans, now, renew_before)
    if isinstance(client, list):
        reasons.extend(["no client certificate yet"] if blob(data, CERT_PEM) is None else client)
        # Signed as before there was a client CA while the CA is still a client issuer, so
        # nothing changes until a revocation; after one, by the client CA.
        signer = ca if ca in issuers else client_ca
        client = issue_leaf("client", name, sans, signer, now, leaf_validity)
        issued.add("client")

    return TLSBundle(
        ca=ca.pair,
        server=server.pair,
        client=client.pair,
        issued=frozenset(issued),
        reasons=tuple(reasons),
        client_ca=client_ca.pair,
        client_issuers=b"".join(i.pair.cert_pem for i in issuers),
        revisit=revisit,
    )
