"""What people and tools do to a running Builder's children by hand, against the real API
server: the certificates users hold must outlive every ordinary edit, nothing a daemon
mounts is deleted, and every edit is repaired or reported, never fought for ever."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from harness import (
    assert_at_rest,
    builder,
    condition,
    get,
    operator_cluster_role,
    patch_spec,
    wait_phase,
    wait_until,
)

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.integration

EPHEMERAL = {"cache": {"type": "ephemeral", "size": "1Gi"}}
MANAGED_LABELS = ("app.kubernetes.io/managed-by", "buildkit.dev/builder")


def test_removing_the_ca_secrets_labels_keeps_the_ca(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    """A person tidying labels (or a tool relabelling) the `<name>-ca` Secret: before, the
    operator no longer found it, issued a new CA and new leaves, and every client
    certificate in use stopped working."""
    k.apply(builder("lbl", namespace, **EPHEMERAL))
    wait_phase(k, "lbl", namespace, "Ready")
    before = {
        s: get(k, "secret", f"lbl-{s}", namespace) for s in ("ca", "server-tls", "client-tls")
    }
    deployment = get(k, "deployment", "lbl-0", namespace)
    labels = before["ca"]["metadata"]["labels"]
    # The object as the API server stored the edit (a read after it may already find the
    # operator's repair).
    edited = k.json("label", "secret", "lbl-ca", "-n", namespace, *[f"{key}-" for key in labels])
    assert not edited["metadata"].get("labels")

    def relabelled() -> bool:
        now = get(k, "secret", "lbl-ca", namespace)["metadata"].get("labels") or {}
        return all(now.get(key) == labels[key] for key in MANAGED_LABELS)

    wait_until("the CA Secret's labels repaired", relabelled, timeout=60)
    assert_at_rest(k, cluster, namespace, "lbl")
    for name, secret in before.items():
        now = get(k, "secret", f"lbl-{name}", namespace)
        assert now["metadata"]["uid"] == secret["metadata"]["uid"], f"{name} made anew"
        assert now["data"] == secret["data"], f"{name} issued anew"
    after = get(k, "deployment", "lbl-0", namespace)
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"], "rolled"


def test_moving_to_tls_secret_naming_its_own_server_secret_keeps_it(
    k: Kubectl, namespace: str
) -> None:
    """tls.mode auto → secret with `secretName: <name>-server-tls` (freezing the certificate):
    before, the operator deleted that Secret as no longer in the spec while the daemon
    mounted it."""
    k.apply(builder("frz", namespace, **EPHEMERAL))
    wait_phase(k, "frz", namespace, "Ready")
    server = get(k, "secret", "frz-server-tls", namespace)
    patch_spec(k, "frz", namespace, {"tls": {"mode": "secret", "secretName": "frz-server-tls"}})

    def settled() -> dict[str, Any] | None:
        obj = get(k, "builder", "frz", namespace)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and status.get("phase") == "Ready" else None

    obj = wait_until("frz Ready on its own Secret", settled, timeout=90)
    assert obj["status"]["endpoint"]
    kept = get(k, "secret", "frz-server-tls", namespace)
    assert kept["metadata"]["uid"] == server["metadata"]["uid"]
    assert kept["data"] == server["data"]
    template = get(k, "deployment", "frz-0", namespace)["spec"]["template"]["spec"]
    mounted = {v["secret"]["secretName"] for v in template["volumes"] if "secret" in v}
    assert "frz-server-tls" in mounted
    # What nothing mounts any more is gone.
    wait_until(
        "the CA and client Secrets removed",
        lambda: not k("get", "secret", "frz-ca", "frz-client-tls", "-n", namespace,
                      "--ignore-not-found", "-o", "name").strip(),
    )  # fmt: skip


def test_a_service_port_edited_by_hand_is_repaired(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    """`kubectl patch svc --type=json` replacing port 1234 by 8266: server-side apply merges
    ports by (port, protocol), so the operator's apply added a second port named buildkitd
    and the API server refused it (422 Duplicate value), retried for ever while every
    client of port 1234 failed."""
    k.apply(builder("prt", namespace, **EPHEMERAL))
    wait_phase(k, "prt", namespace, "Ready")
    patch = [{"op": "replace", "path": "/spec/ports/0/port", "value": 8266}]
    k("patch", "svc", "prt", "-n", namespace, "--type=json", "-p", json.dumps(patch))

    def repaired() -> bool:
        ports = get(k, "service", "prt", namespace)["spec"]["ports"]
        return [(p["name"], p["port"]) for p in ports] == [("buildkitd", 1234)]

    wait_until("the Service back on port 1234 alone", repaired, timeout=60)
    obj = wait_phase(k, "prt", namespace, "Ready")
    assert condition(obj, "Degraded")["status"] == "False"
    assert_at_rest(k, cluster, namespace, "prt")


def test_a_refused_read_mid_pass_is_reported_not_hidden(
    k: Kubectl, namespace: str, cluster: Any
) -> None:
    """A 403 when the operator reads a child escaped the pass: the Builder kept its old
    status (Ready) while nothing was repaired. Now the status says so, and recovers."""
    k.apply(builder("rd", namespace, **EPHEMERAL))
    wait_phase(k, "rd", namespace, "Ready")
    role = operator_cluster_role()
    role["metadata"] = {"name": "buildkit-operator-under-test"}
    narrowed = json.loads(json.dumps(role))
    for rule in narrowed["rules"]:
        if "services" in rule.get("resources", []):
            rule["verbs"] = [v for v in rule["verbs"] if v != "get"]
    try:
        k.apply(narrowed)
        time.sleep(1)  # RBAC is read from the API server's informer
        # The Service gone: the operator must look it up by name, which is now refused.
        k("delete", "service", "rd", "-n", namespace, "--wait=false")

        def reported() -> dict[str, Any] | None:
            obj = get(k, "builder", "rd", namespace)
            ready = condition(obj, "Ready")
            return obj if ready["status"] == "False" and "403" in ready["message"] else None

        obj = wait_until("rd reports the refused read", reported, timeout=60)
        assert obj["status"]["phase"] == "Degraded"
        assert condition(obj, "Degraded")["reason"] == "ApiError"
    finally:
        k.apply(yaml.safe_load(yaml.safe_dump(role)))
    wait_phase(k, "rd", namespace, "Ready", timeout=120)
    assert get(k, "service", "rd", namespace)["spec"]["ports"][0]["port"] == 1234
