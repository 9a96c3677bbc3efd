"""The only code that talks to the API server: requests with timeouts, the watch-fed
children's cache, server-side apply with one field manager, the Lease."""

from .client import (
    REQUEST_TIMEOUT,
    Kube,
    secret_data,
)

__all__ = [
    "REQUEST_TIMEOUT",
    "Kube",
    "secret_data",
]
