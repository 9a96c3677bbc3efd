"""The Helm chart, the plain manifests generated from it, and the image they run.

manifests/ must be exactly what hack/gen-manifests.sh renders from the chart, the chart's CRD
the one in crds/, the RBAC exactly the rules the operator needs, the Deployment hardened, and
its arguments ones the operator's CLI accepts. Renders with the pinned Helm
(hack/tools/helm); a Helm that cannot be built fails these tests rather than skipping them.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildkit_operator.cli.main import build_parser
from operator_rbac import (
    LEADER_ELECTION_CREATE,
    LEADER_ELECTION_NAMED,
    NEEDED,
    SIGNER,
    SIGNER_NAME,
    SIGNER_NAMED,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
MANIFESTS = REPO / "manifests"
GENERATED = ("crd.yaml", "operator.yaml")
RELEASE = "buildkit-operator"
NAMESPACE = "buildkit-system"

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@pytest.fixture(scope="module")
def helm(tools: Callable[..., tuple[Path, ...]]) -> Path:
    for directory in tools("helm"):
        if (directory / "helm").exists():
            return directory / "helm"
    pytest.fail("hack/build-tools.sh helm succeeded but produced no helm binary", pytrace=False)


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def template(helm: Path, helm_env: dict[str, str]) -> Any:
    rendered: dict[tuple[str, ...], str] = {}  # helm's output per command: rendered once

    def render(*args: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        command = (str(helm), "template", RELEASE, str(CHART), "--namespace", namespace, *args)
        if command not in rendered:
            rendered[command] = run(list(command), helm_env)
        return documents(rendered[command])  # parsed anew: callers may change what they get

    return render


def of_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


SIGNER_SUFFIX = "-csr-signer"


def signer_docs(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The CSR signer's ClusterRole and binding (cluster-wide in every scope)."""
    return [d for d in docs if d["metadata"]["name"].endswith(SIGNER_SUFFIX)]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if not d["metadata"]["name"].endswith(SIGNER_SUFFIX)]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def granted(rules: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    for rule in rules:
        assert not rule.get("resourceNames"), rule
        assert not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield group, resource, verb


def key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"]


# --- manifests/ is generated from the chart -----------------------------------------------


def test_manifests_are_what_the_script_renders(tmp_path: Path) -> None:
    run([str(REPO / "hack" / "gen-manifests.sh"), str(tmp_path)])
    problems = []
    for name in GENERATED:
        committed = MANIFESTS / name
        if not committed.exists():
            problems.append(f"manifests/{name} is missing")
            continue
        want, have = (tmp_path / name).read_text(), committed.read_text()
        if want != have:
            diff = difflib.unified_diff(
                have.splitlines(keepends=True),
                want.splitlines(keepends=True),
                f"manifests/{name}",
                "rendered from the chart",
            )
            problems.append("".join(list(diff)[:80]))
    strays = sorted(p.name for p in MANIFESTS.iterdir() if p.is_file() and p.name not in GENERATED)
    if strays:
        problems.append(
            f"not generated from the chart (kubectl apply -f manifests/ would apply them): {strays}"
        )
    assert not problems, (
        "manifests/ disagrees with charts/buildkit-operator; run `make manifests`:\n"
        + "\n".join(problems)
    )


def test_manifests_hold_the_whole_chart(template: Any) -> None:
    """Independently of the script: every object of `helm template --include-crds`, and
    nothing else but the namespace it is rendered for."""
    chart = {key(d): d for d in template("--include-crds")}
    plain = {key(d): d for name in GENERATED for d in documents((MANIFESTS / name).read_text())}
    namespace = plain.pop(("v1", "Namespace", "", NAMESPACE), None)
    assert namespace is not None, f"manifests/ does not create the {NAMESPACE} namespace"
    assert sorted(plain) == sorted(chart)
    for k, obj in chart.items():
        assert plain[k] == obj, f"{k} differs from the chart's"
    crds = documents((MANIFESTS / "crd.yaml").read_text())
    assert [d["kind"] for d in crds] == ["CustomResourceDefinition"]


def test_chart_crd_is_the_generated_crd() -> None:
    source = REPO / "crds" / "builders.buildkit.dev.yaml"
    copy = CHART / "crds" / "builders.buildkit.dev.yaml"
    assert source.exists(), "crds/builders.buildkit.dev.yaml is missing: run `make crd`"
    assert copy.read_text() == source.read_text(), (
        "charts/buildkit-operator/crds/ differs from crds/: copy it "
        "(cp crds/builders.buildkit.dev.yaml charts/buildkit-operator/crds/) and run "
        "`make manifests`"
    )


# --- RBAC ---------------------------------------------------------------------------------


def leader_election_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert len(roles) == 1, roles
    return roles[0]


def test_default_rbac_is_a_cluster_role_with_exactly_the_needed_rules(template: Any) -> None:
    docs = template()
    # The only namespaced Role: the Lease of leader election.
    assert [r["metadata"]["name"] for r in of_kind(docs, "Role")] == [
        leader_election_role(docs)["metadata"]["name"]
    ]
    role = one(docs, "ClusterRole")
    rules = list(granted(role["rules"]))
    assert len(rules) == len(set(rules)), "a rule is granted twice"
    assert set(rules) == NEEDED
    assert not any("*" in part for rule in rules for part in rule)

    binding = one(docs, "ClusterRoleBinding")
    account = one(docs, "ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_leader_election_may_create_leases_and_renew_its_own_only(template: Any) -> None:
    docs = template(namespace="ops")
    role = leader_election_role(docs)
    assert role["metadata"]["namespace"] == "ops"
    lease = lease_arg(container(docs)["args"])
    named = [r for r in role["rules"] if r.get("resourceNames")]
    unnamed = [r for r in role["rules"] if not r.get("resourceNames")]
    assert set(granted(unnamed)) == LEADER_ELECTION_CREATE
    assert [r["resourceNames"] for r in named] == [[lease]]
    assert set(granted([{k: v for k, v in r.items() if k != "resourceNames"} for r in named])) == (
        LEADER_ELECTION_NAMED
    )
    binding = next(
        b for b in of_kind(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert binding["metadata"]["namespace"] == "ops"
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]


def lease_arg(args: list[str]) -> str:
    parsed = build_parser().parse_args(args)
    assert parsed.leader_elect and parsed.leader_election_namespace
    return str(parsed.leader_election_id)


def test_two_replicas_with_a_disruption_budget_by_default(template: Any) -> None:
    docs = template()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    # A rolling update starts the new pod before stopping an old one; the Lease, not the
    # pods' number, keeps one leader.
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == (deployment["spec"]["selector"]["matchLabels"])
    parsed = build_parser().parse_args(container(docs)["args"])
    assert parsed.leader_election_namespace == NAMESPACE
    assert parsed.retry_period < parsed.renew_deadline < parsed.lease_duration


def test_one_replica_without_leader_election_recreates(
    template: Any, helm: Path, helm_env: dict[str, str]
) -> None:
    docs = template("--set", "replicas=1", "--set", "leaderElection.enabled=false")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "two must never overlap"
    assert not of_kind(docs, "PodDisruptionBudget") and not of_kind(docs, "Role")
    assert "--leader-elect" not in container(docs)["args"]
    refused = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--set", "leaderElection.enabled=false"],
        capture_output=True,
        text=True,
        env=helm_env,
    )
    assert refused.returncode != 0 and "leaderElection.enabled" in refused.stderr


def test_watch_namespaces_gives_roles_there_and_nothing_cluster_wide(template: Any) -> None:
    docs = template("--set", "watchNamespaces={ci,team-a}", namespace="ops")
    # Cluster-wide: the CSR signer's role alone (certificate requests are cluster-scoped).
    cluster_wide = of_kind(docs, "ClusterRole") + of_kind(docs, "ClusterRoleBinding")
    assert cluster_wide == signer_docs(docs) and len(cluster_wide) == 2
    election = leader_election_role(docs)["metadata"]["name"]
    roles = {
        r["metadata"]["namespace"]: r
        for r in of_kind(docs, "Role")
        if r["metadata"]["name"] != election
    }
    bindings = {
        b["metadata"]["namespace"]: b
        for b in of_kind(docs, "RoleBinding")
        if b["roleRef"]["name"] != election
    }
    assert sorted(roles) == sorted(bindings) == ["ci", "team-a"]
    account = one(docs, "ServiceAccount")["metadata"]
    assert account["namespace"] == "ops"
    for namespace, role in roles.items():
        assert set(granted(role["rules"])) == NEEDED
        binding = bindings[namespace]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": "ops"}
        ]
    args = container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=ci",
        "--namespace=team-a",
    ]


@pytest.mark.parametrize("scope", [(), ("--set", "watchNamespaces={ci}")])
def test_the_csr_signer_approves_and_signs_for_its_own_signer_name_only(
    template: Any, scope: tuple[str, ...]
) -> None:
    docs = template(*scope)
    role = next(d for d in signer_docs(docs) if d["kind"] == "ClusterRole")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    unnamed = [r for r in role["rules"] if not r.get("resourceNames")]
    assert set(granted(unnamed)) == SIGNER
    assert [r["resourceNames"] for r in named] == [[SIGNER_NAME]]
    assert set(granted([{k: v for k, v in r.items() if k != "resourceNames"} for r in named])) == (
        SIGNER_NAMED
    )
    binding = next(d for d in signer_docs(docs) if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_rbac_can_be_left_to_the_cluster_admin(template: Any) -> None:
    docs = template("--set", "rbac.create=false")
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]


# --- the operator Deployment --------------------------------------------------------------


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return dict(pod["containers"][0])


def test_deployment_is_one_hardened_operator(template: Any) -> None:
    docs = template()
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")

    c = container(docs)
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532 and security["runAsGroup"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # With a read-only root, Python's tempfile (the API discovery cache) needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TMPDIR"] == "/tmp"

    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_arguments_are_accepted_by_the_operator_cli(template: Any) -> None:
    args = container(template())["args"]
    assert "command" not in container(template()), "the image's ENTRYPOINT is the command"
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.all_namespaces is True and parsed.namespace == []
    assert parsed.metrics_port == 9090
    # Kopf serves the liveness endpoint on localhost unless told otherwise; the kubelet probes
    # the pod IP, so it must listen on every address.
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"

    scoped = build_parser().parse_args(
        container(template("--set", "watchNamespaces={a,b}", "--set", "metrics.enabled=false"))[
            "args"
        ]
    )
    assert scoped.namespace == ["a", "b"] and not scoped.all_namespaces
    assert scoped.metrics_port == 0


def test_image_defaults_to_the_app_version(template: Any) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = container(template())["image"]
    assert image == f"{values['image']['repository']}:{chart['appVersion']}"
    assert container(template("--set", "image.tag=v9"))["image"].endswith(":v9")
    digest = "sha256:" + "0" * 64
    pinned = container(template("--set", f"image.digest={digest}"))["image"]
    assert pinned == f"{values['image']['repository']}@{digest}"


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert match and chart["appVersion"] == match.group(1)


def test_every_object_has_the_standard_labels(template: Any) -> None:
    for doc in template("--set", "watchNamespaces={a}") + template():
        labels = doc["metadata"].get("labels") or {}
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} lacks {missing}"
    pod_labels = one(template(), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(label in pod_labels for label in STANDARD_LABELS)


def test_pod_labels_cannot_break_the_selector(template: Any) -> None:
    deployment = one(
        template("--set", "podLabels.app\\.kubernetes\\.io/name=other", "--set", "podLabels.x=y"),
        "Deployment",
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["x"] == "y"
    for k, v in deployment["spec"]["selector"]["matchLabels"].items():
        assert labels[k] == v


def test_bad_values_are_refused(helm: Path, helm_env: dict[str, str]) -> None:
    for bad in ("watchNamespaces={Not_A_Namespace}", "watchNamespace={a}", "health.port=0"):
        result = subprocess.run(
            [str(helm), "template", RELEASE, str(CHART), "--set", bad],
            capture_output=True,
            text=True,
            env=helm_env,
            check=False,
        )
        assert result.returncode != 0, f"--set {bad} was accepted"


# --- the image the chart runs -------------------------------------------------------------


def test_dockerfile_matches_what_the_chart_expects(template: Any) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert re.search(r"^USER 65532:65532$", final_stage, re.MULTILINE)
    assert 'ENTRYPOINT ["buildkit-operator"]' in final_stage
    assert 'CMD ["run", "--all-namespaces"]' in final_stage
    security = container(template())["securityContext"]
    assert security["runAsUser"] == 65532
    assert "USER=nonroot" in final_stage, "Kopf needs a login name for an unnamed uid"
    # The build context is the package and nothing else (no .venv, .git, caches, clusters).
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignored[0] == "*"
    assert {line[1:] for line in ignored if line.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "operator/",
    }
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE)
    assert " ".join(copied).split() == ["pyproject.toml", "README.md", "operator/"]


def test_metrics_service_selects_the_operator_and_the_monitor_selects_the_service(
    template: Any,
) -> None:
    docs = template()
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in [p["name"] for p in container["ports"]]
    assert not of_kind(docs, "ServiceMonitor")
    monitored = template("--set", "metrics.serviceMonitor.enabled=true")
    monitor = one(monitored, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    disabled = template("--set", "metrics.enabled=false")
    assert not of_kind(disabled, "Service") and not of_kind(disabled, "ServiceMonitor")
