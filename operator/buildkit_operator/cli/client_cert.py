"""A client certificate of the user's own for ``connect``: the key is made here and never
leaves this machine; a CertificateSigningRequest for the signer ``buildkit.dev/client``
names the Builder, and the operator signs it when the user may ``use`` that Builder.

The API server records who asked, so the certificate names the user (or the CI job's
ServiceAccount), lives hours rather than a year, and needs no right on any Secret.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..api.names import ANNOTATION_CSR_BUILDER, SIGNER_NAME

SIGN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Signed:
    """What ``request_certificate`` got: the PEMs to write and when the certificate ends."""

    cert_pem: bytes
    key_pem: bytes
    not_after: datetime
    request: str


def request_certificate(
    api: client.ApiClient, name: str, namespace: str, seconds: int | None
) -> Signed | str:
    """Ask for and wait for a certificate; a string says why there is none."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        # The signer puts the authenticated user in the subject, whatever is asked here.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "buildkit-client")]))
        .sign(key, hashes.SHA256())
    )
    spec: dict[str, Any] = {
        "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
        "signerName": SIGNER_NAME,
        "usages": ["digital signature", "client auth"],
    }
    if seconds is not None:
        spec["expirationSeconds"] = seconds
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {
            "generateName": f"buildkit-{name[:40]}-",
            "annotations": {ANNOTATION_CSR_BUILDER: f"{namespace}/{name}"},
        },
        "spec": spec,
    }
    # Plain dicts both ways: the typed models add nothing to a create and a read.
    objects = client.CustomObjectsApi(api)
    where = ("certificates.k8s.io", "v1", "certificatesigningrequests")
    try:
        created = cast(dict[str, Any], objects.create_cluster_custom_object(*where, body))
    except ApiException as err:
        return f"cannot create a CertificateSigningRequest: {err.status} {err.reason}"
    request = created["metadata"]["name"]
    started = time.monotonic()
    while time.monotonic() - started < SIGN_TIMEOUT:
        try:
            obj = cast(dict[str, Any], objects.get_cluster_custom_object(*where, request))
        except ApiException as err:
            return f"cannot read CertificateSigningRequest {request}: {err.status} {err.reason}"
        status = obj.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Denied", "Failed"):
                return (
                    f"CertificateSigningRequest {request} {condition['type'].lower()}: "
                    f"{condition.get('message') or condition.get('reason')}"
                )
        if status.get("certificate"):
            cert_pem = base64.b64decode(status["certificate"])
            cert = x509.load_pem_x509_certificate(cert_pem)
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            return Signed(cert_pem, key_pem, cert.not_valid_after_utc, request)
        time.sleep(0.5)
    return (
        f"CertificateSigningRequest {request} was not signed within {SIGN_TIMEOUT:.0f}s "
        "(is the operator running?)"
    )


def write_private(path: Path, data: bytes) -> None:
    """0600, and never through a link someone left at that name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)
