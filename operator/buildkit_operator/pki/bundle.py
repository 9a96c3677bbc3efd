"""What the rest of the operator gets from pki: a Builder's CA, server and client
material as PEM, the keys its Secrets hold them under, and why any of it is new."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography import x509

CA_PEM = "ca.pem"
CERT_PEM = "cert.pem"
KEY_PEM = "key.pem"

Role = Literal["ca", "server", "client"]
LeafRole = Literal["server", "client"]
ROLES: tuple[Role, ...] = ("ca", "server", "client")


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
