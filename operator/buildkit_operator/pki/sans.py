"""Subject alternative names: the entries a Builder asks for, parsed into what a
certificate can carry, and the names an existing certificate carries, to compare."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509

_DNS_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$")


def parse_san(entry: str) -> x509.GeneralName:
    """An IP address SAN when ``entry`` parses as IPv4/IPv6, else a DNS name SAN.

    DNS names are lower-cased (they compare case-insensitively) and may start with a
    ``*.`` wildcard label. Raises ValueError naming the entry when it is neither.
    """
    text = entry.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        # A zone ("fe80::1%eth0") means nothing to a peer and cannot be encoded in a SAN.
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError(f"{entry!r}: an IP address SAN cannot carry a zone")
        return x509.IPAddress(address)
    name = text.lower()
    labels = name.split(".")
    if labels and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if (
        not name
        or not name.isascii()
        or len(name) > 253
        or not all(len(label) <= 63 and _DNS_LABEL_RE.match(label) for label in labels)
    ):
        raise ValueError(f"{entry!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def san_problems(sans: Sequence[str]) -> list[str]:
    """Why each entry of ``sans`` cannot go into a certificate; [] when all can."""
    problems: list[str] = []
    for entry in sans:
        try:
            parse_san(entry)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def parse_sans(sans: Sequence[str]) -> list[x509.GeneralName]:
    parsed: list[x509.GeneralName] = []
    for entry in sans:
        san = parse_san(entry)
        if san not in parsed:
            parsed.append(san)
    if not parsed:
        raise ValueError("server_sans must name at least one DNS name or IP address")
    return parsed


def san_text(san: x509.GeneralName) -> str:
    return str(san.value)


def cert_sans(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # absent or malformed: either way no SAN to match
        return set()
    found: set[x509.GeneralName] = set()
    for name in ext:
        if isinstance(name, x509.DNSName):
            found.add(x509.DNSName(name.value.lower()))
        else:
            found.add(name)
    return found
