"""Label keys and values, checked as the API server checks a pod's: in Python for the
operator, and in CEL for the CRD (the same patterns in both)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from .cel import CRDSchema, cel_matches, cel_rule, cel_string, validations
from .syntax import DNS_SUBDOMAIN_PATTERN, DNS_SUBDOMAIN_RE, MAX_LABEL_VALUE_LENGTH, MAX_LABELS

LABEL_NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_NAME_RE = re.compile(LABEL_NAME_PATTERN)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE_PATTERN)

LABEL_VALUE_TEXT = (
    "at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
)
LABEL_TEXT = "1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"


def cel_label_key_ok(key: str) -> str:
    """CEL for check_label_key: an optional DNS-subdomain prefix and '/', then a name."""
    name = f"{key}.substring({key}.lastIndexOf('/') + 1)"
    prefix = f"{key}.substring(0, {key}.lastIndexOf('/'))"
    return (
        f"(!{key}.contains('/') || ({key}.lastIndexOf('/') <= 253 && "
        f"{cel_matches(prefix, DNS_SUBDOMAIN_PATTERN)})) && "
        f"size({name}) <= 63 && {cel_matches(name, LABEL_NAME_PATTERN)}"
    )


def cel_label_key_message(key: str) -> str:
    """CEL for the message check_label_key gives about ``key``."""
    prefix = f"{key}.substring(0, {key}.lastIndexOf('/'))"
    return (
        f'"label key \'" + {key} + "\': " + '
        f"({key}.contains('/') && !({key}.lastIndexOf('/') <= 253 && "
        f"{cel_matches(prefix, DNS_SUBDOMAIN_PATTERN)}) ? "
        f"'prefix must be a DNS subdomain' : "
        f"{cel_string('name must be ' + LABEL_TEXT)})"
    )


def cel_label_value_ok(value: str) -> str:
    return f"size({value}) <= 63 && {cel_matches(value, LABEL_VALUE_PATTERN)}"


def check_label_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not DNS_SUBDOMAIN_RE.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        raise ValueError(f"label key {key!r}: name must be {LABEL_TEXT}")
    return key


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_label_key(key)
        if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
            raise ValueError(f"label value {value!r} for {key!r}: {LABEL_VALUE_TEXT}")
    return labels


def _label_key_rule() -> dict[str, Any]:
    return cel_rule(
        f"self.all(k, {cel_label_key_ok('k')})",
        "keys must be label keys: an optional DNS-subdomain prefix and '/', then a name of "
        + LABEL_TEXT,
        message_expression=(
            f"self.filter(k, !({cel_label_key_ok('k')})).map(k, {cel_label_key_message('k')})[0]"
        ),
    )


def _label_value_rule() -> dict[str, Any]:
    return cel_rule(
        f"self.all(k, {cel_label_value_ok('self[k]')})",
        "values must be label values: empty or " + LABEL_TEXT,
        message_expression=(
            f"self.filter(k, !({cel_label_value_ok('self[k]')}))"
            '.map(k, "label value \'" + self[k] + "\' for \'" + k + '
            + cel_string("': " + LABEL_VALUE_TEXT)
            + ")[0]"
        ),
    )


Labels = Annotated[
    dict[str, Annotated[str, CRDSchema({"maxLength": MAX_LABEL_VALUE_LENGTH})]],
    Field(max_length=MAX_LABELS),
    AfterValidator(check_labels),
    validations(_label_key_rule(), _label_value_rule()),
]
LabelKeyed = Annotated[
    dict[str, str],
    Field(max_length=MAX_LABELS),
    validations(_label_key_rule()),
]
