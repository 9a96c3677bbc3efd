"""Certificates: the CA, server and client certificates, reused while valid and renewed
before they expire, with the clock passed in. Imports nothing else of the operator.

Everything here is pure: the live Secrets' data and the clock come in as arguments and the
result says what to write, so the handler decides about I/O and tests need no cluster."""

from .bundle import KeyPair, TLSBundle, server_not_after
from .renew import ensure_tls
from .sans import san_problems
from .user_secret import validate_user_secret
from .validity import CA_VALIDITY, LEAF_VALIDITY, RENEW_BEFORE

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
