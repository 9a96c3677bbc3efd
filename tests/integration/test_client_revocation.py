"""tls.revokedBefore, against the real API server: every client certificate issued before
the time stops being one the daemons accept (users' own and the shared one), the daemons
restart onto the new list, and the CA that clients verify the daemons with is never
re-issued. Refused at `kubectl apply` where it cannot apply. That a real buildkitd then
refuses such a certificate is tests/e2e/test_buildkitd_user_certificates.py's."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from harness import (
    accepted_issuers,
    builder,
    events_of,
    get,
    issued_by_one_of,
    patch_spec,
    settle,
    wait_phase,
    wait_until,
    writes_in,
)
from test_client_certificates import (
    as_user,
    bind,
    cleanup_requests,  # noqa: F401  (a fixture)
    decided,
    request,
    user_roles,  # noqa: F401  (a fixture)
)

from localcluster.kubectl import Kubectl, KubectlError

pytestmark = pytest.mark.integration


def secret(k: Kubectl, ns: str, name: str) -> dict[str, bytes]:
    data = get(k, "secret", name, ns)["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


def certificate_of(signed: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(signed["status"]["certificate"]))


def tls_checksum(k: Kubectl, ns: str, name: str) -> str:
    template = get(k, "deployment", name, ns)["spec"]["template"]
    annotations = template["metadata"].get("annotations") or {}
    (value,) = [v for key, v in annotations.items() if "tls" in key]
    return str(value)


def test_a_revocation_cuts_off_older_client_certificates_and_keeps_the_ca(
    k: Kubectl,
    cluster: Any,
    namespace: str,
    user_roles: None,  # noqa: F811
    cleanup_requests: list[str],  # noqa: F811
) -> None:
    k.apply(builder("rev", namespace, cache={"type": "ephemeral"}))
    ready = wait_phase(k, "rev", namespace, "Ready")
    ca_before = secret(k, namespace, "rev-ca")
    shared_before = x509.load_pem_x509_certificate(
        secret(k, namespace, "rev-client-tls")["cert.pem"]
    )
    checksum_before = tls_checksum(k, namespace, "rev-0")
    user = f"erin-{uuid.uuid4().hex[:6]}"
    cleanup_requests.append(user)
    bind(k, user, namespace)
    erin = as_user(cluster, user, [])
    name, _ = request(erin, f"{namespace}/rev")
    old = certificate_of(decided(erin, name))
    issuers_before = accepted_issuers(k, namespace, "rev")
    assert issued_by_one_of(old, issuers_before)
    assert issued_by_one_of(shared_before, issuers_before)

    time.sleep(1.1)  # the revocation is to the second: let it fall after both certificates
    cut = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch_spec(k, "rev", namespace, {"tls": {"revokedBefore": cut}})

    def new_issuers() -> list[x509.Certificate] | None:
        issuers = accepted_issuers(k, namespace, "rev")
        return issuers if issuers != issuers_before else None

    issuers_after = wait_until("the daemons' accepted client CAs replaced", new_issuers)
    # Nothing issued before the cut is accepted any more: a user's, and the shared one.
    assert not issued_by_one_of(old, issuers_after)
    assert not issued_by_one_of(shared_before, issuers_after)
    # The shared Secret holds a certificate the daemons accept again.
    shared_after = x509.load_pem_x509_certificate(
        secret(k, namespace, "rev-client-tls")["cert.pem"]
    )
    assert issued_by_one_of(shared_after, issuers_after)
    # The daemons restart onto the new list, and the Builder is Ready again.
    wait_until(
        "the daemon's pod template rolled",
        lambda: tls_checksum(k, namespace, "rev-0") != checksum_before,
    )
    after = wait_phase(k, "rev", namespace, "Ready")
    # The CA clients verify the daemons with is the same, key and all; so is what status
    # publishes of it: nobody's trust in the daemons is broken by a revocation.
    ca_after = secret(k, namespace, "rev-ca")
    assert ca_after["ca.pem"] == ca_before["ca.pem"] and ca_after["key.pem"] == ca_before["key.pem"]
    assert after["status"]["caCertificate"] == ready["status"]["caCertificate"]
    # The user asks again (what `connect` does) and is accepted.
    name, _ = request(erin, f"{namespace}/rev")
    assert issued_by_one_of(certificate_of(decided(erin, name)), issuers_after)
    # The operator says what it did, naming the field.
    messages = " ".join(e.get("message", "") for e in events_of(k, namespace, "rev"))
    assert "tls.revokedBefore" in messages, messages

    # Level-based: once done, an unrelated edit re-issues nothing.
    quiet = settle(cluster, namespace)
    k("label", "builder", "rev", "-n", namespace, "team=a")
    settle(cluster, namespace)
    secrets_written = [w for w in writes_in(cluster, namespace, quiet) if "/secrets" in w]
    assert secrets_written == [], secrets_written
    assert secret(k, namespace, "rev-ca") == ca_after


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ({"mode": "secret", "secretName": "mine", "revokedBefore": "2026-01-01T00:00:00Z"},
         "tls.revokedBefore applies to the certificates the operator signs"),
        ({"revokedBefore": "yesterday"}, "revokedBefore"),
        ({"revokedBefore": "2026-01-01 00:00:00"}, "revokedBefore"),
    ],
)  # fmt: skip
def test_a_revocation_that_cannot_apply_is_refused_at_apply(
    k: Kubectl, namespace: str, tls: dict[str, Any], says: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        k.apply(builder("bad-revocation", namespace, tls=tls))
    assert says in str(refused.value), str(refused.value)
