"""Pure: what to do with one CertificateSigningRequest for the operator's signer name.

Kubernetes records who asked (spec.username, groups, uid, extra) and that cannot be forged by
the requester; the request names the Builder in an annotation. The decision is made from
that identity alone (a SubjectAccessReview of the Builder verb, asked by ``signing.py``), so
the same check holds for a person and for a CI job's ServiceAccount.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import GROUP, PLURAL
from ..api.names import ANNOTATION_CSR_BUILDER, SIGNER_NAME, USE_VERB

_FINAL = ("Approved", "Denied", "Failed")


@dataclass(frozen=True)
class Target:
    """The Builder a request is for."""

    namespace: str
    name: str


def conditions(csr: Mapping[str, Any]) -> set[str]:
    status = csr.get("status") or {}
    return {c.get("type", "") for c in status.get("conditions") or [] if isinstance(c, Mapping)}


def pending(csr: Mapping[str, Any]) -> bool:
    """Ours and not decided yet. Approved without a certificate is left to ``unsigned``."""
    spec = csr.get("spec") or {}
    return spec.get("signerName") == SIGNER_NAME and not conditions(csr) & set(_FINAL)


def unsigned(csr: Mapping[str, Any]) -> bool:
    """Approved (by us, or by an admin by hand) and not yet signed nor failed."""
    spec = csr.get("spec") or {}
    found = conditions(csr)
    return (
        spec.get("signerName") == SIGNER_NAME
        and "Approved" in found
        and not found & {"Denied", "Failed"}
        and not (csr.get("status") or {}).get("certificate")
    )


def target(csr: Mapping[str, Any]) -> Target | str:
    """The Builder named by the request, or why it names none."""
    annotations = (csr.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_CSR_BUILDER)
    if not isinstance(value, str) or value.count("/") != 1:
        return (
            f"the request must name its Builder in the annotation {ANNOTATION_CSR_BUILDER}: "
            "<namespace>/<name>"
        )
    namespace, name = value.split("/")
    if not namespace or not name:
        return f"annotation {ANNOTATION_CSR_BUILDER} must be <namespace>/<name>, got {value!r}"
    return Target(namespace, name)


def request_pem(csr: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode((csr.get("spec") or {}).get("request") or "", validate=True)
    except Exception:
        return b""


def access_review(csr: Mapping[str, Any], where: Target) -> dict[str, Any]:
    """May the requester, exactly as the API server authenticated it, use the Builder?"""
    spec = csr.get("spec") or {}
    review: dict[str, Any] = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": spec.get("username") or "",
            "groups": list(spec.get("groups") or []),
            "uid": spec.get("uid") or "",
            "extra": dict(spec.get("extra") or {}),
            "resourceAttributes": {
                "group": GROUP,
                "resource": PLURAL,
                "verb": USE_VERB,
                "namespace": where.namespace,
                "name": where.name,
            },
        },
    }
    return review


def condition(kind: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }
