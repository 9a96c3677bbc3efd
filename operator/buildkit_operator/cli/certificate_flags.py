"""The flags about client certificates: how long the operator's signer lets them live
(``run``), and how long a user asks for one to live (``connect --duration``). Bad values
raise ValueError, which the command line reports as a usage error."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from ..api.durations import duration_seconds

# The shortest spec.expirationSeconds the API server accepts.
MIN_REQUEST_SECONDS = 600


def add_signer_flags(run: argparse.ArgumentParser) -> None:
    signer = run.add_argument_group(
        "client certificates",
        "signing users' CertificateSigningRequests for the signer buildkit.dev/client",
    )
    signer.add_argument(
        "--client-certificate-lifetime",
        default="8h",
        metavar="DURATION",
        help="lifetime of a certificate whose request asks none (default 8h)",
    )
    signer.add_argument(
        "--client-certificate-max-lifetime",
        default="24h",
        metavar="DURATION",
        help="no certificate lives longer, whatever its request asks (default 24h)",
    )


def add_connect_flags(connect: argparse.ArgumentParser) -> None:
    connect.add_argument(
        "--shared",
        action="store_true",
        help="use the Builder's shared client certificate (its Secret) instead of one of "
        "your own signed for you through a CertificateSigningRequest",
    )
    connect.add_argument(
        "--duration",
        metavar="DURATION",
        help="how long your certificate should live, e.g. 2h (the operator may shorten it)",
    )


def lifetimes(default_text: str, cap_text: str) -> Any:
    """The signer's Lifetimes; the default may not exceed the cap."""
    from ..reconcile.signing import Lifetimes  # the Kubernetes client: only when running

    default, cap = duration_seconds(default_text), duration_seconds(cap_text)
    if not 0 < default <= cap:
        raise ValueError(
            "--client-certificate-lifetime must be longer than zero and at most "
            "--client-certificate-max-lifetime"
        )
    return Lifetimes(timedelta(seconds=default), timedelta(seconds=cap))


def request_seconds(text: str | None) -> int | None:
    """``connect --duration`` as spec.expirationSeconds."""
    if text is None:
        return None
    seconds = duration_seconds(text)
    if seconds < MIN_REQUEST_SECONDS:
        raise ValueError("--duration must be at least 10m (the API server's minimum)")
    return seconds
