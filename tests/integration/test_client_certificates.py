"""Per-user client certificates through the CertificateSigningRequest API, read back from
the real API server: a user the examples' Roles bind gets a certificate for themselves
(CN = their user name, O = their groups), signed by the Builder's CA, for no longer than the
chart's cap; a user without the Builder verb, or a request naming no Builder, is denied with
the reason in the request's conditions; a request for another signer is left alone. The
users authenticate with client certificates of the local cluster, as real users would: the
identity in the request is the API server's, not the test's."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import accepted_issuers, builder, issued_by_one_of, wait_phase, wait_until

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SIGNER = "buildkit.dev/client"
ANNOTATION = "buildkit.dev/builder"
USER_RBAC = REPO / "examples" / "builder-user-rbac.yaml"
RUN = uuid.uuid4().hex[:8]  # labels this run's requests, deleted afterwards


def chart_cap() -> timedelta:
    """The chart's default cap on a certificate's lifetime (values.yaml)."""
    values = yaml.safe_load((REPO / "charts" / "buildkit-operator" / "values.yaml").read_text())
    text = values["clientCertificates"]["maxLifetime"]
    assert text.endswith("h"), text
    return timedelta(hours=int(text[:-1]))


@pytest.fixture(scope="module")
def user_roles(kubectl_admin: Kubectl) -> Iterator[None]:
    kubectl_admin("apply", "-f", str(USER_RBAC))
    yield
    kubectl_admin("delete", "-f", str(USER_RBAC), "--ignore-not-found")


def as_user(cluster: Any, user: str, groups: list[str]) -> Kubectl:
    return Kubectl(cluster.kubectl_path, cluster.client_kubeconfig(user, groups))


def bind(k: Kubectl, user: str, namespace: str | None) -> None:
    """Bind ``user`` to the requester role, and (with ``namespace``) to the Builder verb."""
    k(
        "create", "clusterrolebinding", f"csr-{user}",
        "--clusterrole=buildkit-client-certificate-requester", f"--user={user}",
    )  # fmt: skip
    if namespace:
        k(
            "create", "rolebinding", f"use-{user}", "-n", namespace,
            "--clusterrole=buildkit-builder-user", f"--user={user}",
        )  # fmt: skip


def request(
    kubectl: Kubectl,
    target: str | None,
    seconds: int | None = None,
    signer: str = SIGNER,
    common_name: str = "whoever-i-say",
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """Create a request as the user behind ``kubectl``; the key stays here."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    name = f"req-{uuid.uuid4().hex[:8]}"
    spec: dict[str, Any] = {
        "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
        "signerName": signer,
        "usages": ["digital signature", "client auth"],
    }
    if seconds is not None:
        spec["expirationSeconds"] = seconds
    meta: dict[str, Any] = {"name": name, "labels": {"test-run": RUN}}
    if target is not None:
        meta["annotations"] = {ANNOTATION: target}
    kubectl.apply(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": meta,
            "spec": spec,
        }
    )
    return name, key


def decided(kubectl: Kubectl, name: str) -> dict[str, Any]:
    """The request once it has a certificate or a Denied/Failed condition."""

    def check() -> dict[str, Any] | None:
        obj = kubectl.json("get", "csr", name)
        status = obj.get("status") or {}
        kinds = {c["type"] for c in status.get("conditions") or []}
        return obj if status.get("certificate") or kinds & {"Denied", "Failed"} else None

    return dict(wait_until(f"request {name} decided", check, timeout=60))


def ca_of(k: Kubectl, namespace: str, name: str) -> x509.Certificate:
    secret = wait_until(
        f"Secret {name}-ca", lambda: k.json("get", "secret", f"{name}-ca", "-n", namespace)
    )
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.pem"]))


@pytest.fixture
def cleanup_requests(kubectl_admin: Kubectl) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for user in made:
        kubectl_admin.run("delete", "clusterrolebinding", f"csr-{user}", "--ignore-not-found")
    kubectl_admin.run("delete", "csr", "-l", f"test-run={RUN}", "--ignore-not-found")


def test_a_user_with_the_builder_verb_gets_a_certificate_of_their_own(
    k: Kubectl, cluster: Any, namespace: str, user_roles: None, cleanup_requests: list[str]
) -> None:
    k.apply(builder("shared", namespace, cache={"type": "ephemeral"}))
    ca = ca_of(k, namespace, "shared")
    user = f"alice-{uuid.uuid4().hex[:6]}"
    cleanup_requests.append(user)
    bind(k, user, namespace)
    alice = as_user(cluster, user, ["devs"])
    # The user holds nothing on Secrets: the key is theirs, made here.
    assert alice.run("auth", "can-i", "get", "secrets", "-n", namespace).stdout.strip() == "no"

    before = datetime.now(UTC)
    name, key = request(alice, f"{namespace}/shared", seconds=3600)
    obj = decided(alice, name)  # the user reads back their own request
    approved = [c for c in obj["status"].get("conditions") or [] if c["type"] == "Approved"]
    assert approved, obj["status"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))

    # Signed by a CA the Builder's daemons take clients of, for the public key of the
    # request, for the API server's identity of the requester (not the CN it claimed).
    assert issued_by_one_of(cert, accepted_issuers(k, namespace, "shared"))
    # ...and not by the CA clients verify the daemons with: that one only signs the
    # daemons' certificate (and the shared client one), so revoking users never touches it.
    assert not issued_by_one_of(cert, [ca])
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
    groups = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    assert "devs" in groups
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # expirationSeconds is honoured when shorter than the cap.
    assert cert.not_valid_after_utc <= datetime.now(UTC) + timedelta(hours=1)
    assert cert.not_valid_after_utc >= before + timedelta(minutes=55)

    # A request asking for longer than the chart's cap gets the cap.
    name, _ = request(alice, f"{namespace}/shared", seconds=30 * 24 * 3600)
    long = decided(alice, name)
    cert = x509.load_pem_x509_certificate(base64.b64decode(long["status"]["certificate"]))
    assert cert.not_valid_after_utc <= datetime.now(UTC) + chart_cap()
    assert cert.not_valid_after_utc >= before + chart_cap() - timedelta(minutes=5)


def test_a_user_without_the_builder_verb_is_denied_with_the_reason(
    k: Kubectl, cluster: Any, namespace: str, user_roles: None, cleanup_requests: list[str]
) -> None:
    k.apply(builder("private", namespace, cache={"type": "ephemeral"}))
    ca_of(k, namespace, "private")
    user = f"bob-{uuid.uuid4().hex[:6]}"
    cleanup_requests.append(user)
    bind(k, user, None)  # may create requests, may not use the Builder
    bob = as_user(cluster, user, ["devs"])

    name, _ = request(bob, f"{namespace}/private")
    obj = decided(bob, name)
    (denied,) = [c for c in obj["status"]["conditions"] if c["type"] == "Denied"]
    assert not obj["status"].get("certificate")
    assert f"{user} may not use" in denied["message"]
    assert f"private in namespace {namespace}" in denied["message"]

    # A request naming no Builder is denied, saying what is missing.
    name, _ = request(bob, None)
    obj = decided(bob, name)
    (denied,) = [c for c in obj["status"]["conditions"] if c["type"] == "Denied"]
    assert ANNOTATION in denied["message"]


def test_a_request_for_another_signer_is_left_alone(
    k: Kubectl, cluster: Any, namespace: str, user_roles: None, cleanup_requests: list[str]
) -> None:
    k.apply(builder("other", namespace, cache={"type": "ephemeral"}))
    ca_of(k, namespace, "other")
    user = f"carol-{uuid.uuid4().hex[:6]}"
    cleanup_requests.append(user)
    bind(k, user, namespace)
    carol = as_user(cluster, user, [])
    theirs, _ = request(carol, f"{namespace}/other", signer="example.com/not-ours")
    ours, _ = request(carol, f"{namespace}/other")
    decided(carol, ours)  # ours was seen and decided after theirs was created
    status = k.json("get", "csr", theirs).get("status") or {}
    assert not status.get("conditions") and not status.get("certificate")


def test_without_the_shared_secret_users_still_get_certificates(
    k: Kubectl, cluster: Any, namespace: str, user_roles: None, cleanup_requests: list[str]
) -> None:
    """tls.sharedClientCertificate: false: no <name>-client-tls Secret (a live one is
    deleted when the field is turned off), the Builder still serves and publishes its CA,
    and a user with the Builder verb gets a certificate verifying against that CA."""
    k.apply(builder("solo", namespace, cache={"type": "ephemeral"}))
    wait_until(
        "the shared client Secret",
        lambda: k.json("get", "secret", "solo-client-tls", "-n", namespace),
    )
    k(
        "patch", "builder", "solo", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"tls": {"sharedClientCertificate": false}}}',
    )  # fmt: skip

    def gone() -> bool:
        return "NotFound" in k("get", "secret", "solo-client-tls", "-n", namespace, check=False)

    wait_until("the shared client Secret deleted", gone)
    obj = wait_phase(k, "solo", namespace, "Ready")
    assert "clientSecretName" not in obj["status"]
    ca = x509.load_pem_x509_certificate(obj["status"]["caCertificate"].encode())
    assert ca == ca_of(k, namespace, "solo")

    user = f"dave-{uuid.uuid4().hex[:6]}"
    cleanup_requests.append(user)
    bind(k, user, namespace)
    dave = as_user(cluster, user, [])
    name, _ = request(dave, f"{namespace}/solo")
    signed = decided(dave, name)
    cert = x509.load_pem_x509_certificate(base64.b64decode(signed["status"]["certificate"]))
    assert issued_by_one_of(cert, accepted_issuers(k, namespace, "solo"))
    # And it stays gone: the operator does not write it back.
    assert gone()
