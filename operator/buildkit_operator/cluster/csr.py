"""The API calls of the CSR signer: a SubjectAccessReview, the approval and status
subresources of a CertificateSigningRequest. Each write carries the object's
resourceVersion, so a request another party changed meanwhile is read again, not overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .client import Kube

_CSR = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def review(kube: Kube, body: Mapping[str, Any]) -> dict[str, Any]:
    """The API server's answer to a SubjectAccessReview (its status)."""
    answer = kube.raw(
        "POST", f"{kube.host}/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body
    )
    return dict(answer.get("status") or {})


def add_condition(
    kube: Kube, csr: Mapping[str, Any], condition: Mapping[str, Any]
) -> dict[str, Any]:
    """Approve or deny (the approval subresource), keeping the conditions already there."""
    status = dict(csr.get("status") or {})
    status["conditions"] = [*(status.get("conditions") or []), dict(condition)]
    name = csr["metadata"]["name"]
    body = {**csr, "status": status}
    return dict(kube.raw("PUT", f"{kube.host}{_CSR}/{name}/approval", body=body))


def set_status(kube: Kube, csr: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """Write the signed certificate, or a Failed condition (the status subresource)."""
    name = csr["metadata"]["name"]
    merged = {**(csr.get("status") or {}), **status}
    return dict(kube.raw("PUT", f"{kube.host}{_CSR}/{name}/status", body={**csr, "status": merged}))
