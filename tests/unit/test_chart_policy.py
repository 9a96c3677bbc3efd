"""The chart's admission policy and Builder defaults, as `helm template` renders them.

What the API server does with the policy is proven in tests/integration/test_policy.py; here:
the values switch it off and scope it, and builderDefaults reach the operator as arguments
its command line accepts and turns into the defaults the values say. Renders with the pinned
Helm (hack/tools/helm).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildkit_operator.api import DEFAULT_IMAGE_ROOTFUL
from buildkit_operator.cli.main import build_parser, defaults_from

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildkit-operator"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


@pytest.fixture(scope="module")
def template(
    tools: Callable[..., tuple[Path, ...]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., list[dict[str, Any]]]:
    helm = next(d / "helm" for d in tools("helm") if (d / "helm").exists())
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k) for k in ("CACHE", "CONFIG", "DATA")}}

    def render(*args: str) -> list[dict[str, Any]]:
        result = subprocess.run(
            [str(helm), "template", "bko", str(CHART), "--namespace", "ops", *args],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    return render


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    (deployment,) = of_kind(docs, "Deployment")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def named(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    return doc


def test_policy_is_on_by_default_and_denies(template: Any) -> None:
    docs = template()
    policy = named(docs, "ValidatingAdmissionPolicy", "-builders")
    binding = named(docs, "ValidatingAdmissionPolicyBinding", "-builders")
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    # Every namespace's Builders, and a policy that fails closed.
    assert "matchResources" not in binding["spec"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"]) == (["buildkit.dev"], ["builders"])
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    # Secure by default: no namespace is opted in, no limit is set.
    text = yaml.safe_dump(policy)
    assert "request.namespace in []" in text
    for limit in ("maxReplicas", "maxCacheSize", "allowedStorageClasses", "allowedRegistries"):
        assert limit not in text


def test_policy_off_is_one_value(template: Any) -> None:
    docs = template("--set", "policy.enabled=false")
    assert not [d for d in docs if d["kind"] in POLICY_KINDS]


def test_policy_follows_the_watched_namespaces(template: Any) -> None:
    """A release that runs the Builders of some namespaces judges those, so two releases
    with their own namespaces do not impose their rules on each other."""
    bindings = of_kind(
        template("--set", "watchNamespaces={ci,team-a}"), "ValidatingAdmissionPolicyBinding"
    )
    assert len(bindings) == 2
    for binding in bindings:
        assert binding["spec"]["matchResources"]["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ci", "team-a"]}
            ]
        }


def test_validation_actions_can_warn_first(template: Any) -> None:
    bindings = of_kind(
        template("--set", "policy.validationActions={Warn,Audit}"),
        "ValidatingAdmissionPolicyBinding",
    )
    assert [b["spec"]["validationActions"] for b in bindings] == [["Warn", "Audit"]] * 2


def test_bad_policy_values_are_refused(template: Any) -> None:
    for bad in (
        "policy.validationActions={Block}",
        "policy.privileged.namespaces={Not_A_Namespace}",
        "policy.limits.maxReplicas=-1",
        "policy.limits.maxCacheSize=lots",
        "policy.limits.allowedRegistries={registry.internal/path}",
        "policy.limit.maxReplicas=1",
        "policy.userns.namespaces={Not_A_Namespace}",
        "policy.tolerations.forbiddenKeys={not a key}",
        "policy.nodeSelection.forbiddenLabels={/x}",
        "policy.serviceAccountNames={Deployer}",
        "policy.priorityClassNames={a b}",
        "policy.podLabels.forbiddenKeys={a b/*}",
        "policy.operatorDeployments.enabled=yes",
    ):
        with pytest.raises(AssertionError):
            template("--set", bad)


def test_no_builder_defaults_pass_no_flags(template: Any) -> None:
    assert not [a for a in operator_args(template()) if a.startswith("--default-")]


def test_builder_defaults_reach_the_operator(template: Any) -> None:
    args = operator_args(
        template(
            "--set", "builderDefaults.image.repository=registry.internal/moby/buildkit",
            "--set", "builderDefaults.image.rootful=registry.internal/bk:rootful",
            "--set", "builderDefaults.cache.size=50Gi",
            "--set", "builderDefaults.cache.storageClassName=fast-ssd",
            "--set", "builderDefaults.resources.requests.cpu=1",
            "--set", "builderDefaults.registryMirrors.docker\\.io={m1.internal:5000,m2.internal}",
        )
    )  # fmt: skip
    defaults = defaults_from(build_parser().parse_args(args))
    tag = DEFAULT_IMAGE_ROOTFUL.rsplit(":", 1)[1]
    assert defaults.image(rootless=True) == f"registry.internal/moby/buildkit:{tag}-rootless"
    assert defaults.image(rootless=False) == "registry.internal/bk:rootful"
    assert defaults.cache_size == "50Gi"
    assert defaults.storage_class_name == "fast-ssd"
    assert defaults.resources is not None
    assert defaults.resources.model_dump(exclude_defaults=True) == {"requests": {"cpu": "1"}}
    assert defaults.registry_mirrors == {"docker.io": ("m1.internal:5000", "m2.internal")}


def test_deployment_policy_judges_the_operators_own_user(template: Any) -> None:
    """The second policy matches the Deployments the operator's ServiceAccount writes (or
    the user named in the values), and its namespace opt-ins are the Builder policy's."""
    docs = template()
    policy = named(docs, "ValidatingAdmissionPolicy", "-deployments")
    binding = named(docs, "ValidatingAdmissionPolicyBinding", "-deployments")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"]) == (["apps"], ["deployments"])
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    assert "'system:serviceaccount:ops:bko-buildkit-operator'" in conditions[
        "written-by-the-operator"
    ].replace('"', "'")

    (other,) = [
        p
        for p in of_kind(
            template("--set", "policy.operatorDeployments.username=ci-operator"),
            "ValidatingAdmissionPolicy",
        )
        if p["metadata"]["name"].endswith("-deployments")
    ]
    assert "ci-operator" in yaml.safe_dump(other["spec"]["matchConditions"])
    assert not [
        d
        for d in template("--set", "policy.operatorDeployments.enabled=false")
        if d["kind"] in POLICY_KINDS and d["metadata"]["name"].endswith("-deployments")
    ]


def test_placement_rules_follow_the_values(template: Any) -> None:
    """Secure defaults: tolerate-all and the control plane's taints and labels refused, no
    priority class or ServiceAccount allowed; the values lift each."""
    default = messages(named(template(), "ValidatingAdmissionPolicy", "-builders"))
    for words in ("spec.tolerations:", "spec.nodeSelector:", "spec.podLabels:"):
        assert words in default
    lifted_policy = named(
            template(
                "--set", "policy.tolerations.allowTolerateAll=true",
                "--set", "policy.tolerations.forbiddenKeys=null",
                "--set", "policy.nodeSelection.forbiddenLabels=null",
                "--set", "policy.podLabels.forbiddenKeys=null",
                "--set", "policy.serviceAccountNames={deployer}",
            ),
            "ValidatingAdmissionPolicy",
            "-builders",
    )  # fmt: skip
    lifted = messages(lifted_policy)
    for words in ("spec.tolerations:", "spec.nodeSelector:", "spec.podLabels:"):
        assert words not in lifted
    assert '["deployer"]' in yaml.safe_dump(lifted_policy)


def messages(policy: dict[str, Any]) -> str:
    """What the policy's rules can say when they refuse."""
    return "\n".join(
        v.get("message", "") + v.get("messageExpression", "") for v in policy["spec"]["validations"]
    )


def test_every_variable_a_rule_reads_is_defined(template: Any) -> None:
    """The API server refuses a policy naming an undefined variable, failing the install:
    with every optional rule on, each rule reads only variables the policy defines."""
    docs = template(
        "--set", "policy.limits.maxReplicas=2",
        "--set", "policy.limits.maxCacheSize=50Gi",
        "--set", "policy.limits.allowedStorageClasses={fast-ssd}",
        "--set", "policy.limits.allowedRegistries={registry.internal}",
    )  # fmt: skip
    for policy in of_kind(docs, "ValidatingAdmissionPolicy"):
        spec = policy["spec"]
        defined = [v["name"] for v in spec["variables"]]
        texts = [v["expression"] for v in spec["variables"]] + [
            r.get("expression", "") + r.get("messageExpression", "") for r in spec["validations"]
        ]
        read = {name for text in texts for name in re.findall(r"variables\.(\w+)", text)}
        assert read <= set(defined), (policy["metadata"]["name"], read - set(defined))
