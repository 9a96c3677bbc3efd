"""Certificates: the CA, server and client certificates, reused while valid and renewed
before they expire, with the clock passed in. Imports nothing else of the operator."""

from .tls import (
    CA_VALIDITY,
    LEAF_VALIDITY,
    RENEW_BEFORE,
    KeyPair,
    TLSBundle,
    ensure_tls,
    san_problems,
    server_not_after,
    validate_user_secret,
)

__all__ = [
    "CA_VALIDITY",
    "LEAF_VALIDITY",
    "RENEW_BEFORE",
    "KeyPair",
    "TLSBundle",
    "ensure_tls",
    "san_problems",
    "server_not_after",
    "validate_user_secret",
]
