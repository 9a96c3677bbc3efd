"""The status helpers the reconciler tests share (over localcluster.kubectl.Kubectl, the
one kubectl helper), and the operator's user and role (its fixtures, in conftest.py, run
it holding only the chart's RBAC)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from localcluster.kubectl import Kubectl, KubectlError

REPO = Path(__file__).resolve().parents[2]
OPERATOR_BIN = REPO / ".venv" / "bin" / "buildkit-operator"
OPERATOR_USER = "buildkit-operator-under-test"
MANAGED = "app.kubernetes.io/managed-by=buildkit-operator"


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.5
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, KubectlError) as err:  # kubectl failing (NotFound): "not yet"
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def builder(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def operator_cluster_role() -> dict[str, Any]:
    """The ClusterRole the chart installs for the operator (manifests/ is generated from
    the chart, and a unit test keeps the two in sync)."""
    roles = [
        dict(doc)
        for path in sorted((REPO / "manifests").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "ClusterRole"
    ]
    if not roles:
        raise AssertionError("no ClusterRole in manifests/: run `make manifests`")
    # The chart's second ClusterRole, the CSR signer's, joins the first: one role, the
    # chart's rights exactly.
    role = roles[0]
    role["rules"] = [rule for r in roles for rule in r.get("rules") or []]
    return role


def get(k: Kubectl, kind: str, name: str, ns: str) -> dict[str, Any]:
    return dict(k.json("get", kind, name, "-n", ns))


def patch_spec(k: Kubectl, name: str, ns: str, spec: dict[str, Any]) -> None:
    k("patch", "builder", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def phase(k: Kubectl, name: str, ns: str) -> str | None:
    status = get(k, "builder", name, ns).get("status") or {}
    return status.get("phase")


def wait_phase(k: Kubectl, name: str, ns: str, want: str, timeout: float = 90) -> dict[str, Any]:
    wait_until(f"Builder {ns}/{name} phase {want}", lambda: phase(k, name, ns) == want, timeout)
    return get(k, "builder", name, ns)


def pods_of(k: Kubectl, ns: str, builder_name: str) -> list[dict[str, Any]]:
    items = k.json("get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={builder_name}")
    return list(items["items"])


def children(
    k: Kubectl, ns: str, kinds: str = "deployments,services,configmaps,secrets,pvc,pdb"
) -> dict[str, dict[str, Any]]:
    items = k.json("get", kinds, "-n", ns, "-l", MANAGED)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i for i in items}


def operator_writes(cluster: Any, since: float) -> list[str]:
    """Write requests the operator's user made after ``since`` (epoch seconds)."""
    writes = []
    for line in cluster.audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("user", {}).get("username") != OPERATOR_USER:
            continue
        stamp = entry.get("requestReceivedTimestamp", "")
        when = datetime.fromisoformat(stamp).timestamp()
        if when >= since and entry.get("stage") == "ResponseComplete":
            writes.append(f"{entry['verb']} {entry.get('requestURI')}")
    return writes


def events_of(k: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    """Events recorded on Builder ``name``."""
    items = k.json("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    return [e for e in items["items"] if e["involvedObject"].get("kind") == "Builder"]


def writes_in(cluster: Any, ns: str, since: float) -> list[str]:
    """The operator's writes in namespace ``ns`` since ``since``, from the audit log."""
    return [w for w in operator_writes(cluster, since) if f"/namespaces/{ns}/" in w]


def child_writes(cluster: Any, ns: str, since: float) -> list[str]:
    """The operator's writes in namespace ``ns`` since ``since``, from the audit log, to
    anything but its Builders (their status) and their Events: the creates, patches and
    deletes of what runs (a create names the collection only, as in ``create .../secrets``)."""
    kept = []
    for write in writes_in(cluster, ns, since):
        path = write.split(" ", 1)[-1].split("?", 1)[0]
        if "/builders/" in path or path.endswith("/events"):
            continue
        kept.append(write)
    return kept


def settle(cluster: Any, ns: str, quiet: float = 4.0, timeout: float = 90.0) -> float:
    """Wait until the operator has made no write in ``ns`` for ``quiet`` seconds; fail if
    it never stops (a loop). Returns when the quiet stretch began."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        start = time.time()
        time.sleep(quiet)
        last = writes_in(cluster, ns, start)
        if not last:
            return start
    raise AssertionError(f"the operator kept writing in {ns} for {timeout}s: {last[-6:]}")


def assert_at_rest(k: Kubectl, cluster: Any, ns: str, name: str, window: float = 5.0) -> None:
    """A converged Builder makes no write and records no Event."""
    settle(cluster, ns)
    events = len(events_of(k, ns, name))
    since = time.time()
    time.sleep(window)
    writes = writes_in(cluster, ns, since)
    assert writes == [], f"writes at rest: {writes}"
    new = events_of(k, ns, name)[events:]
    assert len(events_of(k, ns, name)) == events, f"Events at rest: {new}"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    raise AssertionError(f"no {type_} condition in {obj.get('status')}")


def accepted_issuers(k: Kubectl, namespace: str, name: str) -> list[x509.Certificate]:
    """The CAs the daemons take client certificates of: the ca.pem their --tlscacert reads,
    from the server Secret they mount."""
    secret = wait_until(
        f"Secret {name}-server-tls",
        lambda: k.json("get", "secret", f"{name}-server-tls", "-n", namespace),
    )
    return x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["ca.pem"]))


def issued_by_one_of(cert: x509.Certificate, issuers: list[x509.Certificate]) -> bool:
    for issuer in issuers:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False
