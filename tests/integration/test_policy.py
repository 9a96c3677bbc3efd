"""The chart's admission policy, enforced by the real API server.

The chart is installed by the real helm; Builders are applied with kubectl as a user would.
In a namespace no admin opted in, a rootful Builder and a `tls.mode: disabled` Builder are
refused with a message naming the field and the label that allows them; in an opted-in
namespace they are accepted. The optional limits refuse what exceeds them, and with
`policy.enabled=false` nothing is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from harness import builder
from policy_support import (
    PRIVILEGED_LABEL,
    TLS_DISABLED_LABEL,
    apply,
    eventually,
    wait_enforced,
)

pytestmark = pytest.mark.integration


def policy_of(kubectl: Any, release: str) -> dict[str, Any]:
    """The release's policy on Builders (the other one judges the operator's Deployments)."""
    items = kubectl.json(
        "get", "validatingadmissionpolicies", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    builders = [i for i in items if i["metadata"]["name"].endswith("-builders")]
    assert len(builders) == 1, [i["metadata"]["name"] for i in items]
    return dict(builders[0])


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
        # Autoscale's bound is the count it may reach.
        "autoscale-max": (
            {"autoscale": {"maxReplicas": 3}},
            ["spec.autoscale.maxReplicas: 3", "policy.limits.maxReplicas"],
        ),
        "pool-autoscale-max": (
            {
                "pools": [
                    {"platform": "linux/amd64", "replicas": 1},
                    {"platform": "linux/arm64", "autoscale": {"maxReplicas": 5}},
                ]
            },
            ["spec.pools[].autoscale.maxReplicas: linux/arm64: 5", "policy.limits.maxReplicas"],
        ),
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
        "autoscale": {"autoscale": {"minReplicas": 1, "maxReplicas": 2}},
        "pool-autoscale": {"pools": [{"platform": "linux/arm64", "autoscale": {"maxReplicas": 2}}]},
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
