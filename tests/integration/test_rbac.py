"""The chart's RBAC is exactly what the operator needs, proven by the real API server.

For the ServiceAccount the chart creates, the API server's own answers (SelfSubjectRulesReview
and `kubectl auth can-i --as=system:serviceaccount:...`) show that every permission the
operator uses is granted, that nothing else is granted beyond what any authenticated account
has, and that with watchNamespaces it has no rights outside those namespaces. Then the
operator runs with a token of that ServiceAccount and the arguments of the installed
Deployment, and manages a Builder from creation to deletion without a single refusal.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_client import Helm
from operator_process import OperatorProcess

from operator_rbac import (
    LEADER_ELECTION_CREATE,
    LEADER_ELECTION_NAMED,
    NEEDED,
    SIGNER,
    SIGNER_NAME,
    SIGNER_NAMED,
    Grant,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
OPERATOR_BIN = REPO / ".venv" / "bin" / "buildkit-operator"


# What it must never be able to do: (verb, resource as kubectl names it).
FORBIDDEN = [
    ("*", "*"),
    ("update", "builders.buildkit.dev/status"),
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
    ("*", "secrets"),
    ("list", "nodes"),
    ("get", "nodes"),
    ("create", "pods"),
    ("get", "pods"),
    ("patch", "pods"),
    ("delete", "pods"),
    ("patch", "pods/status"),
    ("get", "pods/log"),
    ("watch", "endpointslices.discovery.k8s.io"),
    ("get", "endpointslices.discovery.k8s.io"),
    ("create", "endpointslices.discovery.k8s.io"),
    ("create", "pods/eviction"),
    ("update", "poddisruptionbudgets.policy"),
    ("create", "pods/exec"),
    ("get", "pods/exec"),
    ("create", "pods/portforward"),
    ("create", "builders.buildkit.dev"),
    ("update", "builders.buildkit.dev"),
    ("patch", "builders.buildkit.dev"),
    ("delete", "builders.buildkit.dev"),
    ("deletecollection", "builders.buildkit.dev"),
    ("update", "deployments.apps"),
    ("deletecollection", "secrets"),
    ("create", "statefulsets.apps"),
    ("list", "namespaces"),
    ("create", "namespaces"),
    ("delete", "namespaces"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("bind", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts"),
    ("create", "serviceaccounts/token"),
    ("create", "leases.coordination.k8s.io"),
    ("list", "kopfpeerings.kopf.dev"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
    ("update", "certificatesigningrequests.certificates.k8s.io"),
    ("patch", "certificatesigningrequests.certificates.k8s.io"),
    ("delete", "certificatesigningrequests.certificates.k8s.io"),
    ("create", "tokenreviews.authentication.k8s.io"),
]

# The CSR signer's rights, cluster-wide (certificate requests are cluster-scoped), as the
# API server's rules review lists them in any namespace.
SIGNER_RIGHTS: set[Grant] = set(SIGNER) | {
    (g, f"{r}[{SIGNER_NAME}]", v) for g, r, v in SIGNER_NAMED
}


def may(kubectl: Any, user: str, verb: str, signer: str) -> bool:
    """The API server's answer (a SubjectAccessReview, as the signing checks make it; a
    signer name holds a slash, which `kubectl auth can-i` cannot pass as a name)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "signers",
                "verb": verb,
                "name": signer,
            },
        },
    }
    out = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(out)["status"].get("allowed"))


# Signers it must never approve or sign for: Kubernetes' client and kubelet signers would
# make it a way into the cluster itself.
OTHER_SIGNERS = [
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kubelet-serving",
    "buildkit.dev/*",
    "example.com/other",
]


def assert_signs_for_its_own_signer_only(kubectl: Any, user: str) -> None:
    for verb in ("approve", "sign"):
        assert may(kubectl, user, verb, SIGNER_NAME), f"{verb} {SIGNER_NAME}"
        allowed = [signer for signer in OTHER_SIGNERS if may(kubectl, user, verb, signer)]
        assert not allowed, f"{user} may {verb} for {allowed}"
    assert_granted(kubectl, user, SIGNER)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def install(helm: Helm, namespace: str) -> Iterator[Callable[..., str]]:
    """``install(*helm_args) -> ServiceAccount username``: the chart, released in the test's
    namespace; uninstalled afterwards."""
    releases: list[str] = []

    def run(*args: str) -> str:
        release = f"bko-{uuid.uuid4().hex[:6]}"
        releases.append(release)
        helm("install", release, str(CHART), "--namespace", namespace, *args)
        return f"system:serviceaccount:{namespace}:{release}-buildkit-operator"

    yield run
    for release in releases:
        helm.run("uninstall", release, "--namespace", namespace, "--wait", "--ignore-not-found")


@pytest.fixture
def extra_namespaces(kubectl: Any) -> Iterator[Callable[[], str]]:
    """``new() -> name``: more fresh namespaces, deleted afterwards."""
    made: list[str] = []

    def new() -> str:
        name = f"rbac-{uuid.uuid4().hex[:8]}"
        kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield new
    if made:
        kubectl.run("delete", "namespace", *made, "--wait=true", "--timeout=120s", timeout=150)


def can_i(kubectl: Any, user: str, verb: str, resource: str, *where: str) -> bool:
    result = kubectl.run("auth", "can-i", verb, resource, f"--as={user}", *where)
    answer = result.stdout.strip()
    if result.returncode == 0 and answer == "yes":
        return True
    if result.returncode == 1 and answer.startswith("no"):
        return False
    raise AssertionError(f"kubectl auth can-i {verb} {resource} {where}: {result}")


def kubectl_resource(group: str, resource: str) -> tuple[str, list[str]]:
    """(resource, extra args) for `kubectl auth can-i`, subresources as --subresource."""
    name, _, sub = resource.partition("/")
    qualified = f"{name}.{group}" if group else name
    return qualified, [f"--subresource={sub}"] if sub else []


def rules_review(kubectl: Any, user: str, namespace: str) -> tuple[set[Grant], set[str]]:
    """What the API server says the user may do in the namespace: resource grants (with
    cluster-wide rules included; a grant confined to names as ``resource[name]``) and
    non-resource URL grants."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    out = kubectl(
        "create", f"--as={user}", "--validate=false", "-o", "json", "-f", "-",
        input=json.dumps(review),
    )  # fmt: skip
    status = json.loads(out)["status"]
    assert not status.get("incomplete"), status.get("evaluationError")
    grants: set[Grant] = set()
    for rule in status.get("resourceRules") or []:
        resources = [
            f"{r}[{name}]" if rule.get("resourceNames") else r
            for r in rule["resources"]
            for name in rule.get("resourceNames") or [""]
        ]
        grants.update(
            (g, r, v) for g in rule["apiGroups"] for r in resources for v in rule["verbs"]
        )
    urls = {
        f"{verb} {url}"
        for rule in status.get("nonResourceRules") or []
        for url in rule["nonResourceURLs"]
        for verb in rule["verbs"]
    }
    return grants, urls


def extra_rights(kubectl: Any, user: str, namespace: str) -> tuple[set[Grant], set[str]]:
    """The user's rights in the namespace beyond those of a ServiceAccount bound to nothing
    in the same namespace (what every authenticated account gets: discovery, self-reviews)."""
    baseline_user = f"system:serviceaccount:{user.split(':')[2]}:bound-to-nothing"
    grants, urls = rules_review(kubectl, user, namespace)
    base_grants, base_urls = rules_review(kubectl, baseline_user, namespace)
    return grants - base_grants, urls - base_urls


def assert_granted(kubectl: Any, user: str, grants: Iterable[Grant], *where: str) -> None:
    missing = []
    for group, resource, verb in sorted(grants):
        name, extra = kubectl_resource(group, resource)
        if not can_i(kubectl, user, verb, name, *extra, *where):
            missing.append(f"{verb} {resource} ({group or 'core'})")
    assert not missing, f"{user} lacks, {' '.join(where)}: {missing}"


def assert_denied(kubectl: Any, user: str, checks: Iterable[tuple[str, str]], *where: str) -> None:
    allowed = []
    for verb, resource in checks:
        name, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        if can_i(kubectl, user, verb, name, *extra, *where):
            allowed.append(f"{verb} {resource}")
    assert not allowed, f"{user} may, {' '.join(where)}: {allowed}"


def lease_rights(user: str) -> set[Grant]:
    """What leader election is granted in the release namespace: create leases (which no
    rule can confine to a name), get and update of the release's own Lease only."""
    lease = user.split(":")[3]  # the chart names the Lease after the release, as the account
    return set(LEADER_ELECTION_CREATE) | {
        (g, f"{r}[{lease}]", v) for g, r, v in LEADER_ELECTION_NAMED
    }


def assert_lease_rights_confined(kubectl: Any, user: str, namespace: str) -> None:
    lease = user.split(":")[3]
    assert can_i(kubectl, user, "update", f"leases.coordination.k8s.io/{lease}", "-n", namespace)
    assert_denied(
        kubectl,
        user,
        [
            ("get", "leases.coordination.k8s.io/someone-elses"),
            ("update", "leases.coordination.k8s.io/someone-elses"),
            ("list", "leases.coordination.k8s.io"),
            ("watch", "leases.coordination.k8s.io"),
            ("patch", f"leases.coordination.k8s.io/{lease}"),
            ("delete", f"leases.coordination.k8s.io/{lease}"),
        ],
        "-n",
        namespace,
    )


# --- what the chart grants ----------------------------------------------------------------


def test_cluster_wide_install_grants_exactly_what_the_operator_needs(
    kubectl: Any, namespace: str, install: Callable[..., str], extra_namespaces: Any
) -> None:
    user = install()
    elsewhere = extra_namespaces()

    # Everything it needs, in any namespace and across all of them (its watches are
    # cluster-wide).
    assert_granted(kubectl, user, NEEDED, "-n", elsewhere)
    assert_granted(
        kubectl, user, {g for g in NEEDED if g[2] in ("list", "watch")}, "--all-namespaces"
    )
    # Nothing it must not have.
    assert_denied(kubectl, user, FORBIDDEN, "-n", elsewhere)
    assert_denied(kubectl, user, FORBIDDEN, "--all-namespaces")

    # And nothing else at all: the API server's full list of the account's rights, less what
    # any account has, is exactly the needed set, wherever it is asked (with its Lease in
    # the release namespace).
    everywhere = NEEDED | SIGNER_RIGHTS
    assert_signs_for_its_own_signer_only(kubectl, user)
    for ns, needed in ((namespace, everywhere | lease_rights(user)), (elsewhere, everywhere)):
        grants, urls = extra_rights(kubectl, user, ns)
        assert grants == needed, (
            f"in {ns}: granted beyond the need: {sorted(grants - needed)}; "
            f"missing: {sorted(needed - grants)}"
        )
        assert urls == set(), f"non-resource URLs granted: {sorted(urls)}"
    assert_lease_rights_confined(kubectl, user, namespace)


def test_watch_namespaces_grants_nothing_outside_them(
    kubectl: Any, namespace: str, install: Callable[..., str], extra_namespaces: Any
) -> None:
    watched = [extra_namespaces(), extra_namespaces()]
    unwatched = extra_namespaces()
    user = install("--set", f"watchNamespaces={{{','.join(watched)}}}")

    for ns in watched:
        assert_granted(kubectl, user, NEEDED, "-n", ns)
        assert extra_rights(kubectl, user, ns) == (NEEDED | SIGNER_RIGHTS, set())
    # The CSR signer is cluster-wide in every scope, for its own signer name only.
    assert_signs_for_its_own_signer_only(kubectl, user)
    assert_denied(kubectl, user, FORBIDDEN, "-n", watched[0])

    # Its own namespace: its Lease alone; any other: nothing beyond what every account has,
    # but the signer's cluster-wide rights (no namespaced resource among them).
    assert extra_rights(kubectl, user, namespace) == (lease_rights(user) | SIGNER_RIGHTS, set())
    assert_lease_rights_confined(kubectl, user, namespace)
    for ns in (namespace, unwatched, "default"):
        if ns != namespace:
            assert extra_rights(kubectl, user, ns) == (SIGNER_RIGHTS, set()), f"rights in {ns}"
        assert_denied(
            kubectl, user, [(verb, "secrets") for verb in ("get", "list", "create")], "-n", ns
        )
    # Nothing cluster-wide: no list or watch across namespaces.
    assert_denied(
        kubectl,
        user,
        [("list", "builders.buildkit.dev"), ("watch", "secrets"), ("list", "deployments.apps")],
        "--all-namespaces",
    )
    assert_denied(kubectl, user, FORBIDDEN, "--all-namespaces")
    # And no binding anywhere else names the account.
    sa_subject = {"kind": "ServiceAccount", "namespace": namespace, "name": user.split(":")[3]}
    bindings = kubectl.json("get", "clusterrolebindings,rolebindings", "--all-namespaces")
    where = sorted(
        b["metadata"].get("namespace", "(cluster)")
        for b in bindings["items"]
        if any({k: s.get(k) for k in sa_subject} == sa_subject for s in b.get("subjects") or [])
    )
    # The Lease's RoleBinding in its own, and the signer's ClusterRoleBinding.
    assert where == sorted([*watched, namespace, "(cluster)"])


# --- the operator itself, with only those rights ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account_kubeconfig(cluster: Any, kubectl: Any, user: str, path: Path) -> Path:
    """A kubeconfig holding a bound token of the ServiceAccount, as the pod would get."""
    _, _, namespace, name = user.split(":")
    token = kubectl("create", "token", name, "-n", namespace, "--duration=1h").strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": server}],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
                "current-context": name,
            }
        )
    )
    path.chmod(0o600)
    return path


class OperatorRun:
    """The operator as a subprocess with the installed Deployment's arguments."""

    def __init__(self, args: list[str], kubeconfig: Path, tmp: Path) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        args = [
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz"
            if a.startswith("--liveness=")
            else f"--metrics-port={self.metrics_port}"
            if a.startswith("--metrics-port=")
            else a
            for a in args
        ]
        self.command = [str(OPERATOR_BIN), *args]
        scratch = tmp / "tmp"
        scratch.mkdir()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "TMPDIR": str(scratch),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = OperatorProcess(self.command, self.env, tmp / "operator.log")

    def __enter__(self) -> OperatorRun:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop(timeout=20)

    def log(self) -> str:
        return self.process.log()

    def get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())


def wait_until(what: str, check: Callable[[], Any], op: OperatorRun, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if not op.process.running:
            raise AssertionError(
                f"the operator exited ({op.process.returncode}):\n{op.log()[-4000:]}"
            )
        try:
            last = check()
        except Exception as err:  # not yet: the endpoint is not up, the object not there
            last = err
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last: {last!r}\n"
        f"operator log:\n{op.log()[-4000:]}"
    )


def signing_request(builder: str) -> dict[str, Any]:
    """A CertificateSigningRequest for the operator's signer, naming ``builder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rbac")]))
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM)
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {
            "name": f"rbac-{uuid.uuid4().hex[:8]}",
            "annotations": {"buildkit.dev/builder": builder},
        },
        "spec": {
            "request": base64.b64encode(pem).decode(),
            "signerName": SIGNER_NAME,
            "usages": ["digital signature", "client auth"],
        },
    }


REFUSED = re.compile(r"\b403\b|[Ff]orbidden|Not enough permissions")


@pytest.mark.parametrize("scope", ["all-namespaces", "watch-namespaces"])
def test_operator_runs_on_the_chart_rbac_alone(
    cluster: Any,
    kubectl: Any,
    namespace: str,
    install: Callable[..., str],
    extra_namespaces: Any,
    tmp_path: Path,
    scope: str,
) -> None:
    builders_ns = extra_namespaces()
    outside = extra_namespaces() if scope == "watch-namespaces" else None
    values = ["--set", f"watchNamespaces={{{builders_ns}}}"] if scope == "watch-namespaces" else []
    user = install(*values)
    deployment_name = user.split(":")[3]
    deployment = kubectl.json("get", "deployment", deployment_name, "-n", namespace)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    kubeconfig = service_account_kubeconfig(cluster, kubectl, user, tmp_path / "sa.kubeconfig")
    whoami = kubectl.run("auth", "whoami", "--kubeconfig", str(kubeconfig), "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == user, whoami

    builder = {
        "apiVersion": "buildkit.dev/v1alpha1",
        "kind": "Builder",
        "metadata": {"name": "rbac", "namespace": builders_ns},
        "spec": {"replicas": 1, "cache": {"size": "5Gi", "storageClassName": "fast-ssd"}},
    }
    with OperatorRun(args, kubeconfig, tmp_path) as op:
        try:
            wait_until("the liveness endpoint", lambda: op.get(op.health_port, "/healthz"), op)
            kubectl("apply", "-f", "-", input=json.dumps(builder))
            if outside:
                # Outside its namespaces, a Builder is none of its business.
                other = {**builder, "metadata": {"name": "rbac", "namespace": outside}}
                kubectl("apply", "-f", "-", input=json.dumps(other))

            def phase() -> str | None:
                obj = kubectl.json("get", "builder", "rbac", "-n", builders_ns)
                return (obj.get("status") or {}).get("phase")

            wait_until("the Builder to be Ready", lambda: phase() == "Ready", op)
            children = kubectl.json(
                "get", "deployments,services,configmaps,secrets,pvc", "-n", builders_ns,
                "-l", "app.kubernetes.io/managed-by=buildkit-operator",
            )["items"]  # fmt: skip
            kinds = {c["kind"] for c in children}
            assert kinds == {
                "Deployment", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim"
            }, kinds  # fmt: skip
            # Events are recorded (a refused Event is only logged by the operator).
            events = kubectl.json(
                "get", "events", "-n", builders_ns,
                "--field-selector", "involvedObject.kind=Builder,involvedObject.name=rbac",
            )["items"]  # fmt: skip
            assert any(e.get("reportingComponent") == "buildkit-operator" for e in events)
            metrics = op.get(op.metrics_port, "/metrics")
            assert 'buildkit_operator_reconciles_total{result="Ready"}' in metrics
            # It signs a client certificate for the Builder with the chart's rights alone
            # (the review, the approval, the signature; the CA Secret of a watched namespace).
            request = signing_request(f"{builders_ns}/rbac")
            kubectl("create", "-f", "-", input=json.dumps(request))
            try:
                wait_until(
                    "the request signed",
                    lambda: (
                        kubectl.json("get", "csr", request["metadata"]["name"]).get("status") or {}
                    ).get("certificate"),
                    op,
                )
            finally:
                kubectl.run("delete", "csr", request["metadata"]["name"], "--ignore-not-found")
            # It leads through the chart's Lease, created and renewed with the Role's rights.
            lease = kubectl.json("get", "lease", deployment_name, "-n", namespace)
            assert lease["spec"]["holderIdentity"], lease

            # Deleting the Builder: the operator lets go of it (its finalizer).
            kubectl("delete", "builder", "rbac", "-n", builders_ns, "--wait=false")
            wait_until(
                "the Builder to be gone",
                lambda: not kubectl.json("get", "builders", "-n", builders_ns)["items"],
                op,
            )
            if outside:
                other_obj = kubectl.json("get", "builder", "rbac", "-n", outside)
                assert not other_obj.get("status"), other_obj.get("status")
                assert not (other_obj["metadata"].get("finalizers") or [])
                assert not kubectl.json("get", "deployments", "-n", outside)["items"]
        finally:
            for ns in filter(None, (builders_ns, outside)):
                with contextlib.suppress(Exception):
                    kubectl("patch", "builder", "rbac", "-n", ns, "--type=merge",
                            "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
                    kubectl("delete", "builder", "rbac", "-n", ns, "--ignore-not-found")

    refusals = [line for line in op.log().splitlines() if REFUSED.search(line)]
    assert not refusals, "the API server refused the operator:\n" + "\n".join(refusals[:20])
