"""The operator against the real control plane, driven the way a user drives it: kubectl.

The operator runs as a subprocess under its own client-certificate user, bound to the
ClusterRole the Helm chart ships, so every test here also proves that role is enough, and
the API server's audit log tells the operator's writes apart from everyone else's.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    MANAGED,
    OPERATOR_BIN,
    OPERATOR_USER,
    accepted_issuers,
    builder,
    child_writes,
    children,
    get,
    issued_by_one_of,
    operator_writes,
    patch_spec,
    pods_of,
    wait_phase,
    wait_until,
    writes_in,
)
from operator_process import OperatorProcess

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

# --- 1: a Builder becomes Ready where its nodeSelector says ---------------------------------


@pytest.mark.smoke
def test_builder_on_arm64_becomes_ready(k: Kubectl, namespace: str) -> None:
    k.apply(
        builder(
            "arm",
            namespace,
            replicas=2,
            nodeSelector={"kubernetes.io/arch": "arm64"},
            cache={"size": "5Gi", "storageClassName": "fast-ssd"},
        )
    )
    obj = wait_phase(k, "arm", namespace, "Ready")
    status = obj["status"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["ready"] == "2/2"
    assert status["endpoint"] == f"tcp://arm.{namespace}.svc:1234"
    assert status["clientSecretName"] == "arm-client-tls"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["certificateNotAfter"]
    client = get(k, "secret", "arm-client-tls", namespace)
    assert set(client["data"]) == {"ca.pem", "cert.pem", "key.pem"}

    pods = pods_of(k, namespace, "arm")
    assert len(pods) == 2
    for pod in pods:
        node = get(k, "node", pod["spec"]["nodeName"], "default")
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
        assert pod["status"]["phase"] == "Running"
    claims = k.json("get", "pvc", "-n", namespace, "-l", MANAGED)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["arm-cache-0", "arm-cache-1"]
    assert all(c["status"]["phase"] == "Bound" for c in claims)
    assert all(c["spec"]["storageClassName"] == "fast-ssd" for c in claims)
    # Each daemon mounts its own claim.
    mounted = {
        v["persistentVolumeClaim"]["claimName"]
        for p in pods
        for v in p["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert mounted == {"arm-cache-0", "arm-cache-1"}

    table = k("get", "bk", "-n", namespace)
    assert "READY" in table and "PHASE" in table and "ENDPOINT" in table
    assert "2/2" in table and "Ready" in table
    events = k("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=arm")
    assert "Created" in events


# --- 2: spec changes roll, recreate, reconfigure ------------------------------------------


def _template_hash(k: Kubectl, name: str, ns: str) -> str:
    dep = get(k, "deployment", name, ns)
    return json.dumps(dep["spec"]["template"], sort_keys=True)


def test_spec_changes_roll_or_recreate(k: Kubectl, namespace: str) -> None:
    k.apply(builder("roll", namespace, cache={"type": "ephemeral", "size": "1Gi"}))
    wait_phase(k, "roll", namespace, "Ready")
    first_pod = pods_of(k, namespace, "roll")[0]["metadata"]["name"]

    # A new image rolls the pod.
    patch_spec(k, "roll", namespace, {"image": "registry.example/buildkit:custom-rootless"})
    wait_until(
        "the pod to roll onto the new image",
        lambda: [
            p
            for p in pods_of(k, namespace, "roll")
            if p["spec"]["containers"][0]["image"] == "registry.example/buildkit:custom-rootless"
            and p["metadata"]["name"] != first_pod
            and p["status"].get("phase") == "Running"
        ],
    )
    wait_phase(k, "roll", namespace, "Ready")

    # maxParallelism changes the ConfigMap and rolls the pod (config checksum).
    before = get(k, "deployment", "roll-0", namespace)["spec"]["template"]["metadata"]
    patch_spec(k, "roll", namespace, {"buildkitd": {"maxParallelism": 3}})
    wait_until(
        "the ConfigMap to carry max-parallelism = 3",
        lambda: (
            "max-parallelism = 3"
            in get(k, "configmap", "roll-config", namespace)["data"]["buildkitd.toml"]
        ),
    )
    after = wait_until(
        "the pod template's config checksum to change",
        lambda: (
            meta
            if (meta := get(k, "deployment", "roll-0", namespace)["spec"]["template"]["metadata"])[
                "annotations"
            ]["buildkit.dev/config-hash"]
            != before["annotations"]["buildkit.dev/config-hash"]
            else None
        ),
    )
    assert (
        after["annotations"]["buildkit.dev/tls-hash"]
        == before["annotations"]["buildkit.dev/tls-hash"]
    )
    wait_phase(k, "roll", namespace, "Ready")

    # rootless -> rootful deletes and creates the workload anew.
    old_uid = get(k, "deployment", "roll-0", namespace)["metadata"]["uid"]
    patch_spec(k, "roll", namespace, {"rootless": False, "image": None})

    def recreated() -> dict[str, Any] | None:
        dep = get(k, "deployment", "roll-0", namespace)
        return dep if dep["metadata"]["uid"] != old_uid else None

    dep = wait_until("the Deployment to be recreated", recreated, timeout=90)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"] == {"privileged": True}
    assert container["image"].endswith("moby/buildkit:v0.34.2")
    assert "--oci-worker-no-process-sandbox" not in container["args"]
    wait_phase(k, "roll", namespace, "Ready")


# --- 3: children deleted by hand come back --------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "child"),
    [("deployment", "back-0"), ("service", "back"), ("secret", "back-server-tls")],
)
def test_deleted_child_comes_back(k: Kubectl, namespace: str, kind: str, child: str) -> None:
    k.apply(builder("back", namespace, cache={"type": "ephemeral", "size": "1Gi"}))
    wait_phase(k, "back", namespace, "Ready")
    old = get(k, kind, child, namespace)
    ca_before = get(k, "secret", "back-ca", namespace)["data"]
    k("delete", kind, child, "-n", namespace, "--wait=true")
    started = time.monotonic()
    new = wait_until(
        f"{kind} {child} to come back",
        lambda: (
            obj
            if (obj := get(k, kind, child, namespace))["metadata"]["uid"] != old["metadata"]["uid"]
            else None
        ),
        timeout=30,
    )
    print(f"{kind} {child} back after {time.monotonic() - started:.1f}s")
    assert new["metadata"]["ownerReferences"][0]["name"] == "back"
    # The CA is never re-issued because a leaf went missing.
    assert get(k, "secret", "back-ca", namespace)["data"] == ca_before
    wait_phase(k, "back", namespace, "Ready")


# --- 4: noCreate and noRecreate ---------------------------------------------------------------


def test_no_create_without_workload_reports_missing(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    since = time.time()
    k.apply(builder("adopt", namespace, noCreate=True))
    obj = wait_phase(k, "adopt", namespace, "Missing")
    assert "adopt-0" in obj["status"]["message"] and namespace in obj["status"]["message"]
    time.sleep(3)
    # From the audit log: nothing created (nor created and deleted again) at any moment;
    # only the Builder's status and its Events were written.
    assert child_writes(cluster, namespace, since) == [], "noCreate created something"
    assert children(k, namespace) == {}, "noCreate created something"


def test_no_create_adopts_existing_workload(k: Kubectl, namespace: str) -> None:
    rendered = subprocess.run(
        [str(OPERATOR_BIN), "render", "-f", "-", "-n", namespace],
        input=yaml.safe_dump(builder("adopt", namespace, noCreate=True,
                                     cache={"type": "ephemeral", "size": "1Gi"})),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    workload = next(d for d in yaml.safe_load_all(rendered) if d["kind"] == "Deployment")
    k.apply(workload)  # made by someone else, before the Builder exists
    k.apply(builder("adopt", namespace, noCreate=True, cache={"type": "ephemeral", "size": "1Gi"}))
    obj = wait_phase(k, "adopt", namespace, "Ready")
    assert obj["status"]["readyReplicas"] == 1
    dep = get(k, "deployment", "adopt-0", namespace)
    # Adopted, not taken: it stays the user's, so deleting the Builder leaves it.
    assert not dep["metadata"].get("ownerReferences")
    assert "service/adopt" in k("get", "service", "-n", namespace, "-o", "name")
    k("delete", "builder", "adopt", "-n", namespace, "--wait=true")
    wait_until(
        "the Builder's Service collected",
        lambda: "service/adopt" not in k("get", "service", "-n", namespace, "-o", "name"),
    )
    assert get(k, "deployment", "adopt-0", namespace)["metadata"]["uid"] == dep["metadata"]["uid"]


def test_no_recreate_reports_drift_then_applies(k: Kubectl, namespace: str, cluster: Any) -> None:
    k.apply(builder("hold", namespace, noRecreate=True, cache={"type": "ephemeral", "size": "1Gi"}))
    wait_phase(k, "hold", namespace, "Ready")
    before = {key: o["metadata"]["resourceVersion"] for key, o in children(k, namespace).items()}
    since = time.time()
    patch_spec(
        k,
        "hold",
        namespace,
        {"image": "registry.example/buildkit:held", "buildkitd": {"maxParallelism": 2}},
    )
    obj = wait_phase(k, "hold", namespace, "Drifted")
    drifted = obj["status"]["driftedFields"]
    assert any("Deployment hold-0" in f and "image" in f for f in drifted), drifted
    assert any("ConfigMap hold-config" in f for f in drifted), drifted
    cond = {c["type"]: c for c in obj["status"]["conditions"]}
    assert cond["Drifted"]["status"] == "True" and cond["Ready"]["status"] == "False"
    time.sleep(3)
    # From the audit log, over the whole time since the edit: no write to any child.
    assert child_writes(cluster, namespace, since) == [], "noRecreate touched a child"
    after = {key: o["metadata"]["resourceVersion"] for key, o in children(k, namespace).items()}
    assert after == before, "noRecreate touched a child"

    patch_spec(k, "hold", namespace, {"noRecreate": False})
    wait_phase(k, "hold", namespace, "Ready")
    dep = get(k, "deployment", "hold-0", namespace)
    assert (
        dep["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example/buildkit:held"
    )
    assert (
        "max-parallelism = 2"
        in get(k, "configmap", "hold-config", namespace)["data"]["buildkitd.toml"]
    )
    assert get(k, "builder", "hold", namespace)["status"]["driftedFields"] == []


# --- 5: deletion ------------------------------------------------------------------------------


@pytest.mark.parametrize("retain", [True, pytest.param(False, marks=pytest.mark.smoke)])
def test_delete_builder_removes_children(
    k: Kubectl, namespace: str, cluster: Any, retain: bool
) -> None:
    k.apply(builder("gone", namespace, replicas=2, cache={"size": "2Gi", "retain": retain}))
    wait_phase(k, "gone", namespace, "Ready")
    uids = {
        c["metadata"]["name"]: c["metadata"]["uid"]
        for c in k.json("get", "pvc", "-n", namespace)["items"]
    }
    since = time.time()
    k("delete", "builder", "gone", "-n", namespace, "--wait=true")
    wait_until(
        "the garbage collector to remove the children",
        lambda: set(children(k, namespace, "deployments,services,configmaps,secrets,pdb")) == set(),
        timeout=60,
    )
    claims = lambda: sorted(  # noqa: E731
        c["metadata"]["name"] for c in k.json("get", "pvc", "-n", namespace)["items"]
        if not c["metadata"].get("deletionTimestamp")
    )  # fmt: skip
    if retain:
        time.sleep(3)
        # From the audit log: the operator neither deleted nor changed a claim meanwhile.
        touched = [
            w for w in writes_in(cluster, namespace, since) if "/persistentvolumeclaims" in w
        ]
        assert touched == [], touched
        assert claims() == ["gone-cache-0", "gone-cache-1"]
        # A Builder of the same name finds its cache again: the same claims, not new ones
        # of the same names.
        k.apply(builder("gone", namespace, replicas=2, cache={"size": "2Gi", "retain": True}))
        wait_phase(k, "gone", namespace, "Ready")
        assert claims() == ["gone-cache-0", "gone-cache-1"]
        found = {
            c["metadata"]["name"]: c["metadata"]["uid"]
            for c in k.json("get", "pvc", "-n", namespace)["items"]
        }
        assert found == uids, "a retained claim was replaced"
    else:
        wait_until("the cache claims to be deleted", lambda: claims() == [], timeout=60)


# --- 8: an invalid edit leaves what runs alone -------------------------------------------------


def test_invalid_edit_keeps_builder_running(k: Kubectl, namespace: str, cluster: Any) -> None:
    k.apply(builder("bad", namespace, cache={"type": "ephemeral", "size": "1Gi"}))
    wait_phase(k, "bad", namespace, "Ready")
    before = {key: o["metadata"]["resourceVersion"] for key, o in children(k, namespace).items()}
    since = time.time()
    patch_spec(k, "bad", namespace, {"buildkitd": {"config": "[worker.oci\nmax-parallelism = 2"}})
    obj = wait_phase(k, "bad", namespace, "Invalid")
    assert "spec.buildkitd.config" in obj["status"]["message"]
    assert "TOML" in obj["status"]["message"]
    assert obj["status"]["endpoint"]  # still where clients connect
    time.sleep(3)
    # From the audit log, over the whole time since the edit: no write to any child.
    assert child_writes(cluster, namespace, since) == [], "an invalid edit changed what runs"
    after = {key: o["metadata"]["resourceVersion"] for key, o in children(k, namespace).items()}
    assert after == before, "an invalid edit changed what runs"
    assert all(p["status"]["phase"] == "Running" for p in pods_of(k, namespace, "bad"))
    events = k("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=bad")
    assert "InvalidSpec" in events
    # Fixing the edit brings it back to Ready.
    k("patch", "builder", "bad", "-n", namespace, "--type=json", "-p",
      json.dumps([{"op": "remove", "path": "/spec/buildkitd/config"}]))  # fmt: skip
    wait_phase(k, "bad", namespace, "Ready")


def test_api_server_rejects_what_the_schema_can(k: Kubectl, namespace: str) -> None:
    cases = [
        ({"cache": {"size": "50Gib"}}, "spec.cache.size"),
        ({"replicas": -1}, "spec.replicas"),
        ({"tls": {"mode": "bogus"}}, "spec.tls.mode"),
        ({"tls": {"mode": "secret"}}, "tls.secretName is required"),
        ({"nodeSelector": {"a": 1}}, "spec.nodeSelector.a"),
    ]
    for spec, needle in cases:
        out = k(
            "apply", "-f", "-", input=yaml.safe_dump(builder("rej", namespace, **spec)), check=False
        )
        assert needle in out, f"{spec}: {out}"
    assert "rej" not in k("get", "bk", "-n", namespace, "-o", "name")


# --- 6 and 7: restarts, scale, and idleness ----------------------------------------------------

FLEET = 20


def _fleet(k: Kubectl, ns: str) -> None:
    for i in range(FLEET):
        k.apply(builder(f"fleet-{i:02d}", ns, cache={"size": "1Gi"}))


def test_restart_mid_creation_leaves_one_set_each(
    k: Kubectl, namespace: str, operator_under_test: OperatorProcess
) -> None:
    operator = operator_under_test
    _fleet(k, namespace)
    wait_until(
        "some certificates to be issued",
        lambda: len(k.json("get", "secrets", "-n", namespace, "-l", MANAGED)["items"]) >= 6,
        timeout=60,
    )
    operator.kill()  # no chance to finish anything
    secrets_before = {
        s["metadata"]["name"]: (s["metadata"]["uid"], s["data"])
        for s in k.json("get", "secrets", "-n", namespace, "-l", MANAGED)["items"]
    }
    operator.start()
    for i in range(FLEET):
        wait_phase(k, f"fleet-{i:02d}", namespace, "Ready", timeout=180)

    found = children(k, namespace)
    for i in range(FLEET):
        name = f"fleet-{i:02d}"
        mine = {
            key
            for key in found
            if key.split("/", 1)[1].startswith(name + "-") or key.split("/", 1)[1] == name
        }
        # One daemon each: no headless Service and no disruption budget (the contract
        # makes them only for more than one daemon).
        assert mine == {
            f"Deployment/{name}-0", f"Service/{name}", f"ConfigMap/{name}-config",
            f"Secret/{name}-ca", f"Secret/{name}-server-tls", f"Secret/{name}-client-tls",
            f"PersistentVolumeClaim/{name}-cache-0",
        }, name  # fmt: skip
    replica_sets = k.json("get", "replicasets", "-n", namespace)["items"]
    assert len(replica_sets) == FLEET, "a Deployment was rolled or duplicated"
    secrets_after = {
        s["metadata"]["name"]: (s["metadata"]["uid"], s["data"])
        for s in k.json("get", "secrets", "-n", namespace, "-l", MANAGED)["items"]
    }
    for name, before in secrets_before.items():
        assert secrets_after[name] == before, f"{name} was re-issued after the restart"


def test_the_ca_is_stored_before_the_certificates_it_signs(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    """Were the operator killed between the writes, certificates stored without their CA
    would have to be issued again: the audit log shows the CA Secret's write complete
    before the server's and the client's Secrets are even asked for."""
    since = time.time()
    k.apply(builder("ordered", namespace))
    wait_phase(k, "ordered", namespace, "Ready")
    done: dict[str, datetime] = {}
    received: dict[str, datetime] = {}
    for line in cluster.audit_log.read_text().splitlines():
        entry = json.loads(line)
        ref = entry.get("objectRef", {})
        if (
            entry.get("user", {}).get("username") != OPERATOR_USER
            or ref.get("namespace") != namespace
            or ref.get("resource") != "secrets"
            or entry.get("verb") not in ("create", "patch", "update")
            or entry.get("stage") != "ResponseComplete"
        ):
            continue
        got = datetime.fromisoformat(entry["requestReceivedTimestamp"])
        if got.timestamp() < since:
            continue
        name = ref.get("name", "")
        done.setdefault(name, datetime.fromisoformat(entry["stageTimestamp"]))
        received.setdefault(name, got)
    assert set(done) == {"ordered-ca", "ordered-server-tls", "ordered-client-tls"}, done
    for leaf in ("ordered-server-tls", "ordered-client-tls"):
        assert done["ordered-ca"] <= received[leaf], (leaf, done["ordered-ca"], received[leaf])


def test_idle_operator_writes_nothing(k: Kubectl, namespace: str, cluster: Any) -> None:
    _fleet(k, namespace)
    for i in range(FLEET):
        wait_phase(k, f"fleet-{i:02d}", namespace, "Ready", timeout=180)
    # Let the last status writes and rollouts settle.
    time.sleep(5)
    kinds = "builders,deployments,services,configmaps,secrets,pvc"

    def versions() -> dict[str, str]:
        items = k.json("get", kinds, "-n", namespace)["items"]
        return {
            f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in items
        }

    before = versions()
    since = time.time()
    time.sleep(30)
    writes = [w for w in operator_writes(cluster, since) if f"/namespaces/{namespace}/" in w]
    print(f"operator writes during 30 idle seconds with {FLEET} Builders: {len(writes)}")
    assert writes == [], writes
    assert versions() == before


# --- TLS lifecycle: renewal inside the window -------------------------------------------------


def test_certificate_inside_renewal_window_is_renewed(k: Kubectl, namespace: str) -> None:
    from cryptography import x509

    from buildkit_operator.api import Builder
    from buildkit_operator.pki import ensure_tls
    from buildkit_operator.render import server_sans

    spec = {"cache": {"type": "ephemeral", "size": "1Gi"}}
    k.apply(builder("renew", namespace, **spec))
    first = wait_phase(k, "renew", namespace, "Ready")
    ca_before = get(k, "secret", "renew-ca", namespace)["data"]
    original = get(k, "secret", "renew-server-tls", namespace)["data"]
    hash_before = get(k, "deployment", "renew-0", namespace)["spec"]["template"]["metadata"][
        "annotations"
    ]["buildkit.dev/tls-hash"]

    # A server certificate from the Builder's own CA that expires in 20 days: inside the
    # 30-day renewal window.
    model = Builder.from_manifest(builder("renew", namespace, **spec))
    ca = {key: base64.b64decode(value) for key, value in ca_before.items()}
    short = ensure_tls(
        {"ca": ca},
        name="renew",
        server_sans=server_sans(model),
        now=datetime.now().astimezone(),
        leaf_validity=timedelta(days=20),
        renew_before=timedelta(days=1),
    ).secret_data()["server"]
    planted = {key: base64.b64encode(value).decode() for key, value in short.items()}
    k("patch", "secret", "renew-server-tls", "-n", namespace, "--type=merge", "-p",
      json.dumps({"data": planted}))  # fmt: skip

    def renewed() -> dict[str, str] | None:
        data = get(k, "secret", "renew-server-tls", namespace)["data"]
        return data if data["cert.pem"] not in (planted["cert.pem"], original["cert.pem"]) else None

    data = wait_until("the server certificate to be renewed", renewed, timeout=30)
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["cert.pem"]))
    assert cert.not_valid_after_utc > datetime.now().astimezone() + timedelta(days=300)
    assert get(k, "secret", "renew-ca", namespace)["data"] == ca_before, "the CA was re-issued"
    wait_until(
        "the pods to roll onto the renewed certificate",
        lambda: (
            get(k, "deployment", "renew-0", namespace)["spec"]["template"]["metadata"][
                "annotations"
            ]["buildkit.dev/tls-hash"]
            != hash_before
        ),
    )
    obj = wait_phase(k, "renew", namespace, "Ready")
    assert obj["status"]["certificateNotAfter"] == cert.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert obj["status"]["certificateNotAfter"] >= first["status"]["certificateNotAfter"]
    events = k("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=renew")
    assert "renewal window" in events


# --- connect: from a Ready Builder to a client certificate ------------------------------------


def test_connect_writes_a_working_client_certificate(
    k: Kubectl, namespace: str, cluster: Any, tmp_path: Path
) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from cryptography.x509.verification import PolicyBuilder, Store

    k.apply(builder("conn", namespace, cache={"type": "ephemeral", "size": "1Gi"}))
    wait_phase(k, "conn", namespace, "Ready")
    out = tmp_path / "certs"
    proc = subprocess.run(
        [str(OPERATOR_BIN), "connect", "conn", "-n", namespace, "-o", str(out),
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"--addr tcp://conn.{namespace}.svc:1234" in proc.stdout
    assert f"--tlsservername conn.{namespace}.svc" in proc.stdout
    assert "docker buildx create --name conn --driver remote" in proc.stdout
    for item in ("ca.pem", "cert.pem", "key.pem"):
        assert (out / item).stat().st_mode & 0o777 == 0o600, f"{item} is readable by others"
    # By default a certificate of the user's own, signed through the CSR API by a CA the
    # daemons take clients of (the ca.pem of the server Secret they mount), for the
    # kubeconfig's user, and it says when it expires. ca.pem is the Builder's CA, to verify
    # the daemons with.
    secret = k.json("get", "secret", "conn-ca", "-n", namespace)
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.pem"]))
    assert x509.load_pem_x509_certificate((out / "ca.pem").read_bytes()) == ca
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert issued_by_one_of(cert, accepted_issuers(k, namespace, "conn"))
    me = k.json("auth", "whoami")["status"]["userInfo"]["username"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == me
    assert f"expires {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}" in proc.stderr
    assert b"PRIVATE KEY" not in proc.stderr.encode() + proc.stdout.encode()

    # --shared: the Builder's shared client Secret, as before.
    shared = tmp_path / "shared"
    proc = subprocess.run(
        [str(OPERATOR_BIN), "connect", "conn", "-n", namespace, "-o", str(shared), "--shared",
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cert = x509.load_pem_x509_certificate((shared / "cert.pem").read_bytes())
    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    verifier.verify(cert, [])  # raises if the client certificate is not good for this CA
    missing = subprocess.run(
        [str(OPERATOR_BIN), "connect", "nope", "-n", namespace,
         "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "no Builder nope" in missing.stderr
    assert "Traceback" not in missing.stderr


# --- tls.mode: secret -------------------------------------------------------------------------


def test_user_tls_secret_is_served_and_its_rotation_rolls_the_pods(
    k: Kubectl, namespace: str
) -> None:
    from buildkit_operator.api import Builder
    from buildkit_operator.pki import ensure_tls
    from buildkit_operator.render import server_sans

    spec = {"tls": {"mode": "secret", "secretName": "my-tls"},
            "cache": {"type": "ephemeral", "size": "1Gi"}}  # fmt: skip
    k.apply(builder("own", namespace, **spec))
    obj = wait_phase(k, "own", namespace, "Invalid")
    assert "my-tls" in obj["status"]["message"] and "does not exist" in obj["status"]["message"]
    assert children(k, namespace) == {}

    sans = server_sans(Builder.from_manifest(builder("own", namespace, **spec)))

    def user_secret() -> dict[str, Any]:
        issued = ensure_tls({}, name="own", server_sans=sans, now=datetime.now().astimezone())
        data = issued.secret_data()["server"]
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "my-tls", "namespace": namespace},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }

    k.apply(user_secret())
    obj = wait_phase(k, "own", namespace, "Ready", timeout=60)
    assert "clientSecretName" not in obj["status"]
    assert not [key for key in children(k, namespace) if key.startswith("Secret/")]
    dep = get(k, "deployment", "own-0", namespace)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == "my-tls"
    before = dep["spec"]["template"]["metadata"]["annotations"]["buildkit.dev/tls-hash"]

    k.apply(user_secret())  # the user rotates the certificate
    wait_until(
        "the pods to roll onto the rotated certificate",
        lambda: (
            get(k, "deployment", "own-0", namespace)["spec"]["template"]["metadata"]["annotations"][
                "buildkit.dev/tls-hash"
            ]
            != before
        ),
        timeout=60,
    )
    wait_phase(k, "own", namespace, "Ready")


# --- scale down, and a field removed from the spec ---------------------------------------------


def test_scale_down_and_removed_field(k: Kubectl, namespace: str) -> None:
    k.apply(
        builder("shrink", namespace, replicas=2, nodeSelector={"kubernetes.io/arch": "arm64"},
                cache={"size": "1Gi"})
    )  # fmt: skip
    wait_phase(k, "shrink", namespace, "Ready")
    k("patch", "builder", "shrink", "-n", namespace, "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "remove", "path": "/spec/nodeSelector"},
    ]))  # fmt: skip

    def daemons() -> str:
        return k("get", "deployments", "-n", namespace, "-o", "name")

    def pod_spec() -> dict[str, Any]:
        return dict(get(k, "deployment", "shrink-0", namespace)["spec"]["template"]["spec"])

    wait_until("daemon 1 to be removed", lambda: "deployment.apps/shrink-1" not in daemons())
    wait_until(
        "the nodeSelector to be gone from daemon 0", lambda: "nodeSelector" not in pod_spec()
    )
    obj = wait_phase(k, "shrink", namespace, "Ready")
    assert obj["status"]["ready"] == "1/1"
    # The retained cache of the removed daemon stays, for a later scale-up.
    claims = k("get", "pvc", "-n", namespace, "-o", "name")
    assert "shrink-cache-1" in claims and "shrink-cache-0" in claims
