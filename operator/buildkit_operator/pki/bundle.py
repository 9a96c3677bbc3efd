"""What the rest of the operator gets from pki: a Builder's CA, server and client
material as PEM, the keys its Secrets hold them under, and why any of it is new."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography import x509

CA_PEM = "ca.pem"
CERT_PEM = "cert.pem"
KEY_PEM = "key.pem"
# In the CA Secret beside the CA: the CA that signs users' certificates, which a
# revocation replaces while the CA that clients verify the daemons with stays.
CLIENT_CA_PEM = "client-ca.pem"
CLIENT_CA_KEY_PEM = "client-ca-key.pem"


def client_ca_data(ca_secret: Mapping[str, bytes]) -> dict[str, bytes]:
    """The client CA of a CA Secret's data, under the keys a CA is read from (ca.pem and
    key.pem), so that both CAs are read and checked the same way."""
    return {
        CA_PEM: ca_secret.get(CLIENT_CA_PEM, b""),
        KEY_PEM: ca_secret.get(CLIENT_CA_KEY_PEM, b""),
    }


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
    """The CA, server and client material of one Builder and why any of it is new.

    Two CAs: ``ca`` signs the daemons' certificate, and clients verify the daemons with it
    (it is never replaced while valid); ``client_ca`` signs users' certificates, and
    ``tls.revokedBefore`` replaces it. ``client_issuers`` is what the daemons accept a
    client certificate from: the client CA, and the CA too until a revocation dates after
    it (the certificates it signed before there was a client CA keep working until then).
    """

    ca: KeyPair
    server: KeyPair
    client: KeyPair
    # Roles newly issued by this call; empty when everything was reused.
    issued: frozenset[str]
    # Why each new part was issued, for Events and status messages.
    reasons: tuple[str, ...]
    client_ca: KeyPair
    client_issuers: bytes
    # A revocation set for later: the material must be judged again then.
    revisit: datetime | None = None

    def secret_data(self) -> dict[str, dict[str, bytes]]:
        """Data of the three Secrets, keyed by role. The server Secret's ca.pem is what
        buildkitd's --tlscacert reads: the issuers whose client certificates it accepts.
        The client Secret's ca.pem is the CA the daemons' certificate chains to."""
        ca = self.ca.cert_pem
        return {
            "ca": {
                CA_PEM: ca,
                KEY_PEM: self.ca.key_pem,
                CLIENT_CA_PEM: self.client_ca.cert_pem,
                CLIENT_CA_KEY_PEM: self.client_ca.key_pem,
            },
            "server": {
                CA_PEM: self.client_issuers,
                CERT_PEM: self.server.cert_pem,
                KEY_PEM: self.server.key_pem,
            },
            "client": {CA_PEM: ca, CERT_PEM: self.client.cert_pem, KEY_PEM: self.client.key_pem},
        }


def server_not_after(bundle: TLSBundle) -> datetime:
    """When the server certificate expires (status.certificateNotAfter)."""
    return bundle.server.not_after
