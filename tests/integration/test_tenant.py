"""What a Builder author cannot obtain through the operator, read back from the API server:
a raw buildkitd.config key that reaches the listeners, paths or sandbox the operator owns
(the Builder is Invalid naming the key, the live ConfigMap never carries it), and another
Builder's keys or a client certificate as tls.secretName (reported, never mounted), and a
status write of the spec last applied (never read: the operator keeps it on the Builder's
ConfigMap)."""

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


ATTACKS = (
    ("attacker", "victim-client-tls"),
    ("attacker-ca", "victim-ca"),
    ("attacker-server", "victim-server-tls"),
)


def test_another_builders_secret_is_refused_and_never_mounted(k: Kubectl, namespace: str) -> None:
    """Builder attacker names victim's client Secret (and its CA Secret, and its server
    Secret, which does hold a serverAuth certificate): reported naming the Secret and why,
    no Deployment of attacker, nothing mounts victim's client key but victim itself never
    mounts it either (read from the API server). Only a Builder's own server Secret may be
    named by that Builder (test_hand_edits)."""
    k.apply(builder("victim", namespace, cache=EPHEMERAL))
    wait_phase(k, "victim", namespace, "Ready")
    assert get(k, "secret", "victim-client-tls", namespace)  # the key a tenant wants
    for name, secret in ATTACKS:
        k.apply(
            builder(name, namespace, cache=EPHEMERAL, tls={"mode": "secret", "secretName": secret})
        )
    for name, secret in ATTACKS:
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
    # victim's server Secret is mounted by victim's daemon alone.
    assert {
        d["metadata"]["name"]
        for d in k.json("get", "deployments", "-n", namespace)["items"]
        if "victim-server-tls" in json.dumps(d["spec"]["template"]["spec"].get("volumes", []))
    } == {"victim-0"}


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


APPLIED_SPEC = "buildkit.dev/applied-spec"


def _status_write(k: Kubectl, ns: str, name: str, status: dict[str, Any]) -> None:
    """Set each of ``status``'s keys whole (a merge patch would merge into the old value)."""
    patch = [{"op": "add", "path": f"/status/{key}", "value": v} for key, v in status.items()]
    k(
        "patch", "builder", name, "-n", ns, "--subresource=status", "--type=json",
        "-p", json.dumps(patch),
    )  # fmt: skip


def _stored_spec(k: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    annotations = get(k, "configmap", f"{name}-config", ns)["metadata"].get("annotations") or {}
    text = annotations.get(APPLIED_SPEC)
    return json.loads(text) if text is not None else None


def _daemons(k: Kubectl, ns: str, name: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in deployments(k, ns, name)}


def test_a_status_write_does_not_decide_what_runs(k: Kubectl, namespace: str) -> None:
    """A status writer puts a spec of their own in status.appliedSpec, then the spec is
    edited so that it cannot be used (a tls Secret that does not exist): what runs stays
    what the operator last applied (read from the API server). First the privileged spec
    with an image of the writer's; then one that asks for no privilege at all, only three
    daemons: a status write decides nothing, privileged or not."""
    k.apply(builder("target", namespace, cache=EPHEMERAL))
    wait_phase(k, "target", namespace, "Ready")
    applied = get(k, "builder", "target", namespace)["spec"]
    assert _stored_spec(k, namespace, "target") == applied
    # The spec first (reported, what runs kept as last applied), then the status write.
    patch_spec(k, "target", namespace, {"tls": {"mode": "secret", "secretName": "missing"}})
    wait_until(
        "the missing Secret reported",
        lambda: "Secret missing" in status_message(k, namespace, "target"),
        90,
    )
    forgeries = [
        {"securityProfile": "privileged", "image": EVIL, "cache": EPHEMERAL},
        {"replicas": 3, "cache": EPHEMERAL},
    ]
    for n, forged in enumerate(forgeries, start=2):
        _status_write(k, namespace, "target", {"appliedSpec": forged})
        # A status write alone starts no pass; the next spec edit does.
        secret = f"missing-{n}"
        patch_spec(k, "target", namespace, {"tls": {"mode": "secret", "secretName": secret}})
        wait_until(
            f"Secret {secret} reported",
            lambda secret=secret: f"Secret {secret}" in status_message(k, namespace, "target"),
            90,
        )
        daemons = _daemons(k, namespace, "target")
        assert set(daemons) == {"target-0"}, (forged, sorted(daemons))
        for dep in daemons.values():
            assert dep["spec"]["replicas"] == 1
            for container in dep["spec"]["template"]["spec"]["containers"]:
                assert container["image"] != EVIL, dep["metadata"]["name"]
                assert not (container.get("securityContext") or {}).get("privileged"), container
        assert _stored_spec(k, namespace, "target") == applied


def test_the_spec_last_applied_is_kept_where_only_the_operator_writes(
    k: Kubectl, namespace: str
) -> None:
    """The spec last applied lives on the Builder's own ConfigMap, written by the operator's
    apply: no status write reaches it, and a hand edit of it is put back."""
    k.apply(builder("keeper", namespace, cache=EPHEMERAL))
    wait_phase(k, "keeper", namespace, "Ready")
    applied = get(k, "builder", "keeper", namespace)["spec"]
    config = k.json("get", "configmap", "keeper-config", "-n", namespace, "--show-managed-fields")
    owners = [
        entry["manager"]
        for entry in config["metadata"]["managedFields"]
        if f"f:{APPLIED_SPEC}" in json.dumps(entry.get("fieldsV1") or {})
    ]
    assert owners == ["buildkit-operator"], owners
    owner = config["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Builder", "keeper", True)
    # A status write changes nothing of the stored spec.
    _status_write(k, namespace, "keeper", {"appliedSpec": {"replicas": 3}})
    patch_spec(k, "keeper", namespace, {"drain": {"maxWaitSeconds": 60}})
    applied = get(k, "builder", "keeper", namespace)["spec"]
    wait_until("the spec edit stored", lambda: _stored_spec(k, namespace, "keeper") == applied, 30)
    # A hand edit of the stored spec is put back.
    k("annotate", "configmap", "keeper-config", "-n", namespace, "--overwrite",
      f"{APPLIED_SPEC}={json.dumps({'replicas': 3})}")  # fmt: skip
    wait_until(
        "the hand edit put back", lambda: _stored_spec(k, namespace, "keeper") == applied, 30
    )


def test_a_builder_of_the_previous_release_is_left_running_untouched(
    k: Kubectl, namespace: str
) -> None:
    """A Builder applied by the previous release keeps its last applied spec only in
    status.appliedSpec. While its spec is unusable nothing stands in for it: its daemon is
    neither torn down nor changed, and the status says why; once the spec is usable again
    the operator applies it and stores it."""
    k.apply(builder("legacy", namespace, cache=EPHEMERAL))
    wait_phase(k, "legacy", namespace, "Ready")
    patch_spec(k, "legacy", namespace, {"tls": {"mode": "secret", "secretName": "missing"}})
    wait_until(
        "the missing Secret reported",
        lambda: "Secret missing" in status_message(k, namespace, "legacy"),
        90,
    )
    # What the previous release left: no stored spec, a status claiming one (three daemons).
    k("annotate", "configmap", "legacy-config", "-n", namespace, f"{APPLIED_SPEC}-")
    _status_write(k, namespace, "legacy", {"appliedSpec": {"replicas": 3, "cache": EPHEMERAL}})
    before = _daemons(k, namespace, "legacy")
    patch_spec(k, "legacy", namespace, {"tls": {"mode": "secret", "secretName": "missing-2"}})
    # The removal alone may start a pass: the edit's own pass is the one that names it.
    wait_until(
        "nothing stored reported after the edit",
        lambda: all(
            part in status_message(k, namespace, "legacy")
            for part in ("Secret missing-2", "status.appliedSpec is never used")
        ),
        90,
    )
    after = _daemons(k, namespace, "legacy")
    assert set(after) == set(before) == {"legacy-0"}
    assert (
        after["legacy-0"]["metadata"]["generation"] == before["legacy-0"]["metadata"]["generation"]
    )
    assert after["legacy-0"]["spec"]["replicas"] == 1
    assert _stored_spec(k, namespace, "legacy") is None
    # A usable spec again: applied, and stored where only the operator writes.
    patch_spec(k, "legacy", namespace, {"tls": {"mode": "auto", "secretName": None}})
    wait_phase(k, "legacy", namespace, "Ready")
    applied = get(k, "builder", "legacy", namespace)["spec"]
    wait_until("the spec stored", lambda: _stored_spec(k, namespace, "legacy") == applied, 30)
    assert set(_daemons(k, namespace, "legacy")) == {"legacy-0"}
