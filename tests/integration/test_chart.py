"""The Helm chart and the plain manifests against the real API server.

`helm lint` passes; `helm install` into a fresh namespace that enforces the `restricted` Pod
Security Standard is accepted, the operator's pod is admitted and becomes available, switching
to watchNamespaces trades the ClusterRole for Roles, and `helm uninstall` leaves nothing
cluster-wide behind but the CRD. manifests/ is accepted by a server-side dry run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_client import Helm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
MANIFESTS = REPO / "manifests"
CRD = "builders.buildkit.dev"


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    """A release name for the test; uninstalled afterwards, so that its cluster-scoped
    objects never outlive the test."""
    name = f"bko-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "--namespace", namespace, "--wait", "--ignore-not-found")


def restrict(kubectl: Any, namespace: str) -> None:
    """Enforce the restricted Pod Security Standard in the namespace, and prove it is
    enforced: a privileged pod is refused."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    refused = kubectl.run(
        "run", "privileged", "-n", namespace, "--image=busybox", "--privileged",
        "--dry-run=server",
    )  # fmt: skip
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused


def cluster_objects(kubectl: Any, release: str) -> list[str]:
    """ClusterRoles and ClusterRoleBindings of a release."""
    items = kubectl.json(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    return sorted(f"{i['kind']}/{i['metadata']['name']}" for i in items)


# --- lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watchNamespaces={ci,team-a}"], ["--set", "rbac.create=false",
     "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing"]],
    ids=["defaults", "watch-namespaces", "bring-your-own-rbac"],
)  # fmt: skip
def test_helm_lint(helm: Helm, values: list[str]) -> None:
    out = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out, out


# --- install ------------------------------------------------------------------------------


def test_install_upgrade_uninstall(helm: Helm, kubectl: Any, namespace: str, release: str) -> None:
    restrict(kubectl, namespace)
    out = helm("install", release, str(CHART), "--namespace", namespace, "--wait",
               "--timeout", "180s")  # fmt: skip
    # NOTES tell the user how to create a Builder and connect to it.
    assert "kind: Builder" in out
    assert "buildkit-operator connect my-builder -n default" in out

    fullname = f"{release}-buildkit-operator"
    kubectl.wait_established(CRD)
    deployment = kubectl.json("get", "deployment", fullname, "-n", namespace)
    # Two replicas (one leads through the Lease, the other stands by).
    assert deployment["status"].get("availableReplicas") == 2, deployment["status"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == fullname
    # The pods passed the restricted Pod Security admission and were scheduled, on
    # different nodes where the cluster has them.
    pods = kubectl.json(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    assert len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods), pods
    assert pods[0]["spec"]["nodeName"] != pods[1]["spec"]["nodeName"], "both on one node"
    kubectl("wait", f"pdb/{fullname}", "-n", namespace, "--timeout=60s",
            "--for=jsonpath={.status.expectedPods}=2")  # fmt: skip
    pdb = kubectl.json("get", "pdb", fullname, "-n", namespace)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["status"]["expectedPods"] == 2 and pdb["status"]["disruptionsAllowed"] == 1
    kubectl("get", "role,rolebinding", f"{fullname}-leader-election", "-n", namespace)
    container = pods[0]["spec"]["containers"][0]
    assert container["args"][:2] == ["run", "--all-namespaces"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # The signer's rights are cluster-wide whatever the scope: CertificateSigningRequests
    # are cluster-scoped objects.
    signer = [f"ClusterRole/{fullname}-csr-signer", f"ClusterRoleBinding/{fullname}-csr-signer"]
    assert cluster_objects(kubectl, release) == sorted(
        [f"ClusterRole/{fullname}", f"ClusterRoleBinding/{fullname}", *signer]
    )

    # Narrow the scope to this namespace: the cluster-wide grant goes, a Role takes its place.
    helm("upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
         "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "180s")  # fmt: skip
    assert cluster_objects(kubectl, release) == sorted(signer)
    kubectl("get", "role,rolebinding", fullname, "-n", namespace)
    deployment = kubectl.json("get", "deployment", fullname, "-n", namespace)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["run", f"--namespace={namespace}"]

    # And back to every namespace (the chart's defaults).
    helm("upgrade", release, str(CHART), "--namespace", namespace, "--reset-values",
         "--wait", "--timeout", "180s")  # fmt: skip
    assert len(cluster_objects(kubectl, release)) == 4
    roles = kubectl.json("get", "roles", "-n", namespace)["items"]
    assert [r["metadata"]["name"] for r in roles] == [f"{fullname}-leader-election"]

    helm("uninstall", release, "--namespace", namespace, "--wait")
    assert cluster_objects(kubectl, release) == []
    left = kubectl.json("get", "all,serviceaccounts", "-n", namespace, "-l",
                        f"app.kubernetes.io/instance={release}")["items"]  # fmt: skip
    assert left == []
    # Helm never deletes a CRD it installed from crds/: Builders outlive the operator.
    kubectl("get", f"crd/{CRD}")


# --- plain manifests ----------------------------------------------------------------------


def test_plain_manifests_pass_a_server_side_dry_run(kubectl: Any, namespace: str) -> None:
    """manifests/ as `kubectl apply -f manifests/` sends it. Its buildkit-system namespace
    may not exist (a dry run creates nothing), so the namespaced objects are checked in the
    test's namespace, under the restricted Pod Security Standard the manifest sets."""
    out = kubectl("apply", "--dry-run=server", "-f", str(MANIFESTS / "crd.yaml"))
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD}" in out

    docs = [d for d in yaml.safe_load_all((MANIFESTS / "operator.yaml").read_text()) if d]
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    assert len(namespaces) == 1
    labels = namespaces[0]["metadata"]["labels"]
    kubectl("label", "namespace", namespace, "--overwrite",
            *(f"{k}={v}" for k, v in labels.items() if k.startswith("pod-security")))  # fmt: skip
    kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(namespaces[0]))

    rest = []
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue
        doc = json.loads(json.dumps(doc).replace('"buildkit-system"', json.dumps(namespace)))
        rest.append(doc)
    listing = {"apiVersion": "v1", "kind": "List", "items": rest}
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=json.dumps(listing))
    assert result.returncode == 0, result.stderr
    # Pod Security warns at apply time about a pod template it would refuse.
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    applied = sorted(line.split(" ")[0] for line in result.stdout.splitlines())
    assert applied == sorted(
        [
            "serviceaccount/buildkit-operator",
            "clusterrole.rbac.authorization.k8s.io/buildkit-operator",
            "clusterrolebinding.rbac.authorization.k8s.io/buildkit-operator",
            "clusterrole.rbac.authorization.k8s.io/buildkit-operator-csr-signer",
            "clusterrolebinding.rbac.authorization.k8s.io/buildkit-operator-csr-signer",
            "service/buildkit-operator-metrics",
            "deployment.apps/buildkit-operator",
            "poddisruptionbudget.policy/buildkit-operator",
            "role.rbac.authorization.k8s.io/buildkit-operator-leader-election",
            "rolebinding.rbac.authorization.k8s.io/buildkit-operator-leader-election",
            "validatingadmissionpolicy.admissionregistration.k8s.io/buildkit-operator-builders",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/"
            "buildkit-operator-builders",
            "validatingadmissionpolicy.admissionregistration.k8s.io/buildkit-operator-deployments",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/"
            "buildkit-operator-deployments",
        ]
    ), result.stdout
