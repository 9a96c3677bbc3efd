"""A tenant gets nothing the platform did not grant: the chart's two admission policies,
enforced by the real API server.

The chart is installed by the real helm with its default values. A tenant is a user who may
only write Builders in their namespace (a Role, used through impersonation). Every way to a
pod reaching the node or carrying a foreign identity is refused at ``kubectl apply`` with
the field named: the userns profile and insecure entitlements (args and raw config) unless
the namespace opted in; tolerate-all, control-plane taints and node labels, priority
classes, ServiceAccounts and reserved pod labels unless the chart's values allow them.

The second policy judges what the operator's own user writes: a privileged, host-reaching
or foreign-ServiceAccount Deployment is refused in a namespace that did not opt in, while
the Deployments the operator renders (``buildkit-operator render``) for each profile are
admitted where the profile is allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from harness import OPERATOR_BIN, builder
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from policy_support import PRIVILEGED_LABEL, USERNS_LABEL, apply, eventually, wait_enforced

pytestmark = pytest.mark.integration

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


def tenant(kubectl: Any, namespace: str) -> str:
    """A user who may do anything with Builders in ``namespace``, and nothing else."""
    user = f"tenant@{namespace}"
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "builder-author", "namespace": namespace},
            "rules": [{"apiGroups": ["buildkit.dev"], "resources": ["builders"], "verbs": ["*"]}],
        }
    )
    kubectl(
        "create", "rolebinding", "builder-author", "-n", namespace,
        "--role=builder-author", f"--user={user}",
    )  # fmt: skip
    return user


# Each route to the node or to a foreign identity: the spec, and what the refusal must name.
OPT_IN_ROUTES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "userns": ({"securityProfile": "userns"}, ["spec.securityProfile", f"{USERNS_LABEL}=true"]),
    "arg-equals": (
        {"buildkitd": {"args": ["--allow-insecure-entitlement=security.insecure"]}},
        ["spec.buildkitd.args", f"{PRIVILEGED_LABEL}=true"],
    ),
    "arg-separate": (
        {"buildkitd": {"args": ["--debug", "-allow-insecure-entitlement", "network.host"]}},
        ["spec.buildkitd.args", "-allow-insecure-entitlement"],
    ),
    "config": (
        {"buildkitd": {"config": 'insecure-entitlements = ["security.insecure"]\n'}},
        ["spec.buildkitd.config", "insecure-entitlements", f"{PRIVILEGED_LABEL}=true"],
    ),
}
PLACEMENT_ROUTES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "tolerate-all": (
        {"tolerations": [{"operator": "Exists"}]},
        ["spec.tolerations", "policy.tolerations.allowTolerateAll"],
    ),
    "control-plane-taint": (
        {"tolerations": [{"key": CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule"}]},
        ["spec.tolerations", CONTROL_PLANE],
    ),
    "node-selector": (
        {"nodeSelector": {CONTROL_PLANE: ""}},
        ["spec.nodeSelector", CONTROL_PLANE],
    ),
    "pool-node-selector": (
        {
            "pools": [
                {"platform": "linux/amd64", "nodeSelector": {"node-role.kubernetes.io/master": ""}}
            ]
        },
        ["spec.pools[].nodeSelector", "linux/amd64"],
    ),
    "node-affinity": (
        {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {
                                "matchExpressions": [{"key": CONTROL_PLANE, "operator": "Exists"}]
                            },
                        }
                    ]
                }
            }
        },
        ["spec.affinity.nodeAffinity", CONTROL_PLANE],
    ),
    "priority-class": (
        {"priorityClassName": "system-node-critical"},
        ["spec.priorityClassName", "system-node-critical", "policy.priorityClassNames"],
    ),
    "service-account": (
        {"serviceAccountName": "deployer"},
        ["spec.serviceAccountName", "deployer", "policy.serviceAccountNames"],
    ),
    "pod-labels": (
        {"podLabels": {"app.kubernetes.io/name": "postgres"}},
        ["spec.podLabels", "app.kubernetes.io/name"],
    ),
    "pod-labels-operator": (
        {"podLabels": {"buildkit.dev/builder": "victim"}},
        ["spec.podLabels", "buildkit.dev/builder"],
    ),
}


def refused(kubectl: Any, ns: str, user: str, routes: dict[str, Any]) -> None:
    for name, (spec, words) in routes.items():
        accepted, message = apply(kubectl, builder(name, ns, **spec), as_user=user)
        assert not accepted, f"{name} was accepted in {ns}"
        assert all(w in message for w in words), f"{name}: {message}"


def accepted(kubectl: Any, ns: str, user: str, specs: dict[str, dict[str, Any]]) -> None:
    for name, spec in specs.items():
        ok, message = apply(kubectl, builder(name, ns, **spec), as_user=user)
        assert ok, f"{name} in {ns}: {message}"


def test_a_tenant_gets_no_route_the_namespace_did_not_opt_into(
    install: Callable[..., str], kubectl: Any, namespace: str, new_namespace: Any
) -> None:
    install()
    wait_enforced(kubectl, namespace)
    plain = new_namespace()
    refused(kubectl, plain, tenant(kubectl, plain), OPT_IN_ROUTES | PLACEMENT_ROUTES)

    # The userns label allows userns and nothing more.
    userns = new_namespace(f"{USERNS_LABEL}=true")
    user = tenant(kubectl, userns)
    accepted(kubectl, userns, user, {"userns": {"securityProfile": "userns"}})
    refused(kubectl, userns, user, {k: v for k, v in OPT_IN_ROUTES.items() if k != "userns"})
    # Privileged's opt-in covers userns and the entitlements; placement stays the chart's.
    privileged = new_namespace(f"{PRIVILEGED_LABEL}=true")
    user = tenant(kubectl, privileged)
    accepted(kubectl, privileged, user, {name: spec for name, (spec, _) in OPT_IN_ROUTES.items()})
    refused(kubectl, privileged, user, PLACEMENT_ROUTES)

    # What stays the tenant's: their own taints, labels and keep-away affinity.
    accepted(
        kubectl,
        plain,
        f"tenant@{plain}",
        {
            "own-placement": {
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "builds"}],
                "nodeSelector": {"example.com/pool": "builds"},
                "podLabels": {"team": "a", "example.com/cost-center": "42"},
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": CONTROL_PLANE, "operator": "DoesNotExist"}
                                    ]
                                }
                            ]
                        }
                    }
                },
                "buildkitd": {
                    "args": ["--debug"],
                    "config": '[registry."docker.io"]\nmirrors = ["mirror.internal"]\n',
                },
            }
        },
    )


def test_the_chart_values_grant_placement_and_identity(
    install: Callable[..., str], kubectl: Any, namespace: str, new_namespace: Any
) -> None:
    install(
        "--set", "policy.tolerations.allowTolerateAll=true",
        "--set", "policy.tolerations.forbiddenKeys=null",
        "--set", "policy.nodeSelection.forbiddenLabels=null",
        "--set", "policy.priorityClassNames={system-node-critical}",
        "--set", "policy.serviceAccountNames={deployer}",
        "--set", "policy.podLabels.forbiddenKeys={example.com/*}",
    )  # fmt: skip
    wait_enforced(kubectl, namespace)
    plain = new_namespace()
    user = tenant(kubectl, plain)
    accepted(kubectl, plain, user, {name: spec for name, (spec, _) in PLACEMENT_ROUTES.items()})
    refused(
        kubectl, plain, user,
        {
            "other-priority": ({"priorityClassName": "other"}, ["spec.priorityClassName"]),
            "other-account": ({"serviceAccountName": "other"}, ["spec.serviceAccountName"]),
            "reserved-label": ({"podLabels": {"example.com/role": "db"}}, ["example.com/role"]),
        },
    )  # fmt: skip


# --- fuzz: the entitlement in any spelling ------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("BKO_FUZZ_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("BKO_FUZZ_RANDOM") is None,
)
entitlement = st.sampled_from(["security.insecure", "network.host", "device"])
flag_arg = st.builds(
    lambda dashes, space, value, sep: (
        [f"{space}{dashes}allow-insecure-entitlement={value}"] if sep
        else [f"{space}{dashes}allow-insecure-entitlement", value]
    ),
    st.sampled_from(["-", "--"]), st.sampled_from(["", " "]), entitlement, st.booleans(),
)  # fmt: skip


config_key = st.builds(
    lambda first, sep, second, quote: f"{quote}{first}{sep}{second}{quote}",
    st.sampled_from(["insecure", "INSECURE", "Insecure"]),
    st.sampled_from(["-", "_", ""]),
    st.sampled_from(["entitlements", "Entitlements", "ENTITLEMENTS"]),
    st.sampled_from(["", '"', "'"]),
)
# A quoted key may spell any character with an escape.
escaped_key = st.sampled_from(
    [
        '"insecure\\u002dentitlements"',
        '"\\u0069nsecure-entitlements"',
        '"insecure-entitlement\\u0073"',
    ]
)


@pytest.mark.hypothesis  # `make fuzz` selects it: the fuzzer is inside (it needs the install)
def test_entitlements_are_refused_in_any_spelling(
    install: Callable[..., str], kubectl: Any, namespace: str
) -> None:
    """buildkitd's flag parser takes -flag and --flag, with =value or the value as the next
    item; its TOML decoder matches a key without case and by the field's own name, and a
    quoted key may spell it with escapes. Every spelling is refused."""
    install()
    wait_enforced(kubectl, namespace)

    @FUZZ
    @given(
        args=flag_arg,
        key=st.one_of(config_key, escaped_key),
        before=st.sampled_from(["", "debug = true\n", "# buildkitd\n"]),
    )
    @example(args=["--allow-insecure-entitlement=security.insecure"],
             key="insecure-entitlements", before="")  # fmt: skip
    @example(args=["-allow-insecure-entitlement", "network.host"], key="InsecureEntitlements",
             before="")  # fmt: skip
    def check(args: list[str], key: str, before: str) -> None:
        for name, buildkitd in {
            "by-args": {"args": ["--debug", *args]},
            "by-config": {"config": f'{before}{key} = ["security.insecure"]\n'},
        }.items():
            ok, message = apply(
                kubectl, builder(name, namespace, buildkitd=buildkitd), dry_run=True
            )
            assert not ok, f"{buildkitd} was accepted"
            assert f"spec.buildkitd.{next(iter(buildkitd))}" in message, message

    check()


# --- defence in depth: the Deployments the operator writes ---------------------------------


def rendered_deployments(namespace: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployments ``buildkit-operator render`` prints for a Builder of ``spec``."""
    result = subprocess.run(
        [str(OPERATOR_BIN), "render", "-f", "-", "-n", namespace],
        input=json.dumps(builder("b", namespace, **spec)),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert deployments, result.stdout
    return deployments


def deployment(namespace: str, name: str, **pod: Any) -> dict[str, Any]:
    """A one-container Deployment whose pod spec holds ``pod`` besides the container."""
    container = {"name": "buildkitd", "image": "moby/buildkit:v0.34.2"}
    container.update(pod.pop("container", {}))
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": pod.pop("replicas", 1),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], **pod},
            },
        },
    }


def test_the_operator_cannot_write_a_host_reaching_deployment(
    install: Callable[..., str], kubectl: Any, namespace: str, new_namespace: Any
) -> None:
    release = install()
    # The chart's own ServiceAccount, with the chart's own RBAC: the operator's user.
    operator = f"system:serviceaccount:{namespace}:{release}-buildkit-operator"
    plain = new_namespace()
    privileged = deployment(plain, "priv", container={"securityContext": {"privileged": True}})
    eventually(
        "the Deployment policy to be enforced",
        lambda: not apply(kubectl, privileged, dry_run=True, as_user=operator)[0],
    )

    bad = {
        "privileged": (privileged, ["privileged container", "buildkitd", PRIVILEGED_LABEL]),
        "escalation": (
            deployment(
                plain, "esc", container={"securityContext": {"allowPrivilegeEscalation": True}}
            ),
            ["allowPrivilegeEscalation"],
        ),
        "host-network": (deployment(plain, "hn", hostNetwork=True), ["hostNetwork"]),
        "host-pid": (deployment(plain, "hp", hostPID=True), ["hostPID"]),
        "host-path": (
            deployment(plain, "hpv", volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
            ["hostPath", "root"],
        ),
        "userns": (deployment(plain, "un", hostUsers=False), ["hostUsers: false", USERNS_LABEL]),
        "service-account": (
            deployment(plain, "sa", serviceAccountName="deployer"),
            ["ServiceAccount deployer", "policy.serviceAccountNames"],
        ),
    }
    for name, (obj, words) in bad.items():
        ok, message = apply(kubectl, obj, dry_run=True, as_user=operator)
        assert not ok, f"{name} was admitted"
        assert all(w in message for w in words), f"{name}: {message}"
    # Only the operator's writes are judged; and a Deployment scaled to zero runs nothing.
    assert apply(kubectl, privileged, dry_run=True)[0]
    stopped = deployment(
        plain, "stopped", replicas=0, container={"securityContext": {"privileged": True}}
    )
    assert apply(kubectl, stopped, dry_run=True, as_user=operator)[0]

    # What the operator renders is admitted wherever its profile is allowed.
    for obj in rendered_deployments(plain, {}):  # rootless: seccomp and AppArmor Unconfined
        ok, message = apply(kubectl, obj, dry_run=True, as_user=operator)
        assert ok, message
    for profile in ("privileged", "userns"):
        for obj in rendered_deployments(plain, {"securityProfile": profile}):
            assert not apply(kubectl, obj, dry_run=True, as_user=operator)[0], profile
    userns_ns = new_namespace(f"{USERNS_LABEL}=true")
    for obj in rendered_deployments(userns_ns, {"securityProfile": "userns"}):
        ok, message = apply(kubectl, obj, dry_run=True, as_user=operator)
        assert ok, message
    for obj in rendered_deployments(userns_ns, {"securityProfile": "privileged"}):
        ok, message = apply(kubectl, obj, dry_run=True, as_user=operator)
        assert not ok and "privileged container" in message, message
    privileged_ns = new_namespace(f"{PRIVILEGED_LABEL}=true")
    for profile in ("privileged", "userns", "rootless"):
        for obj in rendered_deployments(privileged_ns, {"securityProfile": profile, "replicas": 2}):
            ok, message = apply(kubectl, obj, dry_run=True, as_user=operator)
            assert ok, f"{profile}: {message}"
