"""Names of objects the pods refer to (Secrets, ServiceAccounts, classes): the API server
rejects a pod or claim naming anything that is not a DNS subdomain, so the spec does too."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

from .cel import cel_matches, cel_rule, cel_string, validations
from .syntax import DNS_SUBDOMAIN_PATTERN, DNS_SUBDOMAIN_RE, MAX_OBJECT_NAME_LENGTH

OBJECT_NAME_TEXT = (
    "at most 253 lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric"
)


def dns_subdomain(name: str, what: str) -> str:
    """The rule for object names: a DNS subdomain of at most 253 characters."""
    if len(name) > 253 or not DNS_SUBDOMAIN_RE.match(name):
        raise ValueError(f"{name!r} is not a valid {what}: {OBJECT_NAME_TEXT}")
    return name


def check_object_name(name: str) -> str:
    """Names of objects the pods refer to (Secrets, ServiceAccounts, classes): the API
    server rejects a pod or claim naming anything that is not a DNS subdomain."""
    return dns_subdomain(name, "object name")


def object_name_rule(allow_empty: bool = False) -> dict[str, Any]:
    ok = cel_matches("self", DNS_SUBDOMAIN_PATTERN)
    return cel_rule(
        f"self == '' || {ok}" if allow_empty else ok,
        "must be a valid object name: " + OBJECT_NAME_TEXT,
        message_expression=(
            '"\'" + self + ' + cel_string("' is not a valid object name: " + OBJECT_NAME_TEXT)
        ),
    )


ObjectName = Annotated[
    str,
    AfterValidator(check_object_name),
    validations(object_name_rule(), maxLength=MAX_OBJECT_NAME_LENGTH),
]
