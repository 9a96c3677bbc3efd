"""Patterns and size bounds that several field groups share. Patterns used by one group
only (label names and values, SANs, durations, quantities) live with that group."""

from __future__ import annotations

import re

# Every syntax rule of the API is written once and used twice: compiled for the operator's
# own check, and embedded in the CRD's CEL rules (RE2 reads them the same way) so that the
# API server refuses the same input at `kubectl apply`. Only [.] is used for a literal dot,
# so that no pattern needs escaping inside a CEL string literal.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PLATFORM_PATTERN = r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$"

DNS_SUBDOMAIN_RE = re.compile(DNS_SUBDOMAIN_PATTERN)
PLATFORM_RE = re.compile(PLATFORM_PATTERN)

# Bounds the CRD declares so that the API server can bound the cost of its CEL rules (it
# refuses a CRD whose rules it cannot prove cheap). The model enforces the same bounds, so
# the operator and the API server accept the same Builders. Each is far above real use.
MAX_QUANTITY_LENGTH = 64  # a quantity written as a string
MAX_LABELS = 64  # entries in nodeSelector, podLabels, podAnnotations
MAX_LABEL_KEY_LENGTH = 253 + 1 + 63  # DNS-subdomain prefix, '/', name
MAX_LABEL_VALUE_LENGTH = 63
MAX_OBJECT_NAME_LENGTH = 253
MAX_IMAGE_LENGTH = 1024
MAX_ARGS = 128
MAX_ARG_LENGTH = 4096
MAX_PLATFORMS = 32
MAX_PLATFORM_LENGTH = 64
MAX_SANS = 64
MAX_SAN_LENGTH = 253
MAX_TOLERATIONS = 64
MAX_RESOURCES = 32
MAX_PULL_SECRETS = 32
