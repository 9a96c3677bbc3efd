"""TLS Secrets of a Builder (``tls.mode: auto``) and the names its server certificate covers."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ..api import Builder
from ..api.names import ChildNames, child_labels
from ..pki import TLSBundle
from .meta import object_meta


def server_sans(builder: Builder) -> list[str]:
    """DNS names and IPs the server certificate must cover.

    The Service's short, namespaced and cluster names; a wildcard under the Service for
    per-pod names; loopback for port-forwarding (``buildkit-operator connect``); and the
    user's extra SANs. The daemon count is deliberately absent, so scaling never re-issues
    the certificate or rolls the running daemons.
    """
    svc, ns = ChildNames(builder.name).service, builder.namespace
    names = [
        svc,
        f"{svc}.{ns}",
        f"{svc}.{ns}.svc",
        f"{svc}.{ns}.svc.cluster.local",
        f"*.{svc}.{ns}.svc",
        f"*.{svc}.{ns}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]
    # Every daemon's own name (connect --key), and each pool's Service. The pools are
    # part of the spec, so adding one re-issues the certificate; scaling does not.
    daemons_svc = ChildNames(builder.name).daemons_service
    names += [f"*.{daemons_svc}.{ns}.svc", f"*.{daemons_svc}.{ns}.svc.cluster.local"]
    for pool in builder.spec.pools:
        pool_svc = ChildNames(builder.name).pool_service(pool.platform)
        names += [pool_svc, f"{pool_svc}.{ns}", f"{pool_svc}.{ns}.svc"]
        names.append(f"{pool_svc}.{ns}.svc.cluster.local")
    for extra in builder.spec.tls.extra_sans:
        if extra not in names:
            names.append(extra)
    return names


def tls_hash(data: dict[str, bytes]) -> str:
    """Checksum of the server certificate material, put on the pod template so a renewed
    or replaced certificate rolls the pods."""
    digest = hashlib.sha256()
    for key in sorted(data):
        if key != "key.pem":  # the certificate changes whenever the key does
            digest.update(key.encode() + b"\0" + data[key] + b"\0")
    return digest.hexdigest()[:16]


def _secret(builder: Builder, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": object_meta(builder, name, child_labels(builder.name, "tls")),
        "data": {key: base64.b64encode(value).decode() for key, value in sorted(data.items())},
    }


def tls_secrets(builder: Builder, bundle: TLSBundle) -> list[dict[str, Any]]:
    names = ChildNames(builder.name)
    data = bundle.secret_data()
    secrets = [
        _secret(builder, names.ca_secret, data["ca"]),
        _secret(builder, names.server_secret, data["server"]),
    ]
    # Without the shared client certificate its Secret is not desired, so a live one is
    # deleted: a year-long key nobody can revoke should not outlive the choice.
    if builder.spec.tls.shared_client_certificate:
        secrets.append(_secret(builder, names.client_secret, data["client"]))
    return secrets
