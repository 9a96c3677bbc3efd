"""One CertificateSigningRequest for the operator's signer: check, approve and sign, or deny
with the reason. The decisions are ``csr.py``'s and ``pki``'s; this module only sequences
the requests, so that a request is approved only once the certificate can be signed.

Nothing here logs or stores a private key: the user's never leaves their machine, and the
CA's is read from the Builder's Secret for the signature alone.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ..api.names import USE_VERB, ChildNames
from ..cluster import Kube, secret_data
from ..cluster import csr as calls
from ..pki.client_csr import (
    Refused,
    certificate_pem,
    lifetime,
    load_client_issuer,
    sign_client,
)
from ..pki.validity import when
from .csr import Target, access_review, condition, pending, request_pem, target, unsigned

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = timedelta(hours=8)
MAX_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class Lifetimes:
    """How long a signed certificate lives: ``default`` when the request asks nothing,
    never more than ``cap`` (the chart's value)."""

    default: timedelta = DEFAULT_LIFETIME
    cap: timedelta = MAX_LIFETIME


def _sign(
    kube: Kube, csr: Mapping[str, Any], where: Target, now: datetime, lifetimes: Lifetimes
) -> x509.Certificate:
    secret = kube.get("Secret", where.namespace, ChildNames(where.name).ca_secret)
    if secret is None:
        raise Refused(
            f"Builder {where.namespace}/{where.name} has no CA of the operator's "
            "(it does not exist, or its tls.mode is not auto)"
        )
    spec = csr.get("spec") or {}
    cert = sign_client(
        request_pem(csr),
        username=spec.get("username") or "",
        groups=list(spec.get("groups") or []),
        ca=load_client_issuer(secret_data(secret)),
        now=now,
        validity=lifetime(spec.get("expirationSeconds"), lifetimes.default, lifetimes.cap),
    )
    return cert


def _which(cert: x509.Certificate) -> str:
    """The certificate, as the log names it: buildkitd logs no client, so this line (and
    the request itself, for the hour Kubernetes keeps it) is what ties a key to a person."""
    return f"serial {cert.serial_number:x}, valid until {when(cert.not_valid_after_utc)}"


def handle(kube: Kube, csr: Mapping[str, Any], now: datetime, lifetimes: Lifetimes) -> str:
    """Decide and write; returns what was done, for the log (names, never key material)."""
    name = (csr.get("metadata") or {}).get("name", "")
    stamp = when(now)
    if pending(csr):
        where = target(csr)
        if isinstance(where, str):
            calls.add_condition(kube, csr, condition("Denied", "NoBuilder", where, stamp))
            return f"denied {name}: {where}"
        user = (csr.get("spec") or {}).get("username") or ""
        answer = calls.review(kube, access_review(csr, where))
        if not answer.get("allowed"):
            why = answer.get("reason") or answer.get("evaluationError") or ""
            message = (
                f"{user} may not {USE_VERB} builders.buildkit.dev {where.name} in namespace "
                f"{where.namespace}" + (f": {why}" if why else "")
            )
            calls.add_condition(kube, csr, condition("Denied", "NotAllowed", message, stamp))
            return f"denied {name}: {message}"
        try:
            cert = _sign(kube, csr, where, now, lifetimes)
        except Refused as err:
            calls.add_condition(kube, csr, condition("Denied", "CannotSign", str(err), stamp))
            return f"denied {name}: {err}"
        approved = calls.add_condition(
            kube,
            csr,
            condition(
                "Approved",
                "BuilderUser",
                f"{user} may {USE_VERB} Builder {where.namespace}/{where.name}",
                stamp,
            ),
        )
        signed = base64.b64encode(certificate_pem(cert)).decode()
        calls.set_status(kube, approved, {"certificate": signed})
        return f"signed {name} for {user} on {where.namespace}/{where.name}: {_which(cert)}"
    if unsigned(csr):
        # Approved by an administrator by hand: the approval is theirs, the signature ours.
        where = target(csr)
        try:
            if isinstance(where, str):
                raise Refused(where)
            cert = _sign(kube, csr, where, now, lifetimes)
        except Refused as err:
            failed = condition("Failed", "CannotSign", str(err), stamp)
            status = dict(csr.get("status") or {})
            calls.set_status(kube, csr, {"conditions": [*(status.get("conditions") or []), failed]})
            return f"failed {name}: {err}"
        signed = base64.b64encode(certificate_pem(cert)).decode()
        calls.set_status(kube, csr, {"certificate": signed})
        return f"signed {name} (approved by hand): {_which(cert)}"
    return ""
