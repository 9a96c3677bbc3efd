"""What a Builder author cannot obtain through the operator, read back from the API server:
a raw buildkitd.config key that reaches the listeners, paths or sandbox the operator owns
(the Builder is Invalid naming the key, the live ConfigMap never carries it), and another
Builder's keys or a client certificate as tls.secretName (reported, never mounted)."""

from __future__ import annotations

import base64
import json
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import builder, get, patch_spec, wait_phase, wait_until

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

EPHEMERAL = {"type": "ephemeral"}
DEBUG_LISTENER = '[grpc]\ndebugAddress = "0.0.0.0:6060"\n'


def config_maps(k: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    items = k.json("get", "configmaps", "-n", ns, "-l", f"app.kubernetes.io/instance={name}")
    return list(items["items"])


def deployments(k: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    items = k.json("get", "deployments", "-n", ns, "-l", f"app.kubernetes.io/instance={name}")
    return list(items["items"])


def live_toml(k: Kubectl, ns: str, name: str) -> dict[str, Any]:
    (config_map,) = config_maps(k, ns, name)
    return tomllib.loads(config_map["data"]["buildkitd.toml"])


def contains(live: Any, wanted: Any) -> bool:
    """Whether every key of ``wanted`` is in ``live`` with its value, at every depth."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value) for key, value in wanted.items()
        )
    return bool(live == wanted)


def status_message(k: Kubectl, ns: str, name: str) -> str:
    return str((get(k, "builder", name, ns).get("status") or {}).get("message", ""))


# --- raw buildkitd.config ----------------------------------------------------------------


def test_a_debug_listener_in_the_config_is_invalid_and_never_merged(
    k: Kubectl, namespace: str
) -> None:
    """The reserved --debugaddr, spelled as buildkitd.toml: a new Builder is Invalid naming
    grpc.debugAddress and gets no ConfigMap; a running one edited so is Invalid too, and its
    live ConfigMap (read from the API server) still has no debug listener."""
    k.apply(builder("fresh", namespace, cache=EPHEMERAL, buildkitd={"config": DEBUG_LISTENER}))
    k.apply(builder("runs", namespace, cache=EPHEMERAL))
    obj = wait_phase(k, "fresh", namespace, "Invalid")
    assert "spec.buildkitd.config: key grpc.debugAddress is not allowed" in obj["status"]["message"]
    assert config_maps(k, namespace, "fresh") == [] and deployments(k, namespace, "fresh") == []

    wait_phase(k, "runs", namespace, "Ready")
    patch_spec(k, "runs", namespace, {"buildkitd": {"config": DEBUG_LISTENER}})
    obj = wait_phase(k, "runs", namespace, "Invalid")
    assert "key grpc.debugAddress is not allowed" in obj["status"]["message"]
    (config_map,) = config_maps(k, namespace, "runs")
    assert "debugAddress" not in config_map["data"]["buildkitd.toml"]
    assert "grpc" not in live_toml(k, namespace, "runs")


# (Builder, raw config, the key: None where the config must be merged)
KEYS: list[tuple[str, str, str | None]] = [
    ("listener-case", '[GRPC]\nDebugAddress = "0.0.0.0:6060"\n', "GRPC.DebugAddress"),
    ("runtime", '[worker.oci]\nbinary = "/bin/sh"\n', "worker.oci.binary"),
    ("sandbox", "[worker.oci]\nnoProcessSandbox = true\n", "worker.oci.noProcessSandbox"),
    ("state", 'root = "/host"\n', "root"),
    ("containerd", '[worker.containerd]\naddress = "/run/containerd.sock"\n',
     "worker.containerd.address"),
    ("devices", 'cdi.specDirs = ["/etc/cdi"]\n', "cdi.specDirs"),
    ("mirrors", '[registry."docker.io"]\nmirrors = ["mirror.internal:5000"]\n', None),
    ("gc", "[[worker.oci.gcpolicy]]\nall = true\nkeepDuration = \"48h\"\n", None),
    ("history", "[history]\nmaxEntries = 5\n", None),
]  # fmt: skip


def test_each_config_key_is_merged_into_the_live_config_map_or_named(
    k: Kubectl, namespace: str
) -> None:
    """A tenant's tuning reaches the live ConfigMap; a key reaching what the platform owns,
    in any spelling buildkitd's decoder reads, makes the Builder Invalid naming it."""
    for name, raw, _ in KEYS:
        k.apply(builder(name, namespace, cache=EPHEMERAL, buildkitd={"config": raw}))
    for name, raw, refused in KEYS:
        if refused is None:
            wait_until(f"{name}'s ConfigMap", lambda n=name: config_maps(k, namespace, n), 90)
            live = live_toml(k, namespace, name)
            assert contains(live, tomllib.loads(raw)), (name, live)
        else:
            obj = wait_phase(k, name, namespace, "Invalid")
            assert f"key {refused} is not allowed" in obj["status"]["message"], obj["status"]
            assert config_maps(k, namespace, name) == []


# --- tls.secretName ----------------------------------------------------------------------


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
    )
    if usage:
        cert = cert.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return cert.sign(signer, hashes.SHA256())


def _tls_secret(name: str, ns: str, usage: list[x509.ObjectIdentifier]) -> dict[str, Any]:
    """A Secret of the author's own (no operator label, no owner) with ca/cert/key."""
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate(ca_key, "author-ca", None)
    leaf = _certificate(leaf_key, "author", (ca, ca_key), usage)
    pem = serialization.Encoding.PEM
    data = {
        "ca.pem": ca.public_bytes(pem),
        "cert.pem": leaf.public_bytes(pem),
        "key.pem": leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def _mounted_secrets(k: Kubectl, ns: str) -> set[str]:
    """Every Secret any Deployment of the namespace mounts (from the API server)."""
    names = set()
    for dep in k.json("get", "deployments", "-n", ns)["items"]:
        for volume in dep["spec"]["template"]["spec"].get("volumes") or []:
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
            for source in (volume.get("projected") or {}).get("sources") or []:
                if "secret" in source:
                    names.add(source["secret"]["name"])
    return names


def test_another_builders_secret_is_refused_and_never_mounted(k: Kubectl, namespace: str) -> None:
    """Builder attacker names victim's client Secret (and its CA Secret): reported naming the
    Secret and why, no Deployment of attacker, nothing mounts victim's client key but
    victim itself never mounts it either (read from the API server)."""
    k.apply(builder("victim", namespace, cache=EPHEMERAL))
    wait_phase(k, "victim", namespace, "Ready")
    assert get(k, "secret", "victim-client-tls", namespace)  # the key a tenant wants
    for name, secret in (("attacker", "victim-client-tls"), ("attacker-ca", "victim-ca")):
        k.apply(
            builder(name, namespace, cache=EPHEMERAL, tls={"mode": "secret", "secretName": secret})
        )
    for name, secret in (("attacker", "victim-client-tls"), ("attacker-ca", "victim-ca")):
        wait_until(
            f"{name} reports {secret}",
            lambda n=name, s=secret: (
                f"Secret {s} is managed by buildkit-operator" in status_message(k, namespace, n)
            ),
            90,
        )
        message = status_message(k, namespace, name)
        assert "owned by Builder victim" in message and "spec.tls.secretName" in message
        assert deployments(k, namespace, name) == []
        events = k.json(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
        )["items"]
        assert any(secret in e["message"] and e["type"] == "Warning" for e in events), events
    mounted = _mounted_secrets(k, namespace)
    assert "victim-client-tls" not in mounted and "victim-ca" not in mounted, mounted


def test_a_client_certificate_of_the_authors_own_is_refused(k: Kubectl, namespace: str) -> None:
    """The author's own Secret with a clientAuth-only certificate is no server certificate:
    reported naming serverAuth, not mounted; the same author's server certificate is served."""
    k.apply(_tls_secret("client-only", namespace, [ExtendedKeyUsageOID.CLIENT_AUTH]))
    k.apply(_tls_secret("server", namespace, [ExtendedKeyUsageOID.SERVER_AUTH]))
    k.apply(
        builder(
            "client", namespace, cache=EPHEMERAL,
            tls={"mode": "secret", "secretName": "client-only"},
        )
    )  # fmt: skip
    k.apply(
        builder(
            "served", namespace, cache=EPHEMERAL, tls={"mode": "secret", "secretName": "server"}
        )
    )
    wait_until(
        "client reports its certificate",
        lambda: "serverAuth" in status_message(k, namespace, "client"),
        90,
    )
    assert "Secret client-only" in status_message(k, namespace, "client")
    assert deployments(k, namespace, "client") == []
    wait_phase(k, "served", namespace, "Ready")
    assert _mounted_secrets(k, namespace) == {"server"}


# --- the spec last applied ---------------------------------------------------------------


EVIL = "evil.example/buildkit:latest"


def test_a_status_write_does_not_decide_what_runs(k: Kubectl, namespace: str) -> None:
    """A status writer puts a privileged spec with an image of their own in
    status.appliedSpec, then the spec is edited so that it cannot be used (a tls Secret that
    does not exist): no Deployment runs privileged or that image (read from the API server),
    and the status says the stored spec was not used."""
    k.apply(builder("target", namespace, cache=EPHEMERAL))
    wait_phase(k, "target", namespace, "Ready")
    # The spec first (reported, what runs kept as last applied), then the status write.
    patch_spec(k, "target", namespace, {"tls": {"mode": "secret", "secretName": "missing"}})
    wait_until(
        "the missing Secret reported",
        lambda: "Secret missing" in status_message(k, namespace, "target"),
        90,
    )
    forged = {"securityProfile": "privileged", "image": EVIL, "cache": EPHEMERAL}
    k(
        "patch", "builder", "target", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"appliedSpec": forged}}),
    )  # fmt: skip
    # A status write alone starts no pass; the next spec edit does.
    patch_spec(k, "target", namespace, {"tls": {"mode": "secret", "secretName": "missing-2"}})
    wait_until(
        "the forged spec reported",
        lambda: "status.appliedSpec: not used" in status_message(k, namespace, "target"),
        90,
    )
    message = status_message(k, namespace, "target")
    assert "spec.securityProfile" in message and "spec.image" in message, message
    assert "Secret missing-2" in message, message
    for dep in deployments(k, namespace, "target"):
        for container in dep["spec"]["template"]["spec"]["containers"]:
            assert container["image"] != EVIL, dep["metadata"]["name"]
            assert not (container.get("securityContext") or {}).get("privileged"), container
