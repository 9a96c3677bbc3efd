"""The chart's admission policy, enforced by the real API server.

The chart is installed by the real helm; Builders are applied with kubectl as a user would.
In a namespace no admin opted in, a rootful Builder and a `tls.mode: disabled` Builder are
refused with a message naming the field and the label that allows them; in an opted-in
namespace they are accepted. The optional limits refuse what exceeds them, and with
`policy.enabled=false` nothing is refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import builder
from helm_client import Helm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
CRD = REPO / "crds" / "builders.buildkit.dev.yaml"
PRIVILEGED_LABEL = "buildkit.dev/allow-privileged"
TLS_DISABLED_LABEL = "buildkit.dev/allow-tls-disabled"
# The API server learns of a new or deleted policy through an informer, within seconds.
POLICY_PROPAGATION = 60


def apply(kubectl: Any, obj: dict[str, Any], *, dry_run: bool = False) -> tuple[bool, str]:
    """(accepted, kubectl's stderr) for ``kubectl apply`` of one object."""
    args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    result = kubectl.run(*args, input=json.dumps(obj))
    return result.returncode == 0, result.stderr


def eventually(what: str, check: Callable[[], bool], timeout: float = POLICY_PROPAGATION) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def install(helm: Helm, kubectl: Any, namespace: str) -> Iterator[Callable[..., str]]:
    """``install(*helm_args) -> release``: the chart, released in the test's namespace and
    uninstalled afterwards, so its cluster-scoped policy never outlives the test."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl.wait_established("builders.buildkit.dev")
    releases: list[str] = []

    def run(*args: str) -> str:
        release = f"bko-{uuid.uuid4().hex[:6]}"
        releases.append(release)
        helm("install", release, str(CHART), "--namespace", namespace, *args)
        return release

    yield run
    for release in releases:
        helm.run("uninstall", release, "--namespace", namespace, "--wait", "--ignore-not-found")


@pytest.fixture
def new_namespace(kubectl: Any) -> Iterator[Callable[..., str]]:
    """``new_namespace(*labels) -> name``: more fresh namespaces, deleted afterwards."""
    made: list[str] = []

    def new(*labels: str) -> str:
        name = f"policy-{uuid.uuid4().hex[:8]}"
        kubectl("create", "namespace", name)
        if labels:
            kubectl("label", "namespace", name, *labels)
        made.append(name)
        return name

    yield new
    if made:
        kubectl.run("delete", "namespace", *made, "--wait=true", "--timeout=120s", timeout=150)


def wait_enforced(kubectl: Any, namespace: str) -> None:
    """Until the API server refuses a rootful Builder in ``namespace`` (the policy is live)."""
    eventually(
        "the policy to be enforced",
        lambda: not apply(kubectl, builder("probe", namespace, rootless=False), dry_run=True)[0],
    )


def policy_of(kubectl: Any, release: str) -> dict[str, Any]:
    items = kubectl.json(
        "get", "validatingadmissionpolicies", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return dict(items[0])


# --- privileged and plain-TCP Builders ----------------------------------------------------


def test_privileged_and_plain_tcp_builders_need_an_opted_in_namespace(
    install: Callable[..., str], kubectl: Any, namespace: str, new_namespace: Any
) -> None:
    release = install()
    wait_enforced(kubectl, namespace)

    # Refused where no admin opted in, each naming its field and the label that allows it.
    accepted, message = apply(kubectl, builder("rootful", namespace, rootless=False))
    assert not accepted
    assert "spec.rootless" in message and f"{PRIVILEGED_LABEL}=true" in message, message
    assert "policy.privileged.namespaces" in message, message
    accepted, message = apply(kubectl, builder("plain", namespace, tls={"mode": "disabled"}))
    assert not accepted
    assert "spec.tls.mode" in message and f"{TLS_DISABLED_LABEL}=true" in message, message
    assert not kubectl.json("get", "builders", "-n", namespace)["items"]
    # The defaults (rootless, mutual TLS) need nobody's permission.
    assert apply(kubectl, builder("secure", namespace))[0]

    # Accepted where an admin set the labels; each label allows only its own rule.
    both = new_namespace(f"{PRIVILEGED_LABEL}=true", f"{TLS_DISABLED_LABEL}=true")
    assert apply(kubectl, builder("rootful", both, rootless=False))[0]
    assert apply(kubectl, builder("plain", both, tls={"mode": "disabled"}))[0]
    only_privileged = new_namespace(f"{PRIVILEGED_LABEL}=true")
    assert apply(kubectl, builder("rootful", only_privileged, rootless=False))[0]
    accepted, message = apply(kubectl, builder("plain", only_privileged, tls={"mode": "disabled"}))
    assert not accepted and "spec.tls.mode" in message
    # A label value other than "true" opts nothing in.
    not_true = new_namespace(f"{PRIVILEGED_LABEL}=yes")
    assert not apply(kubectl, builder("rootful", not_true, rootless=False))[0]

    # When the label goes, a Builder admitted earlier can still be changed outside its spec
    # (the operator's finalizer and annotations) and deleted, but its spec cannot be edited
    # without meeting the policy.
    kubectl("label", "namespace", both, f"{PRIVILEGED_LABEL}-")
    eventually(
        "the namespace's label to be seen",
        lambda: not apply(kubectl, builder("probe", both, rootless=False), dry_run=True)[0],
    )
    kubectl("annotate", "builder", "rootful", "-n", both, "example.com/note=kept")
    refused = kubectl.run(
        "patch", "builder", "rootful", "-n", both, "--type=merge", "-p",
        json.dumps({"spec": {"replicas": 2}}),
    )  # fmt: skip
    assert refused.returncode != 0 and "spec.rootless" in refused.stderr, refused.stderr
    kubectl("patch", "builder", "rootful", "-n", both, "--type=merge", "-p",
            json.dumps({"spec": {"rootless": True}}))  # fmt: skip
    kubectl("delete", "builder", "plain", "-n", both, "--wait=false")

    # The policy type-checks against the installed CRD without a warning (securityProfile,
    # a field the CRD may not have yet, is read through a dynamic value).
    def checked() -> bool:
        status = policy_of(kubectl, release).get("status") or {}
        return bool(status.get("observedGeneration"))

    eventually("the policy's type check", checked)
    status = policy_of(kubectl, release)["status"]
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


def test_namespaces_listed_in_values_are_opted_in(
    install: Callable[..., str], kubectl: Any, namespace: str, new_namespace: Any
) -> None:
    listed = new_namespace()
    install(
        "--set", f"policy.privileged.namespaces={{{listed}}}",
        "--set", f"policy.tlsDisabled.namespaces={{{listed}}}",
    )  # fmt: skip
    wait_enforced(kubectl, namespace)
    assert apply(kubectl, builder("rootful", listed, rootless=False))[0]
    assert apply(kubectl, builder("plain", listed, tls={"mode": "disabled"}))[0]
    assert not apply(kubectl, builder("rootful", namespace, rootless=False))[0]


# --- limits -------------------------------------------------------------------------------


def test_limits_refuse_what_exceeds_them(
    install: Callable[..., str], kubectl: Any, namespace: str
) -> None:
    install(
        "--set", "policy.limits.maxReplicas=2",
        "--set", "policy.limits.maxCacheSize=50Gi",
        "--set", "policy.limits.allowedStorageClasses={fast-ssd}",
        "--set", "policy.limits.allowedRegistries={registry.internal,localhost:5000}",
    )  # fmt: skip
    wait_enforced(kubectl, namespace)

    refused = {
        "replicas": ({"replicas": 3}, ["spec.replicas", "policy.limits.maxReplicas"]),
        "cache-size": ({"cache": {"size": "51Gi"}}, ["spec.cache.size", "50Gi"]),
        # A quantity is compared by value, not as text.
        "cache-size-bytes": ({"cache": {"size": 60 * 1024**3}}, ["spec.cache.size"]),
        "storage-class": (
            {"cache": {"storageClassName": "standard"}},
            ["spec.cache.storageClassName", "fast-ssd"],
        ),
        "registry": (
            {"image": "quay.io/moby/buildkit:v0.34.2-rootless"},
            ["spec.image", "quay.io", "registry.internal"],
        ),
        # No registry host in the reference: Docker Hub.
        "docker-hub": ({"image": "moby/buildkit:v0.34.2-rootless"}, ["docker.io"]),
        # The first path element is a host only when it looks like one.
        "not-a-host": ({"image": "registry/buildkit:v1"}, ["docker.io"]),
    }
    for name, (spec, words) in refused.items():
        accepted, message = apply(kubectl, builder(name, namespace, **spec))
        assert not accepted, f"{name} was accepted"
        assert all(w in message for w in words), f"{name}: {message}"

    fits = {
        "replicas": {"replicas": 2},
        "cache-size": {"cache": {"size": "50Gi"}},
        "cache-size-smaller-unit": {"cache": {"size": "51200Mi"}},
        "storage-class": {"cache": {"storageClassName": "fast-ssd"}},
        "registry": {"image": "registry.internal/moby/buildkit:v0.34.2-rootless"},
        "registry-port": {"image": "localhost:5000/buildkit:dev"},
        # Unset fields take the operator's defaults, which the admin chose.
        "defaults": {},
    }
    for name, spec in fits.items():
        accepted, message = apply(kubectl, builder(name, namespace, **spec))
        assert accepted, f"{name}: {message}"


def test_policy_off_accepts_everything(
    install: Callable[..., str], kubectl: Any, namespace: str
) -> None:
    release = install(
        "--set", "policy.enabled=false",
        "--set", "policy.limits.maxReplicas=1",
    )  # fmt: skip
    assert not kubectl.json(
        "get", "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l", f"app.kubernetes.io/instance={release}",
    )["items"]  # fmt: skip
    specs = {
        "rootful": {"rootless": False},
        "plain": {"tls": {"mode": "disabled"}},
        "many": {"replicas": 8},
        "anywhere": {"image": "quay.io/example/buildkit:v1", "cache": {"size": "500Gi"}},
    }
    for name, spec in specs.items():
        obj = builder(name, namespace, **spec)
        # A policy uninstalled by an earlier test may take a moment to be forgotten.
        eventually(f"Builder {name} to be accepted", lambda: apply(kubectl, obj)[0])  # noqa: B023
