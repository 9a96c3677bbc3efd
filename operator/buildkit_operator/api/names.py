"""Names and labels of a Builder's children.

A Builder name may be 253 characters long and contain dots, while a Service name is a
63-character DNS-1035 label and a pod hostname a DNS-1123 label. Every child name is built
from one *base* per Builder that fits the strictest kind: the Builder name itself when it
already fits, otherwise a sanitised, truncated prefix plus a hash of the full name, so two
Builders in one namespace never share a child name. Suffixes are chosen so that none is a
suffix of another, which keeps children of different Builders apart too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MANAGED_BY = "buildkit-operator"
# The one field manager of every write, so server-side apply records what the operator owns.
FIELD_MANAGER = "buildkit-operator"
APP_NAME = "buildkitd"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_BUILDER = "buildkit.dev/builder"
LABEL_DAEMON = "buildkit.dev/daemon"
LABEL_POOL = "buildkit.dev/pool"

# The operator signs client certificates for this CSR signer name (and no other): a user's
# CertificateSigningRequest names the Builder in ANNOTATION_CSR_BUILDER ("<namespace>/<name>"),
# and is approved when the requester may USE_VERB that Builder.
SIGNER_NAME = "buildkit.dev/client"
ANNOTATION_CSR_BUILDER = "buildkit.dev/builder"
USE_VERB = "use"
ANNOTATION_CONFIG_HASH = "buildkit.dev/config-hash"
ANNOTATION_TLS_HASH = "buildkit.dev/tls-hash"
# On a Builder's ConfigMap: the spec the operator last applied (JSON), written only with the
# operator's apply of that ConfigMap; what runs falls back on it while the spec is unusable.
ANNOTATION_APPLIED_SPEC = "buildkit.dev/applied-spec"
# On each child but Secrets: a digest of the object as the operator last applied it, to tell
# a value a mutating admission keeps from a new intent (``reconcile/admitted.py``).
ANNOTATION_INTENT = "buildkit.dev/intent"
# A sleeping daemon's Deployment: since when it has been idle (scale to zero).
ANNOTATION_IDLE_SINCE = "buildkit.dev/idle-since"
# On a Builder: a wake request, set by `buildkit-operator connect` and `wake`.
ANNOTATION_WAKE = "buildkit.dev/wake"

# buildkitd's build port and its name on Services and containers.
PORT = 1234
PORT_NAME = "buildkitd"
# Longest suffix appended to the base ("-server-tls", "-cache-63", ...) leaves the base this
# much room inside a 63-character DNS label.
BASE_MAX = 50
_HASH_LEN = 8
_DNS_1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _hash(text: str, length: int = _HASH_LEN) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def base_name(builder: str) -> str:
    """The stem of every child name: a DNS-1035 label of at most BASE_MAX characters."""
    if len(builder) <= BASE_MAX and _DNS_1035_RE.match(builder):
        return builder
    stem = re.sub(r"[^a-z0-9-]", "-", builder.lower())
    if not stem[:1].isalpha():
        stem = "b" + stem
    stem = stem[: BASE_MAX - _HASH_LEN - 1].rstrip("-")
    return f"{stem}-{_hash(builder)}"


def label_value(builder: str) -> str:
    """The Builder name as a label value (63 characters at most, hashed when longer)."""
    if len(builder) <= 63:
        return builder
    return f"{builder[: 63 - _HASH_LEN - 1].rstrip('-.')}-{_hash(builder)}"


@dataclass(frozen=True)
class ChildNames:
    """Every name a Builder's children use."""

    builder: str

    @property
    def base(self) -> str:
        return base_name(self.builder)

    @property
    def service(self) -> str:
        return self.base

    @property
    def disruption_budget(self) -> str:
        return self.base

    @property
    def config_map(self) -> str:
        return f"{self.base}-config"

    @property
    def ca_secret(self) -> str:
        return f"{self.base}-ca"

    @property
    def server_secret(self) -> str:
        return f"{self.base}-server-tls"

    @property
    def client_secret(self) -> str:
        return f"{self.base}-client-tls"

    def daemon(self, index: int | str) -> str:
        """The Deployment of daemon ``index``, also its pod's hostname. A daemon of a pool
        has the id ``<index>-<platform slug>``: ending in letters or digits after a
        letter, it is never another Builder's ``<base>-<digits>``."""
        return f"{self.base}-{index}"

    def cache_claim(self, index: int | str) -> str:
        return f"{self.base}-cache-{index}"

    @property
    def daemons_service(self) -> str:
        """The headless Service that gives every daemon a DNS name of its own
        (``<daemon>.<this>.<namespace>.svc``). A hash suffix, not a word: any word after
        the base would be another Builder's base (``team-a-daemons``)."""
        return f"{self.base}-{_hash(self.builder + '/daemons')}"

    def pool_service(self, platform: str) -> str:
        """The Service in front of one pool's daemons."""
        return f"{self.base}-{_hash(self.builder + '/pool/' + platform)}"

    def daemon_host(self, index: int | str, namespace: str) -> str:
        return f"{self.daemon(index)}.{self.daemons_service}.{namespace}.svc"

    def pool_endpoint(self, platform: str, namespace: str) -> str:
        return f"tcp://{self.pool_service(platform)}.{namespace}.svc:1234"

    def endpoint(self, namespace: str) -> str:
        return f"tcp://{self.service}.{namespace}.svc:1234"


def selector_labels(builder: str) -> dict[str, str]:
    """Labels that select every pod of a Builder (the Service selector)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: label_value(builder)}


def daemon_selector_labels(builder: str, index: int | str) -> dict[str, str]:
    """Labels that select the pod of one daemon (a Deployment selector, immutable)."""
    return {**selector_labels(builder), LABEL_DAEMON: str(index)}


def child_labels(builder: str, component: str) -> dict[str, str]:
    """Labels on every child: ours, so the operator can find and watch what it manages."""
    return {
        **selector_labels(builder),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_BUILDER: label_value(builder),
    }
